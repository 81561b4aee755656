"""Rectilinear chunk grids written through icepipe.repository.grids into a real Icechunk repo."""

from __future__ import annotations

from pathlib import Path

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

from icepipe.repository.grids import (
    chunk_edges,
    extend_edges,
    read_chunk_grid,
    rectilinear_enabled,
    set_chunk_grid,
)


def test_chunk_edges() -> None:
    assert chunk_edges(365, 73) == (73,) * 5
    assert chunk_edges(366, 100) == (100, 100, 100, 66)
    assert chunk_edges(0, 10) == ()
    assert extend_edges((365,), (366, 365)) == (365, 366, 365)


def test_grid_extends_keeping_chunks(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    s = repo.writable_session("main")
    root = zarr.group(s.store)
    a = root.create_array(
        "v",
        shape=(365, 2),
        chunks=(365, 2),
        dtype="f4",
        fill_value=np.nan,
        dimension_names=("time", "x"),
    )
    a[:] = 1.0
    assert read_chunk_grid(s.store, "v") == (365, 2)
    set_chunk_grid(s.store, "v", shape=(731, 2), grid=((365, 366), 2))
    assert read_chunk_grid(s.store, "v") == ((365, 366), 2)
    with rectilinear_enabled():
        b = zarr.open_array(s.store, path="v")
        b[365:] = 2.0
    s.commit("two years")
    with rectilinear_enabled():
        ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
        assert ds.v.chunks == ((365, 366), (2,))
        v = ds.v.values
    assert (v[:365] == 1).all() and (v[365:] == 2).all()
    with pytest.raises(ValueError, match="do not cover"):
        set_chunk_grid(s.store, "v", shape=(800, 2), grid=((365, 366), 2))
    assert read_chunk_grid(s.store, "missing") is None


def test_regular_dimensions_keep_their_padded_last_chunk(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    s = repo.writable_session("main")
    a = zarr.group(s.store).create_array("v", shape=(10, 5), chunks=(10, 2), dtype="i4")
    a[:] = np.arange(50).reshape(10, 5)
    set_chunk_grid(s.store, "v", shape=(13, 5), grid=((10, 3), 2))
    assert read_chunk_grid(s.store, "v") == ((10, 3), 2)
    with rectilinear_enabled():
        b = zarr.open_array(s.store, path="v")
        b[10:] = -1
        got = b[:]
    np.testing.assert_array_equal(got[:10], np.arange(50).reshape(10, 5))
    assert (got[10:] == -1).all()
