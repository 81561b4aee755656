"""How a virtual ingest stores the loaded variables along the concat dimension (the time
coordinate, its bounds): in chunks of ``ingest.LOADED_CHUNK_BYTES``, not one chunk per file,
whatever the split of the series into runs; arrays stored otherwise keep their chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import xarray as xr
import zarr

import icepipe
from icepipe import ingest, repository
from tests.conftest import write_pipeline, write_series
from tests.ingest_checks import sources


def _copies(folder: Path, n: int) -> list[Path]:
    """``n`` files of 2 daily steps: one written by netCDF-C, the others its bytes with the
    (contiguous) time values patched, as ``benchmarks/memory.py`` makes them (cheap)."""
    import h5py
    import numpy as np

    (first,) = write_series(folder, 1, steps=2, ny=2, nx=3)
    with h5py.File(first, "r") as f:
        offset = f["time"].id.get_offset()
        start = int(f["time"][0])
    assert offset is not None
    data = bytearray(first.read_bytes())
    paths = [first]
    for i in range(1, n):
        data[offset : offset + 16] = np.arange(
            start + 2 * i, start + 2 * i + 2, dtype="<i8"
        ).tobytes()
        path = folder / f"f{i:03d}.nc"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _time_chunks(repo: Path) -> tuple[tuple[int, ...], int]:
    """The stored ``g/time`` array's chunk shape and how many chunks it has in the store."""
    store = repository.open_repo(str(repo)).readonly_session("main").store
    arr = zarr.open_group(store, path="g", mode="r")["time"]
    assert isinstance(arr, zarr.Array)
    return tuple(arr.chunks), arr.nchunks_initialized


def test_200_files_store_their_time_in_few_chunks_and_appends_read_back(
    tmp_path: Path, client: Any
) -> None:
    """200 files of 2 steps: the time coordinate is one chunk (of 8,192 int64), not 200, and
    a run over 150 files then one over the other 50 reads back as ``open_mfdataset``."""
    files = _copies(tmp_path / "src", 200)
    (tmp_path / "first").mkdir()
    for f in files[:150]:
        (tmp_path / "first" / f.name).symlink_to(f)
    first = icepipe.run(
        icepipe.load_pipeline(write_pipeline(tmp_path, name="first", urls="first/*.nc")),
        client=client,
    )
    assert first.status == "committed" and len(first.files_new) == 150
    assert _time_chunks(tmp_path / "repo") == ((8192,), 1)
    second = icepipe.run(
        icepipe.load_pipeline(
            write_pipeline(tmp_path, name="all", urls=[str(f) for f in files[150:]])
        ),
        client=client,
    )
    assert second.status == "committed" and len(second.files_new) == 50
    assert _time_chunks(tmp_path / "repo") == ((8192,), 1)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(files))


def test_appends_keep_the_stored_chunks(
    tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group whose time coordinate was stored in chunks of 2 (as icepipe stored it before:
    one chunk per file) keeps them when files are appended."""
    files = write_series(tmp_path / "src", 6, steps=2, ny=2, nx=3)
    spec = write_pipeline(tmp_path, urls=[str(f) for f in files[:3]])
    with monkeypatch.context() as m:
        m.setattr(ingest, "LOADED_CHUNK_BYTES", 16)  # 2 int64 steps
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert _time_chunks(tmp_path / "repo") == ((2,), 3)
    spec = write_pipeline(tmp_path, urls=[str(f) for f in files])
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.status == "committed" and len(result.files_new) == 3
    assert _time_chunks(tmp_path / "repo") == ((2,), 6)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(files))


def test_loaded_chunks_depend_on_the_variable_only() -> None:
    """The chunk length along the concat dimension follows the dtype and the other dimensions:
    the same for any number of files (steps) in a run."""
    import numpy as np

    def chunks(steps: int) -> dict[str, Any]:
        ds = xr.Dataset(
            {"time_bnds": (("time", "nv"), np.zeros((steps, 2), "f8"))},
            coords={"time": ("time", np.arange(steps, dtype="i4"))},
        )
        ds["time"].encoding = {"chunks": (steps,), "preferred_chunks": {"time": steps}}
        out = ingest.loaded_chunks(ds, "time")
        assert ds["time"].encoding["chunks"] == (steps,)  # the input is left alone
        return {n: v.encoding.get("chunks") for n, v in out.variables.items()}

    expected = {"time": (16384,), "time_bnds": (4096, 2)}
    assert chunks(1) == chunks(7) == chunks(20000) == expected


def test_native_ingest_stores_its_time_index_in_few_chunks(tmp_path: Path, client: Any) -> None:
    """Native mode: the data keep one chunk per file (the default), the time index does not;
    an append keeps the stored chunks and reads back as ``open_mfdataset``."""
    files = write_series(tmp_path / "src", 5, steps=2, ny=2, nx=3)
    for urls in (files[:3], files):
        spec = write_pipeline(tmp_path, urls=[str(f) for f in urls], extra="mode: native\n")
        assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
        assert _time_chunks(tmp_path / "repo") == ((8192,), 1)
    store = repository.open_repo(str(tmp_path / "repo")).readonly_session("main").store
    assert zarr.open_group(store, path="g", mode="r")["tas"].chunks == (2, 2, 3)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(files))
