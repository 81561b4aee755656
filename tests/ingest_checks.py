"""Checks shared by the crash-safety, concurrency and re-run tests: what a branch tip holds.

The invariant behind "exactly once": at every snapshot of a branch, the files in the ledger
(icepipe's commit metadata) tile the ``time`` axis without gap or overlap, and the data at each
file's positions equals that file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import icechunk
import xarray as xr

import icepipe
from icepipe import repository


def sources(
    files: Sequence[Path], *, group: str | None = None, decode_times: bool = True
) -> xr.Dataset:
    """What one uninterrupted run over ``files`` (given in time order) stores: their
    concatenation along ``time`` with ``xarray.open_mfdataset`` semantics."""
    with xr.open_mfdataset(
        list(files),
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        group=group,
        decode_times=decode_times,
    ) as ds:  # closed in this thread (see tests/test_file_handles.py)
        return ds.load()


def url(path: Path) -> str:
    return f"file://{path}"


def ancestry(repo: Path, snapshot: str) -> list[icechunk.SnapshotInfo]:
    """The snapshots from ``snapshot`` back to the repository's root, newest first."""
    return list(repository.open_repo(str(repo)).ancestry(snapshot_id=snapshot))


def check_tip(repo: Path, group: str, snapshot: str) -> list[dict[str, Any]]:
    """Assert the data at ``snapshot`` is what its ledger says; return the ledger records.

    Every file recorded has its data at its ``start``/``length`` positions, equal to the
    source file (which must be unchanged: same size and mtime); the records tile the ``time``
    axis exactly (no duplicate, no gap, nothing unrecorded).
    """
    records = repository.read_ingested(repository.open_repo(str(repo)), snapshot, group)
    urls = [r["url"] for r in records]
    assert len(urls) == len(set(urls)), f"a file is recorded twice at {snapshot}: {urls}"
    if not records:
        return records
    stored = icepipe.open_dataset(str(repo), snapshot_id=snapshot, group=group).load()
    spans = sorted((int(r["start"]), int(r["length"]), r) for r in records)
    position = 0
    for start, length, record in spans:
        assert start == position, f"gap or overlap before {record['url']} at {snapshot}: {spans}"
        position += length
        path = Path(record["url"].removeprefix("file://"))
        assert path.stat().st_size == record["size"], f"{path} changed since it was ingested"
        with xr.open_dataset(path) as src:
            xr.testing.assert_equal(stored.isel(time=slice(start, start + length)), src.load())
    assert stored.sizes["time"] == position, (
        f"{stored.sizes['time']} steps stored at {snapshot}, but the ledger accounts for {position}"
    )
    return records
