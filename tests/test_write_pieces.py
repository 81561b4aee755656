"""A virtual ingest of many files of one layout writes them in pieces (``ingest.
WRITE_PIECE_FILES``), each appended to the last, so that the client holds one piece's
references at a time: the repository holds exactly what one write of all files stores (values,
attributes, chunks and every reference), whatever the files' order of listing, for series
written in one run or several, and for series that take one piece (uneven files on a
rectilinear grid, times xarray cannot decode)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe import ingest, sources
from icepipe.model import SourceFile
from icepipe.spec import pipeline_from_dict
from tests.conformance import stored_chunks
from tests.conftest import write_series


async def _refs(store: Any, path: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    async for coords, kinds, paths, offsets, lengths, _ in store.array_chunk_iterator(path):
        for row in zip(coords.tolist(), kinds.tolist(), paths, offsets, lengths, strict=True):
            if row[1] == 2:  # virtual (native chunks are compared as values)
                out.append((tuple(row[0]), row[2], int(row[3]), int(row[4])))
    return sorted(out)


def _content(repo: Path, folder: Path) -> tuple[xr.Dataset, dict[str, Any], dict[str, Any]]:
    """The stored dataset (times as stored), every variable's references and chunk grids."""
    r = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(repo)),
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {f"file://{folder}/": icechunk.credentials.LocalFileSystemAccess}
        ),
    )
    store = r.readonly_session(branch="main").store
    ds = xr.open_zarr(store, group="g", consolidated=False, decode_times=False, chunks=None)
    refs = {str(n): asyncio.run(_refs(store, f"g/{n}")) for n in ds.variables}
    return ds.load(), refs, stored_chunks(repo, ["g"])


def _ingest(tmp_path: Path, name: str, urls: list[list[str]], piece: int,
            monkeypatch: pytest.MonkeyPatch) -> Path:  # fmt: skip
    monkeypatch.setattr(ingest, "WRITE_PIECE_FILES", piece)
    repo = tmp_path / name
    for run in urls:  # one run per list: the first creates, the next ones append
        pipeline = pipeline_from_dict(
            {
                "name": "pieces",
                "source": {"urls": run, "concat_dim": "time"},
                "target": {"repo": str(repo), "group": "g"},
            },
            base_dir=tmp_path,
        )
        assert icepipe.run(pipeline, report=False).status == "committed"
    return repo


def _same_both_ways(tmp_path: Path, folder: Path, urls: list[list[str]],
                    monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # fmt: skip
    """Ingest ``urls`` in pieces of 2 files and in one piece; both store the same."""
    pieces = _content(_ingest(tmp_path, "pieces", urls, 2, monkeypatch), folder)
    whole = _content(_ingest(tmp_path, "whole", urls, 10**6, monkeypatch), folder)
    xr.testing.assert_identical(pieces[0], whole[0])
    assert pieces[1] == whole[1]
    assert pieces[2] == whole[2]
    return pieces[1]


@pytest.mark.parametrize("runs", [[7], [3, 7]])
def test_pieces_store_what_one_write_stores(
    tmp_path: Path, runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 files listed in reverse order (ordered by their times), in 1 or 2 runs."""
    folder = tmp_path / "src"
    paths = write_series(folder, 7, steps=2, ny=2, nx=3)
    urls = [[str(p) for p in reversed(paths[:n])] for n in runs]
    refs = _same_both_ways(tmp_path, folder, urls, monkeypatch)
    assert [r[1] for r in refs["tas"]] == [f"file://{p}" for p in paths for _ in range(2)]
    # The files were written in pieces: they scan packed on one layout.
    scanned = sources.scan_files(
        [SourceFile(f"file://{p}", p.stat().st_size, "m") for p in paths],
        sources.ScanOptions(concat_dim="time"),
    )
    files = [s for s in scanned if isinstance(s, sources.ScannedFile)]
    assert [len(p) for p in sources.virtual_pieces(files, "time", 2)] == [2, 2, 2, 1]
    stored = xr.open_mfdataset(
        paths, combine="nested", concat_dim="time", decode_times=False, data_vars="minimal"
    )
    repo = _content(tmp_path / "pieces", folder)[0]
    np.testing.assert_array_equal(repo["time"].values, stored["time"].values)
    np.testing.assert_array_equal(repo["tas"].values, stored["tas"].values)


def test_uneven_files_take_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 3, 2 and 4 steps, contiguous: a rectilinear grid, written file by file."""
    folder = tmp_path / "src"
    paths = write_series(folder, 3, steps=[3, 2, 4], ny=2, nx=3, time_chunk=None)
    refs = _same_both_ways(tmp_path, folder, [[str(p) for p in paths]], monkeypatch)
    assert len(refs["tas"]) == 3


def test_undecodable_times_take_pieces_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'hour since 0000-01-01' (xarray cannot decode year 0): later pieces append the times
    undecoded, as later runs do."""
    folder = tmp_path / "src"
    folder.mkdir()
    attrs = {"units": "hour since 0000-01-01 00:00:00", "axis": "T"}
    for i in range(5):
        ds = xr.Dataset(
            {"v": (("time", "x"), np.arange(4, dtype="f4").reshape(2, 2) + i)},
            coords={"time": ("time", np.array([10.0 * i, 10.0 * i + 5]), attrs)},
        )
        ds.to_netcdf(folder / f"p{i}.nc", format="NETCDF3_CLASSIC")
    paths = sorted(folder.glob("*.nc"))
    _same_both_ways(tmp_path, folder, [[str(p) for p in paths]], monkeypatch)
    stored = _content(tmp_path / "pieces", folder)[0]
    np.testing.assert_array_equal(stored["time"].values, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45])
