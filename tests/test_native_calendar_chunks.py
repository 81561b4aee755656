"""Native ingests with chunks that follow the files or the calendar along time
(``chunks: {time: file | month | year}``): generated daily series over several runs, read
back equal to ``xarray.open_mfdataset``, stored grids as the calendar says, nightly appends
that complete a month begun by the previous run, re-runs that find nothing new."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe.ops.validate import validate_pipeline
from icepipe.repository.grids import read_chunk_grid, rectilinear_enabled
from tests.conftest import KillOnFirstTask, branch_tip, write_pipeline
from tests.ingest_checks import check_tip, sources

UNITS = "days since 1990-01-01"


def _daily(
    folder: Path,
    lengths: list[int],
    *,
    start: str = "1999-01-01",
    calendar: str = "standard",
    ny: int = 3,
    nx: int = 4,
) -> list[Path]:
    """Consecutive files of a daily series in ``calendar`` with ``lengths`` days each."""
    folder.mkdir(parents=True, exist_ok=True)
    times = xr.date_range(start, periods=sum(lengths), freq="D", calendar=calendar, use_cftime=True)
    rng = np.random.default_rng(len(lengths))
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(itertools.accumulate(lengths, initial=0))):
        n = b - a
        ds = xr.Dataset(
            {"tas": (("time", "lat", "lon"), rng.random((n, ny, nx)).astype("f4"))},
            coords={"time": times[a:b], "lat": np.linspace(-30, 30, ny), "lon": np.arange(nx)},
            attrs={"title": "daily test series"},
        )
        ds.tas.attrs.update(units="K")
        path = folder / f"d{i:03d}.nc"
        enc = {"time": {"units": UNITS, "calendar": calendar, "dtype": "i8"}}
        ds.to_netcdf(path, engine="netcdf4", encoding=enc)
        paths.append(path)
    return paths


def _month_lengths(start: str, n: int, calendar: str) -> tuple[int, ...]:
    times = xr.date_range(start, periods=n, freq="D", calendar=calendar, use_cftime=True)
    return tuple(len(list(g)) for _, g in itertools.groupby((t.year, t.month) for t in times))


def _grid(repo: Path, path: str = "g/tas") -> Any:
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    return read_chunk_grid(r.readonly_session(branch="main").store, path)


def _stored(repo: Path) -> xr.Dataset:
    with rectilinear_enabled():
        return icepipe.open_dataset(str(repo), group="g").load()


def _ingest_in_runs(
    tmp_path: Path, files: list[Path], runs: list[int], rule: str, client: Any
) -> Path:
    """Ingest ``files`` (hidden until their run) in runs of ``runs`` files each; check after
    every run that the stored data equal the files so far and their ledger positions."""
    hidden = [f.rename(f.with_suffix(".later")) for f in files]
    spec = write_pipeline(
        tmp_path, urls="src/*.nc", extra=f"mode: native\nchunks: {{time: {rule}, lat: 2}}\n"
    )
    pipeline = icepipe.load_pipeline(spec)
    done = 0
    for n in runs:
        for h, f in zip(hidden[done : done + n], files[done : done + n], strict=True):
            h.rename(f)
        done += n
        result = icepipe.run(pipeline, client=client)
        assert result.status == "committed"
        with rectilinear_enabled():
            check_tip(tmp_path / "repo", "g", result.snapshot_id or "")
        xr.testing.assert_identical(_stored(tmp_path / "repo"), sources(files[:done]))
    assert icepipe.run(pipeline, client=client).status == "nothing-new"
    return tmp_path / "repo"


def test_yearly_files_across_a_leap_year_in_monthly_chunks(tmp_path: Path, client: Any) -> None:
    files = _daily(tmp_path / "src", [365, 366, 365])  # 1999, 2000 (leap), 2001
    repo = _ingest_in_runs(tmp_path, files, [1, 2], "month", client)
    months = _month_lengths("1999-01-01", 1096, "standard")
    assert months[:14] == (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 29)
    assert _grid(repo) == (months, 2, 4)
    assert _grid(repo, "g/time") == (months,)
    with rectilinear_enabled():  # xarray's Dask chunks follow the grid
        assert icepipe.open_dataset(str(repo), group="g", chunks={}).tas.chunks[0] == months
        # icepipe validate compares every ingested file with the stored data.
        report = validate_pipeline(icepipe.load_pipeline(tmp_path / "test.yaml"), sample=None)
    assert len(report.files_checked) == report.files_ingested == 3


@pytest.mark.parametrize("rule", ["year", "file"])
def test_yearly_files_in_yearly_and_file_chunks(tmp_path: Path, client: Any, rule: str) -> None:
    files = _daily(tmp_path / "src", [365, 366, 365])
    repo = _ingest_in_runs(tmp_path, files, [2, 1], rule, client)
    assert _grid(repo) == ((365, 366, 365), 2, 4)


def test_files_of_one_length_in_file_chunks(tmp_path: Path, client: Any) -> None:
    """Equal edges are still a rectilinear grid in the metadata: later runs append to it
    (was: refused as "regular chunks" on the second run)."""
    files = _daily(tmp_path / "src", [10] * 4, start="2000-01-25")
    repo = _ingest_in_runs(tmp_path, files, [1, 2, 1], "file", client)
    assert _grid(repo) == (10, 2, 4)  # read_chunk_grid reports equal edges as regular


def test_monthly_files_noleap_in_yearly_chunks(tmp_path: Path, client: Any) -> None:
    """Monthly files of 28-31 days (noleap) appended one per run into yearly chunks: the
    stored last chunk grows with every run (rewritten whole), the data stay exact."""
    lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28]
    files = _daily(tmp_path / "src", lengths, start="2001-01-01", calendar="noleap")
    repo = _ingest_in_runs(tmp_path, files, [3, 1, 1, 7, 2], "year", client)
    assert _grid(repo) == ((365, 59), 2, 4)


def test_ten_day_files_in_monthly_chunks_any_split(tmp_path: Path, client: Any) -> None:
    """Files of 10 days straddle month ends: nightly runs of one or two files keep monthly
    chunks (the month begun by one run is completed by the next), as one run would."""
    files = _daily(tmp_path / "src", [10] * 9, start="2000-01-25")
    repo = _ingest_in_runs(tmp_path, files, [1, 2, 1, 1, 3, 1], "month", client)
    months = _month_lengths("2000-01-25", 90, "standard")
    assert months == (7, 29, 31, 23)
    assert _grid(repo) == (months, 2, 4)
    one = tmp_path / "one"
    (one / "src").mkdir(parents=True)
    for f in files:
        os.link(f, one / "src" / f.name)
    spec = write_pipeline(
        one, urls="src/*.nc", extra="mode: native\nchunks: {time: month, lat: 2}\n"
    )
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert _grid(one / "repo") == _grid(repo)
    xr.testing.assert_identical(_stored(one / "repo"), _stored(repo))


def test_360_day_calendar_in_monthly_chunks(tmp_path: Path, client: Any) -> None:
    files = _daily(tmp_path / "src", [45, 45, 45], start="2000-02-16", calendar="360_day")
    repo = _ingest_in_runs(tmp_path, files, [1, 2], "month", client)
    assert _grid(repo) == ((15, 30, 30, 30, 30), 2, 4)
    assert _month_lengths("2000-02-16", 135, "360_day") == (15, 30, 30, 30, 30)


def test_switching_a_stored_group_between_rules_and_lengths_is_refused(
    tmp_path: Path, client: Any
) -> None:
    files = _daily(tmp_path / "src", [40, 40])
    later = files[1].rename(files[1].with_suffix(".later"))
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\nchunks: {time: month}\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    later.rename(files[1])
    spec.write_text(spec.read_text().replace("time: month", "time: 10"))
    with pytest.raises(icepipe.ConfigError, match="back to the rule it was created with") as e:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert e.value.field == "chunks.time"


def test_reingest_of_a_file_straddling_months(tmp_path: Path, client: Any) -> None:
    """``on_changed: reingest`` of a 10-day file that shares its months with its neighbours:
    the months it touches are rewritten whole (stored neighbours kept), the grid unchanged."""
    files = _daily(tmp_path / "src", [10, 10, 10], start="2000-01-25")
    spec = write_pipeline(
        tmp_path,
        urls="src/*.nc",
        extra="mode: native\non_changed: reingest\nchunks: {time: month}\n",
    )
    pipeline = icepipe.load_pipeline(spec)
    icepipe.run(pipeline, client=client)
    grid = _grid(tmp_path / "repo")
    assert grid == ((7, 23), 3, 4)
    fixed = xr.open_dataset(files[1]).load()
    fixed["tas"] = fixed.tas + 100
    fixed.to_netcdf(tmp_path / "fixed.nc", encoding={"time": fixed.time.encoding})
    (tmp_path / "fixed.nc").replace(files[1])
    result = icepipe.run(pipeline, client=client)
    assert result.status == "committed" and result.files_new == (f"file://{files[1]}",)
    assert _grid(tmp_path / "repo") == grid
    xr.testing.assert_identical(_stored(tmp_path / "repo"), sources(files))
    assert icepipe.run(pipeline, client=client).status == "nothing-new"


@pytest.mark.slow
def test_same_pipeline_twice_at_once_keeps_months_and_each_file_once(
    tmp_path: Path, client: Any
) -> None:
    """Two runs of one pipeline append at once, both completing the month the stored data end
    in: one commits, the other re-plans on the new tip (and finds nothing new, or appends what
    is left); every file lands once, the chunks stay monthly."""
    from tests.test_concurrency import _race

    files = _daily(tmp_path / "src", [10] * 6, start="2000-01-25")
    hidden = [f.rename(f.with_suffix(".later")) for f in files[2:]]
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\nchunks: {time: month}\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    for h, f in zip(hidden, files[2:], strict=True):
        h.rename(f)
    results = _race([spec, spec], client.scheduler.address)
    for rc, _, stderr in results:
        assert rc == 0, stderr
    committed = [r for _, r, _ in results if r is not None and r["status"] == "committed"]
    print(f"\nraced appends: {[(r['status'], r['attempts']) for _, r, _ in results if r]}")
    assert sorted(u for r in committed for u in r["files_new"]) == [
        f"file://{f}" for f in files[2:]
    ]
    tip = branch_tip(tmp_path / "repo")
    with rectilinear_enabled():
        check_tip(tmp_path / "repo", "g", tip or "")
    xr.testing.assert_identical(_stored(tmp_path / "repo"), sources(files))
    assert _grid(tmp_path / "repo") == (_month_lengths("2000-01-25", 60, "standard"), 3, 4)


def _months_since(folder: Path, lengths: list[int]) -> list[Path]:
    """Files whose times xarray cannot decode (``months since`` in the standard calendar)."""
    import netCDF4

    folder.mkdir(parents=True, exist_ok=True)
    paths, offset = [], 0
    for i, n in enumerate(lengths):
        path = folder / f"m{i}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", n)
            nc.createDimension("x", 2)
            t = nc.createVariable("time", "f8", ("time",))
            t.units, t.calendar = "months since 2000-01-01", "standard"
            t[:] = np.arange(offset, offset + n)
            nc.createVariable("v", "f4", ("time", "x"))[:] = np.arange(n * 2).reshape(n, 2)
        offset += n
        paths.append(path)
    return paths


def test_file_chunks_of_undecodable_times_and_month_chunks_refused(
    tmp_path: Path, client: Any
) -> None:
    """``file`` chunks need no calendar: times xarray cannot decode are stored raw (was:
    ValueError reading the stored encodings); ``month`` chunks on them are refused naming the
    field."""
    files = _months_since(tmp_path / "src", [5, 7, 3])
    later = files[2].rename(tmp_path / "later")
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\nchunks: {time: file}\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    later.rename(files[2])
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    with rectilinear_enabled():
        got = xr.open_zarr(
            r.readonly_session("main").store, group="g", consolidated=False, decode_times=False
        ).load()
    xr.testing.assert_equal(got, sources(files, decode_times=False))
    assert _grid(tmp_path / "repo", "g/v") == ((5, 7, 3), 2)
    monthly = write_pipeline(
        tmp_path, name="m", repo="m", urls="src/*.nc", extra="mode: native\nchunks: {time: month}\n"
    )
    with pytest.raises(icepipe.ConfigError, match="do not decode") as e:
        icepipe.run(icepipe.load_pipeline(monthly), client=client)
    assert e.value.field == "chunks.time"


def test_worker_killed_mid_write_gives_identical_data(tmp_path: Path) -> None:
    """A worker dying in a chunk-writing task: the task runs again elsewhere, the commit holds
    every chunk once (no half-written month is ever visible)."""
    from icepipe.execute import open_client

    files = _daily(tmp_path / "src", [20, 20, 20], start="2000-01-15")
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\nchunks: {time: month}\n")
    marker = tmp_path / "killed"
    with open_client(workers=2) as (c, _):
        c.register_plugin(KillOnFirstTask(str(marker), "icepipe-write-"))
        result = icepipe.run(icepipe.load_pipeline(spec), client=c)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert result.status == "committed"
    xr.testing.assert_identical(_stored(tmp_path / "repo"), sources(files))
    assert _grid(tmp_path / "repo") == ((17, 29, 14), 3, 4)
