"""Native (data-rewriting) pipelines: layout, appends, killed workers, killed processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

import icepipe
from tests.conftest import REPO_ROOT, KillOnFirstTask, branch_tip, write_pipeline, write_series
from tests.ingest_checks import sources

NATIVE = "mode: native\nchunks: {time: 4, lat: 3}\n"


def _array(repo: Path, group: str, name: str) -> zarr.Array[Any]:
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    g = zarr.open_group(r.readonly_session(branch="main").store, path=group, mode="r")
    arr = g[name]
    assert isinstance(arr, zarr.Array)
    return arr


@pytest.mark.parametrize("fmt", ["netcdf4", "netcdf3"])
def test_native_ingest_rechunks_and_reads_back_equal(tmp_path: Path, client: Any, fmt: str) -> None:
    files = write_series(tmp_path / "src", 3, fmt=fmt, steps=5, ny=7, nx=6)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=NATIVE + "compression: zstd\n")
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(sorted(files)))
    arr = _array(tmp_path / "repo", "g", "tas")
    assert arr.chunks == (4, 3, 6)  # lon not given: whole dimension
    assert type(arr.compressors[0]).__name__ == "ZstdCodec"
    # No virtual references: the repository no longer needs the source files.
    for f in files:
        f.unlink()
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), stored
    )


def test_native_with_shards(tmp_path: Path, client: Any) -> None:
    files = write_series(tmp_path / "src", 4, steps=3)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=NATIVE + "shards: {time: 8}\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    arr = _array(tmp_path / "repo", "g", "tas")
    assert arr.shards == (8, 3, 6) and arr.chunks == (4, 3, 6)
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), sources(sorted(files))
    )


def test_native_rerun_appends_into_partial_chunk(tmp_path: Path, client: Any) -> None:
    # 3-step files into 4-step chunks: every append starts inside a partial chunk.
    files = write_series(tmp_path / "src", 5, steps=3, fmt="netcdf3")
    for f in files[2:]:
        f.rename(f.with_suffix(".later"))
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=NATIVE + "shards: {time: 8}\n")
    pipeline = icepipe.load_pipeline(spec)
    assert icepipe.run(pipeline, client=client).dims["time"] == 6
    assert icepipe.run(pipeline, client=client).status == "nothing-new"
    for f in files[2:]:
        f.with_suffix(".later").rename(f)
    result = icepipe.run(pipeline, client=client)
    assert result.files_new == tuple(f"file://{f}" for f in files[2:])
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), sources(sorted(files))
    )


def test_worker_killed_mid_write_gives_identical_data(tmp_path: Path) -> None:
    from icepipe.execute import open_client

    files = write_series(tmp_path / "src", 6, steps=4, ny=20, nx=30)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=NATIVE)
    marker = tmp_path / "killed"
    with open_client(workers=2) as (c, _):
        c.register_plugin(KillOnFirstTask(str(marker), "ice-changeset-"))
        result = icepipe.run(icepipe.load_pipeline(spec), client=c)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert result.status == "committed"
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), sources(sorted(files))
    )


def test_process_killed_at_random_points_leaves_previous_or_new_commit(tmp_path: Path) -> None:
    files = write_series(tmp_path / "src", 4, steps=4, ny=30, nx=40)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=NATIVE)
    cmd = [sys.executable, "-m", "icepipe.cli", "run", str(spec), "--workers", "1"]
    rng = random.Random(7)
    outcomes = []
    for _trial in range(4):
        before = branch_tip(tmp_path / "repo")
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(0.5, 5.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        after = branch_tip(tmp_path / "repo")
        outcomes.append(after != before)
        if after is not None and after != before:
            # It committed before the kill: then the data must be complete.
            break
    final = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert final.returncode == 0, final.stderr
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), sources(sorted(files))
    )
    from icepipe.repository import open_repo, read_log

    log = read_log(open_repo(str(tmp_path / "repo")), "main")
    assert sum(e.n_files or 0 for e in log) == len(files)  # each file exactly once


def _with_station_names(files: list[Path]) -> None:
    """Add a char array (station names: dims lat, name_len) to each netCDF3 file, as station
    and CF files carry them."""
    import netCDF4

    for path in files:
        with netCDF4.Dataset(path, "a") as nc:
            nc.createDimension("name_len", 7)
            var = nc.createVariable("station", "S1", ("lat", "name_len"))
            var[:] = netCDF4.stringtochar(
                np.array([f"st{i:05d}" for i in range(len(nc.dimensions["lat"]))], dtype="S7")
            )


def test_native_ingest_of_char_arrays(tmp_path: Path, client: Any) -> None:
    """A char array's string-length dimension is decoded away by xarray: the write must not
    ask to chunk it (was: ValueError "chunks keys ('name_len',) not found")."""
    files = write_series(tmp_path / "src", 2, fmt="netcdf3", steps=3)
    _with_station_names(files)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, sources(files))
    assert stored["station"].values[1] == b"st00001"


def test_native_append_of_char_arrays(tmp_path: Path, client: Any) -> None:
    """The stored array is the decoded one (``|S7``); the next file's char array (``|S1`` with
    its string-length dimension) appends to it (was refused: dims/dtype differ)."""
    files = write_series(tmp_path / "src", 2, fmt="netcdf3", steps=3)
    _with_station_names(files)
    later = files[1].rename(tmp_path / files[1].name)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    later.rename(files[1])
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, sources(files))


def test_native_append_of_longer_strings_is_refused(tmp_path: Path, client: Any) -> None:
    """Stored ``|S7`` cannot take 8-character names: refused naming the file, not truncated."""
    import netCDF4

    files = write_series(tmp_path / "src", 2, fmt="netcdf3", steps=3)
    _with_station_names(files[:1])
    with netCDF4.Dataset(files[1], "a") as nc:
        nc.createDimension("name_len", 8)
        var = nc.createVariable("station", "S1", ("lat", "name_len"))
        var[:] = netCDF4.stringtochar(np.array([f"st{i:06d}" for i in range(5)], dtype="S8"))
    later = files[1].rename(tmp_path / files[1].name)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    later.rename(files[1])
    with pytest.raises(icepipe.SchemaMismatchError, match=files[1].name):
        icepipe.run(icepipe.load_pipeline(spec), client=client)


def test_native_char_arrays_keep_the_file_string_length(tmp_path: Path, client: Any) -> None:
    """Station names with an empty ``missing_value`` (as ncdfgeom's files have them) decode to
    Python strings: stored as ``|S<string length>``, not the longest name's width, so the
    next file appends (was refused: ``|S3`` stored against the file's 7)."""
    import netCDF4

    files = write_series(tmp_path / "src", 2, fmt="netcdf3", steps=3)
    for path in files:
        with netCDF4.Dataset(path, "a") as nc:
            nc.createDimension("name_len", 7)
            var = nc.createVariable("station", "S1", ("lat", "name_len"))
            var.missing_value = ""
            var[:] = netCDF4.stringtochar(np.array([f"s{i:02d}" for i in range(5)], dtype="S7"))
    later = files[1].rename(tmp_path / files[1].name)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert _array(tmp_path / "repo", "g", "station").dtype == np.dtype("S7")
    later.rename(files[1])
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, sources(files))


@pytest.mark.parametrize("chunks", ["", "chunks: {time: month}\n"])
def test_corrupt_compressed_chunk_names_the_file_not_retry(
    tmp_path: Path, chunks: str, capsys: Any
) -> None:
    """The scan reads metadata only, so a damaged zlib chunk surfaced in the copy: it exited 5
    ("transient, retry") without naming the file. Now exit 3, the file and the variable."""
    import h5py
    import pandas as pd

    from icepipe.cli import main

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        t = pd.date_range(f"200{i}-01-01", periods=10)
        ds = xr.Dataset({"tas": (("time", "y"), rng.random((10, 50), dtype="f4"))}, {"time": t})
        enc = {"tas": {"zlib": True, "chunksizes": (5, 50)}}
        ds.to_netcdf(src / f"f{i}.nc", encoding=enc, engine="h5netcdf")
    with h5py.File(src / "f1.nc", "r") as f:
        info = f["tas"].id.get_chunk_info(1)
    raw = bytearray((src / "f1.nc").read_bytes())
    raw[info.byte_offset + 2 : info.byte_offset + info.size - 2] = b"\x55" * (info.size - 4)
    (src / "f1.nc").write_bytes(bytes(raw))
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n" + chunks)
    assert main(["run", str(spec), "--progress", "none"]) == 3
    err = capsys.readouterr().err
    assert "f1.nc: variable 'tas' cannot be read" in err and "retry" not in err
    assert branch_tip(tmp_path / "repo") is None
