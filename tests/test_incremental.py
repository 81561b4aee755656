"""Exactly-once incremental ingest: skipped files, changed files, late arrivals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import icepipe
from icepipe import repository
from icepipe.errors import SchemaMismatchError, SourceError
from tests.conftest import write_pipeline, write_series
from tests.ingest_checks import sources


def _meta(repo: Path, snapshot: str | None) -> dict[str, Any]:
    assert snapshot is not None
    r = repository.open_repo(str(repo))
    stored = r.lookup_snapshot(snapshot).metadata["icepipe"]
    # The file list as JSON objects (the commit stores them packed: ledger format 2).
    return repository.CommitRecord.from_metadata(stored).to_metadata(ledger_version=1)


def test_on_error_skip_leaves_out_unreadable_files_and_retries_them(
    tmp_path: Path, client: Any
) -> None:
    files = write_series(tmp_path / "src", 3)
    good = files[2].read_bytes()
    files[2].write_bytes(good[: len(good) // 2])  # truncated: unreadable
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="on_error: skip\n")
    pipeline = icepipe.load_pipeline(spec)

    first = icepipe.run(pipeline, client=client)
    assert first.status == "committed"
    assert len(first.files_new) == 2
    assert list(first.files_skipped) == [f"file://{files[2]}"]
    meta = _meta(tmp_path / "repo", first.snapshot_id)
    assert [s["url"] for s in meta["skipped"]] == [f"file://{files[2]}"]
    assert files[2].name in meta["skipped"][0]["reason"]

    # Still broken: nothing new to commit, the file is reported again.
    again = icepipe.run(pipeline, client=client)
    assert again.status == "nothing-new" and list(again.files_skipped) == [f"file://{files[2]}"]

    files[2].write_bytes(good)  # repaired: ingested by the next run
    fixed = icepipe.run(pipeline, client=client)
    assert fixed.files_new == (f"file://{files[2]}",) and not fixed.files_skipped
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(sorted(files)))


def test_on_error_fail_is_the_default(tmp_path: Path, client: Any) -> None:
    files = write_series(tmp_path / "src", 2)
    files[1].write_bytes(b"not netcdf at all")
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    with pytest.raises(SourceError, match=files[1].name):
        icepipe.run(icepipe.load_pipeline(spec), client=client)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_on_changed_reingest_overwrites_the_files_region(
    tmp_path: Path, client: Any, mode: str
) -> None:
    files = write_series(tmp_path / "src", 3, steps=4, time_chunk=4)
    extra = "on_changed: reingest\n" + (f"mode: {mode}\n" if mode == "native" else "")
    if mode == "native":
        extra += "chunks: {time: 4}\n"
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=extra)
    pipeline = icepipe.load_pipeline(spec)
    icepipe.run(pipeline, client=client)

    # A corrected delivery of the middle file: same times, other values.
    write_series(tmp_path / "fix", 3, steps=4, time_chunk=4, seed=99)
    (tmp_path / "fix" / files[1].name).replace(files[1])
    result = icepipe.run(pipeline, client=client)
    assert result.status == "committed"
    assert result.files_new == (f"file://{files[1]}",)
    meta = _meta(tmp_path / "repo", result.snapshot_id)
    assert meta["reingested"] == [f"file://{files[1]}"]
    assert (meta["files"][0]["start"], meta["files"][0]["length"]) == (4, 4)

    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(sorted(files)))
    assert icepipe.run(pipeline, client=client).status == "nothing-new"


def test_changed_file_with_other_length_cannot_be_reingested(tmp_path: Path, client: Any) -> None:
    files = write_series(tmp_path / "src", 2, steps=4, time_chunk=4)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="on_changed: reingest\n")
    pipeline = icepipe.load_pipeline(spec)
    tip = icepipe.run(pipeline, client=client).snapshot_id
    write_series(tmp_path / "fix", 2, steps=[4, 5], time_chunk=4, seed=3)
    (tmp_path / "fix" / files[1].name).replace(files[1])
    with pytest.raises(SourceError, match="instead of 4"):
        icepipe.run(pipeline, client=client)
    assert repository.open_repo(str(tmp_path / "repo")).lookup_branch("main") == tip


@pytest.mark.parametrize("mode", ["native", "virtual"])
def test_late_files_fill_a_preallocated_axis(tmp_path: Path, client: Any, mode: str) -> None:
    # An operational archive pre-allocates the whole time axis (fill values) and files arrive
    # out of order: each one goes into its region, none is appended, duplicates are refused.
    files = write_series(tmp_path / "src", 4, steps=4, time_chunk=4)
    times = pd.date_range("2020-01-01", periods=16, freq="D")
    template = xr.Dataset(
        {"tas": (("time", "lat", "lon"), np.full((16, 5, 6), np.nan, dtype="f4"))},
        coords={"time": times, "lat": np.linspace(-60, 60, 5), "lon": np.linspace(0, 350, 6)},
    )
    template["tas"].attrs.update(units="K", long_name="variable tas")
    template.attrs["title"] = "test series file 0"
    enc = {
        "time": {"units": "days since 2000-01-01", "dtype": "i8", "chunks": (16,)},
        "tas": {"chunks": (4, 5, 6)},
    }
    icepipe.to_icechunk(template, str(tmp_path / "repo"), group="g", encoding=enc)

    extra = "" if mode == "virtual" else "mode: native\n"
    late = [files[2], files[0]]
    spec = write_pipeline(tmp_path, urls=[str(p) for p in late], extra=extra)
    if mode == "virtual":
        # The template's native (zstd) chunks cannot be mixed with zlib references.
        with pytest.raises(SchemaMismatchError, match="mode: native"):
            icepipe.run(icepipe.load_pipeline(spec), client=client)
        return
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.status == "committed"
    meta = _meta(tmp_path / "repo", result.snapshot_id)
    assert sorted((f["start"], f["length"]) for f in meta["files"]) == [(0, 4), (8, 4)]
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    assert stored.sizes["time"] == 16  # nothing appended
    for i in (0, 2):
        xr.testing.assert_equal(stored.isel(time=slice(4 * i, 4 * i + 4)), sources([files[i]]))
    assert np.isnan(stored["tas"].isel(time=slice(4, 8)).values).all()

    # The same data again under another name is a duplicate, not stored twice.
    dup = tmp_path / "src" / "copy.nc"
    dup.write_bytes(files[0].read_bytes())
    spec2 = write_pipeline(tmp_path, name="dup", urls=[str(dup)], extra=extra)
    with pytest.raises(SourceError, match="duplicates data already ingested"):
        icepipe.run(icepipe.load_pipeline(spec2), client=client)
