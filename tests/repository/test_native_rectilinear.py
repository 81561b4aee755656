"""icepipe.repository.native_rectilinear on its own: create, append into a stored partial chunk,
rewrite a region, with the concat dimension not first and CF-encoded values (packing, fill
values, times) round-tripping exactly."""

from __future__ import annotations

from pathlib import Path

import dask
import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
import zarr.storage

from icepipe.repository import native_encoding
from icepipe.repository.grids import read_chunk_grid, rectilinear_enabled
from icepipe.repository.native_rectilinear import (
    create_rectilinear,
    stored_edges,
    write_native_rectilinear,
)


def _data(start: int, n: int) -> xr.Dataset:
    times = pd.date_range("2000-01-01", periods=start + n, freq="D")[start:]
    rng = np.random.default_rng(start)
    values = rng.random((3, n)).astype("f4")
    values[0, ::4] = np.nan  # masked: stored as the _FillValue
    ds = xr.Dataset(
        {"v": (("y", "time"), values), "count": (("time",), np.arange(start, start + n))},
        coords={"time": times, "y": [10, 20, 30]},
    )
    ds.v.encoding = {"dtype": "int16", "scale_factor": 0.01, "_FillValue": -999}
    ds.time.encoding = {"units": "days since 2000-01-01", "dtype": "int64"}
    return ds.chunk({"time": 5})


def _read(repo: icechunk.Repository) -> xr.Dataset:
    with rectilinear_enabled():
        return xr.open_zarr(
            repo.readonly_session("main").store, group="g", consolidated=False
        ).load()


def test_create_append_and_region(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    s = repo.writable_session("main")
    first = _data(0, 40)  # January and 9 days of February
    enc = native_encoding(first, {"time": 40, "y": 2}, shard_len=None, compression="zstd")
    with dask.config.set(scheduler="threads"):
        create_rectilinear(s, first, group="g", dim="time", edges=(31, 9), encoding=enc)
        assert stored_edges(s, "g", "time") == ((31, 9), True)
        # The rest of February and two days of March: February's chunk is rewritten whole.
        write_native_rectilinear(
            s, _data(40, 22), group="g", dim="time", start=40, edges=(31, 29, 2)
        )
        # A region inside January and February (both chunks rewritten, neighbours kept).
        region = _data(25, 10)
        region["v"] = region.v * 0 + 0.5
        write_native_rectilinear(s, region, group="g", dim="time", start=25, edges=(31, 29, 2))
    s.commit("three writes")
    assert read_chunk_grid(repo.readonly_session("main").store, "g/v") == (2, (31, 29, 2))
    got = _read(repo)
    # The oracle: the same three writes by xarray into a regular Zarr store.
    store = zarr.storage.MemoryStore()
    first.load().to_zarr(store, group="g", encoding=enc, consolidated=False, zarr_format=3)
    _data(40, 22).load().to_zarr(store, group="g", append_dim="time", consolidated=False)
    region.drop_vars("y").load().to_zarr(
        store, group="g", region={"time": slice(25, 35)}, consolidated=False
    )
    expected = xr.open_zarr(store, group="g", consolidated=False).load()
    xr.testing.assert_identical(got, expected)
    assert float(got.v[1, 30]) == 0.5 and bool(np.isnan(got.v[0, 0]))
    with rectilinear_enabled():
        stored = xr.open_zarr(
            repo.readonly_session("main").store, group="g", consolidated=False, decode_cf=False
        )
        assert stored.v.dtype == np.int16 and stored.time.dtype == np.int64
        assert int(stored.v.values[0, 0]) == -999


def test_edges_that_do_not_cover_the_write_are_refused(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    s = repo.writable_session("main")
    first = _data(0, 10)
    enc = native_encoding(first, {"time": 10, "y": 3}, shard_len=None, compression="none")
    with dask.config.set(scheduler="threads"):
        create_rectilinear(s, first, group="g", dim="time", edges=(10,), encoding=enc)
        with pytest.raises(Exception, match="cover"):
            write_native_rectilinear(
                s, _data(10, 5), group="g", dim="time", start=10, edges=(10, 3)
            )
