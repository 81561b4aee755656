"""Native runs close the source files they open on the coordinator, in its own thread.

A lazily opened netCDF file left open is closed by whichever thread drops the last reference
to its xarray file manager: the Dask client's event-loop thread, when it releases a task graph
it sent, closing a file in netCDF-C while the main thread is inside netCDF-C too (the C
libraries are not thread-safe: a segfault seen in this suite). It also leaks a file handle per
source file per run in a long-lived process (a scheduler service, a notebook).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from xarray.backends.file_manager import FILE_CACHE

import icepipe
from tests.conftest import write_pipeline, write_series
from tests.ingest_checks import sources


def _cached_under(folder: Path) -> list[str]:
    """Source files under ``folder`` that xarray's file cache holds open in this process."""
    held = []
    for key in list(FILE_CACHE.keys()):
        args = key[1] if len(key) > 1 else ()
        held += [str(a) for a in args if isinstance(a, str) and a.startswith(str(folder))]
    return held


def _open_fds_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process has open (Linux: /proc/self/fd)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd")
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def _assert_closed(folder: Path) -> None:
    assert _cached_under(folder) == []
    assert _open_fds_under(folder) == []


@pytest.mark.parametrize("fmt", ["netcdf4", "netcdf3"])
@pytest.mark.parametrize("concat_chunks", ["4", "file"])
def test_native_runs_close_their_source_files(
    tmp_path: Path, client: Any, fmt: str, concat_chunks: str
) -> None:
    src = tmp_path / "src"
    files = write_series(src, 4, fmt=fmt, steps=3, ny=4, nx=5)
    native = f"mode: native\nchunks: {{time: {concat_chunks}, lat: 2}}\n"
    for listed in (files[:2], files):  # a new group, then an append
        spec = write_pipeline(tmp_path, urls=[str(f) for f in listed], extra=native)
        result = icepipe.run(icepipe.load_pipeline(spec), client=client)
        assert result.status == "committed"
        _assert_closed(src)
    # A re-ingested file (rewritten in place, same length): its region is written again.
    write_series(src, 4, fmt=fmt, steps=3, ny=4, nx=5, seed=7)
    spec = write_pipeline(
        tmp_path, urls=[str(f) for f in files], extra=native + "on_changed: reingest\n"
    )
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    _assert_closed(src)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(sorted(files)))
