"""Zarr v2 and v3 (sharded) stores as sources, virtual and native."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import icepipe
from icepipe.errors import SourceError
from tests.conftest import branch_tip, write_pipeline


def _write_stores(folder: Path, n: int, *, zarr_format: int, shards: bool) -> xr.Dataset:
    parts = []
    times = pd.date_range("2020-01-01", periods=4 * n, freq="D")
    rng = np.random.default_rng(1)
    for i in range(n):
        ds = xr.Dataset(
            {"tas": (("time", "lat"), rng.random((4, 5)).astype("f4"), {"units": "K"})},
            coords={"time": times[4 * i : 4 * i + 4], "lat": np.arange(5.0)},
            attrs={"title": f"store {i}"},
        )
        enc: dict[str, Any] = {"tas": {"chunks": (2, 5)}}
        if shards:
            enc["tas"]["shards"] = (4, 5)
        enc["time"] = {"units": "days since 2000-01-01", "dtype": "i8"}
        ds.to_zarr(folder / f"s{i:02d}.zarr", zarr_format=zarr_format, encoding=enc)
        parts.append(ds)
    return xr.concat(
        parts,
        dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )


@pytest.mark.parametrize("mode", ["virtual", "native"])
@pytest.mark.parametrize(
    ("zarr_format", "shards"), [(2, False), (3, False), (3, True)], ids=["v2", "v3", "v3-sharded"]
)
def test_zarr_stores_ingest_and_read_back_equal(
    tmp_path: Path, client: Any, mode: str, zarr_format: int, shards: bool
) -> None:
    ref = _write_stores(tmp_path / "src", 3, zarr_format=zarr_format, shards=shards)
    spec = write_pipeline(tmp_path, urls="src/*.zarr", extra=f"mode: {mode}\n")
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.status == "committed" and len(result.files_new) == 3
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, ref.load())


def test_zarr_store_rerun_append_and_change_detection(tmp_path: Path, client: Any) -> None:
    _write_stores(tmp_path / "src", 2, zarr_format=3, shards=False)
    spec = write_pipeline(tmp_path, urls="src/*.zarr")
    pipeline = icepipe.load_pipeline(spec)
    icepipe.run(pipeline, client=client)
    assert icepipe.run(pipeline, client=client).status == "nothing-new"
    # A chunk rewritten inside an ingested store changes its identity: refused by name.
    tip = branch_tip(tmp_path / "repo")
    store = tmp_path / "src" / "s00.zarr"
    ds = xr.open_zarr(store).load()
    ds["tas"][:] = 0
    ds.to_zarr(store, mode="r+")
    with pytest.raises(SourceError, match=r"s00\.zarr"):
        icepipe.run(pipeline, client=client)
    assert branch_tip(tmp_path / "repo") == tip


def test_explicit_folder_that_is_not_a_store(tmp_path: Path, client: Any) -> None:
    (tmp_path / "plain").mkdir()
    spec = write_pipeline(tmp_path, urls=["plain"])
    with pytest.raises(SourceError, match="is a folder, not a file or a Zarr store"):
        icepipe.run(icepipe.load_pipeline(spec), client=client)


def test_real_zarr_v2_fixture_without_dimension_names_is_refused_clearly(
    tmp_path: Path, client: Any, sample_data: Path
) -> None:
    # zarr 2.18's own test fixture: bare arrays, no _ARRAY_DIMENSIONS.
    fixture = sample_data / "zarr2-fixture" / "3"
    spec = write_pipeline(tmp_path, urls=[str(fixture)], concat_dim="dim_0", fmt="zarr")
    with pytest.raises(SourceError, match="without dimension names") as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert str(fixture) in str(info.value)
    assert branch_tip(tmp_path / "repo") is None
