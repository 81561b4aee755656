"""repository.write_rectilinear on real netCDF4 files and a real Icechunk repository: arrays
stored as VirtualiZarr stores them, on a grid that follows the files' chunks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from icepipe.errors import SchemaMismatchError
from icepipe.repository import write_rectilinear, write_virtual
from icepipe.repository.grids import read_chunk_grid, rectilinear_enabled


def _file(path: Path, start: str, days: int, *, zlib: bool = False) -> Path:
    times = pd.date_range(start, periods=days, freq="D")
    rng = np.random.default_rng(days)
    ds = xr.Dataset(
        {
            "v": (
                ("time", "x"),
                rng.random((days, 2), dtype="f4"),
                {"units": "K", "long_name": "value"},
            )
        },
        coords={"time": times, "x": [1.0, 2.0]},
    )
    enc: dict[str, Any] = {"v": {"chunksizes": (days, 2), "zlib": zlib, "_FillValue": -1.0}}
    enc["time"] = {"units": "days since 2000-01-01"}
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
    return path


def _virtual(path: Path) -> xr.Dataset:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_virtual_dataset(
            f"file://{path}",
            registry=registry,
            parser=HDFParser(),
            loadable_variables=["time", "x"],
        )


def _repo(path: Path, files: Path) -> icechunk.Repository:
    prefix = f"file://{files}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(files)))
    )
    return icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(path)),
        config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {prefix: icechunk.credentials.LocalFileSystemAccess}
        ),
    )


def _meta(session: icechunk.Session, key: str) -> dict[str, Any]:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(session.store.get(key, prototype=default_buffer_prototype()))
    assert buf is not None
    meta: dict[str, Any] = json.loads(buf.to_bytes())
    return meta


def test_array_is_stored_as_virtualizarr_stores_it(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    a = _file(tmp_path / "f" / "a.nc", "2003-01-01", 365)
    b = _file(tmp_path / "f" / "b.nc", "2004-01-01", 365)
    c = _file(tmp_path / "f" / "c.nc", "2005-01-01", 366)
    va, vb, vc = _virtual(a), _virtual(b), _virtual(c)
    # VirtualiZarr's own path, for files of one length.
    regular = _repo(tmp_path / "regular", tmp_path / "f").writable_session("main")
    write_virtual(regular, xr.concat([va, vb], dim="time"), group="g")
    # icepipe's, file by file: the regular variables first, then the grid.
    repo = _repo(tmp_path / "rect", tmp_path / "f")
    rect = repo.writable_session("main")
    write_virtual(rect, xr.concat([va, vb], dim="time").drop_vars("v"), group="g")
    write_rectilinear(rect, [(str(a), va), (str(b), vb)], ["v"], group="g", dim="time")
    want, got = _meta(regular, "g/v/zarr.json"), _meta(rect, "g/v/zarr.json")
    assert got.pop("chunk_grid") == {
        "name": "rectilinear",
        "configuration": {"kind": "inline", "chunk_shapes": [[365, 365], [2]]},
    }
    want.pop("chunk_grid")
    assert got == want  # codecs, dtype, fill value, dims, attributes and encoding
    # An append extends the grid; the data reads back equal to the files.
    write_virtual(rect, vc.drop_vars("v"), group="g", append_dim="time")
    write_rectilinear(rect, [(str(c), vc)], ["v"], group="g", dim="time")
    assert read_chunk_grid(rect.store, "g/v") == ((365, 365, 366), 2)
    rect.commit("three years")
    with rectilinear_enabled():
        stored = xr.open_zarr(repo.readonly_session("main").store, group="g", consolidated=False)
        expected = xr.open_mfdataset([a, b, c], combine="nested", concat_dim="time")
        xr.testing.assert_identical(stored.load(), expected.load())


def test_files_that_cannot_join_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    a = _file(tmp_path / "f" / "a.nc", "2003-01-01", 365)
    b = _file(tmp_path / "f" / "b.nc", "2004-01-01", 366, zlib=True)
    va, vb = _virtual(a), _virtual(b)
    s = _repo(tmp_path / "r", tmp_path / "f").writable_session("main")
    write_virtual(s, va.drop_vars("v"), group="g")
    write_rectilinear(s, [(str(a), va)], ["v"], group="g", dim="time")
    with pytest.raises(SchemaMismatchError, match="different codecs") as info:
        write_rectilinear(s, [(str(b), vb)], ["v"], group="g", dim="time")
    assert info.value.urls == (str(b),) and "'v'" in str(info.value)
    # A region must start on a stored chunk and have the stored chunks' lengths.
    c = _file(tmp_path / "f" / "c.nc", "2004-01-01", 366)
    with pytest.raises(SchemaMismatchError, match="position 0"):
        write_rectilinear(s, [(str(c), _virtual(c))], ["v"], group="g", dim="time", start=0)
    with rectilinear_enabled():
        assert zarr.open_array(s.store, path="g/v").shape == (365, 2)


def test_a_coordinate_on_a_rectilinear_grid_stays_a_coordinate(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    a = _file(tmp_path / "f" / "a.nc", "2003-01-01", 365)
    b = _file(tmp_path / "f" / "b.nc", "2004-01-01", 366)
    va, vb = _virtual(a).set_coords("v"), _virtual(b).set_coords("v")
    repo = _repo(tmp_path / "r", tmp_path / "f")
    s = repo.writable_session("main")
    write_virtual(s, xr.concat([va.drop_vars("v"), vb.drop_vars("v")], dim="time"), group="g")
    write_rectilinear(s, [(str(a), va), (str(b), vb)], ["v"], group="g", dim="time", coords=["v"])
    s.commit("coordinate")
    with rectilinear_enabled():
        stored = xr.open_zarr(repo.readonly_session("main").store, group="g", consolidated=False)
        assert "v" in stored.coords and stored.v.chunks == ((365, 366), (2,))
        expected = xr.open_mfdataset([a, b], combine="nested", concat_dim="time")
        np.testing.assert_array_equal(stored.v.values, expected.v.values)
