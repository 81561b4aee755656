"""Files of uneven length ingested virtually: rectilinear chunk grids along the concat dim.

Real netCDF files written here (netCDF4/HDF5 contiguous or chunked, netCDF3 with a fixed time
dimension): a daily series in yearly files across a leap year, monthly files of 28 to 31 days,
over several runs; the data stays in the files (every chunk of the data variable is a virtual
reference), reads back equal to ``xarray.open_mfdataset``, and a re-run is "nothing new".
Padded chunks that would sit inside the array are refused, naming the variable and the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import icepipe
from icepipe.errors import SourceError
from icepipe.repository.grids import read_chunk_grid
from icepipe.repository.refs import _chunk_type_counts
from tests.conftest import S3Server, branch_tip, write_pipeline
from tests.ingest_checks import check_tip, sources, url
from tests.test_s3 import load, pipeline_doc, read_back
from tests.test_s3 import open_repo as s3_open_repo


def write_days(
    path: Path,
    start: str,
    days: int,
    *,
    chunk: int | None = None,
    fmt: str = "netcdf4",
    seed: int = 0,
) -> Path:
    """One file of ``days`` daily steps from ``start``: ``tas(time, y, x)`` contiguous
    (``chunk=None``) or chunked ``chunk`` steps along time (netCDF4)."""
    times = pd.date_range(start, periods=days, freq="D")
    rng = np.random.default_rng(seed + times[0].toordinal())
    ds = xr.Dataset(
        {"tas": (("time", "y", "x"), rng.random((days, 3, 4), dtype="f4"), {"units": "K"})},
        coords={"time": times, "y": [0.0, 1.0, 2.0], "x": [10.0, 20.0, 30.0, 40.0]},
        attrs={"title": "uneven"},
    )
    enc: dict[str, Any] = {"time": {"units": "days since 2000-01-01", "dtype": "f8"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "netcdf3":
        ds.to_netcdf(path, format="NETCDF3_CLASSIC", encoding=enc)  # time: a fixed dimension
        return path
    enc["tas"] = (
        # Uncompressed either way: contiguous storage has no filters, and every file of a
        # series must share its codecs.
        {"contiguous": True} if chunk is None else {"chunksizes": (chunk, 3, 4)}
    )
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
    return path


def years(folder: Path, *, chunks: dict[int, int] | None = None, n: int = 4) -> list[Path]:
    """Daily files for 2003 (365 days), 2004 (366), 2005, 2006 (365): the first ``n``."""
    out = []
    for y in (2003, 2004, 2005, 2006)[:n]:
        days = 366 if y == 2004 else 365
        out.append(write_days(folder / f"y{y}.nc", f"{y}-01-01", days, chunk=(chunks or {}).get(y)))
    return out


def chunk_types(repo: Path, path: str) -> dict[str, int]:
    r = icepipe.repository.open_repo(str(repo))
    return dict(_chunk_type_counts(r.readonly_session("main"), "/" + path))


def grid(repo: Path, path: str) -> Any:
    r = icepipe.repository.open_repo(str(repo))
    return read_chunk_grid(r.readonly_session("main").store, path)


def run_batches(base: Path, pool: list[Path], batches: list[list[int]], client: Any) -> Path:
    """Move the files of each batch into ``src/`` and run the pipeline once per batch; every
    run commits exactly its files, a re-run finds nothing new."""
    src = base / "src"
    src.mkdir(exist_ok=True)
    pipeline = icepipe.load_pipeline(write_pipeline(base, urls="src/*.nc"))
    repo = base / "repo"
    for batch in batches:
        moved = [pool[i].rename(src / pool[i].name) for i in batch]
        for i, m in zip(batch, moved, strict=True):
            pool[i] = m
        result = icepipe.run(pipeline, client=client)
        assert result.status == "committed", result
        assert sorted(result.files_new) == sorted(url(m) for m in moved)
    tip = branch_tip(repo)
    again = icepipe.run(pipeline, client=client)
    assert again.status == "nothing-new" and branch_tip(repo) == tip
    return repo


def test_leap_year_series_in_several_runs_stays_virtual(tmp_path: Path, client: Any) -> None:
    pool = years(tmp_path / "pool")
    repo = run_batches(tmp_path, pool, [[0], [2, 1], [3]], client)

    assert grid(repo, "g/tas") == ((365, 366, 365, 365), 3, 4)
    types = chunk_types(repo, "g/tas")
    assert types == {"virtual": 4}, types  # no data copied
    stored = icepipe.open_dataset(str(repo), group="g")
    expected = sources(pool)
    xr.testing.assert_identical(stored.load(), expected)
    assert stored.tas.encoding["dtype"] == expected.tas.encoding["dtype"]
    assert stored.time.encoding["units"] == expected.time.encoding["units"]
    records = check_tip(repo, "g", str(branch_tip(repo)))
    assert [(r["start"], r["length"]) for r in sorted(records, key=lambda r: r["start"])] == [
        (0, 365),
        (365, 366),
        (731, 365),
        (1096, 365),
    ]


MONTHS = [("2004-01-01", 31), ("2004-02-01", 29), ("2004-03-01", 31), ("2004-04-01", 30)]


@settings(max_examples=4, deadline=None)
@given(
    cuts=st.sets(st.integers(1, 3), max_size=3),
    divisors=st.lists(st.sampled_from([0, 1, 2]), min_size=4, max_size=4),
)
def test_monthly_files_any_split_equals_open_mfdataset(
    tmp_path_factory: pytest.TempPathFactory, client: Any, cuts: set[int], divisors: list[int]
) -> None:
    """Months of 28 to 31 days, each contiguous or chunked by a divisor of its length (the
    chunks differ between files), ingested in consecutive batches."""
    base = tmp_path_factory.mktemp("months")
    pool = []
    for (start, days), d in zip(MONTHS, divisors, strict=True):
        divs = [c for c in range(2, days) if days % c == 0] or [days]
        chunk = None if d == 0 else (divs[0] if d == 1 else divs[-1])
        pool.append(write_days(base / "pool" / f"m{start[:7]}.nc", start, days, chunk=chunk))
    bounds = sorted(cuts)
    batches = [list(range(a, b)) for a, b in zip([0, *bounds], [*bounds, 4], strict=True)]
    repo = run_batches(base, pool, batches, client)
    stored = icepipe.open_dataset(str(repo), group="g").load()
    xr.testing.assert_identical(stored, sources(pool))
    assert set(chunk_types(repo, "g/tas")) == {"virtual"}


def test_regular_series_keeps_a_regular_grid(tmp_path: Path, client: Any) -> None:
    pool = [
        write_days(tmp_path / "pool" / f"w{i}.nc", f"2004-01-{1 + 8 * i:02d}", 8, chunk=4)
        for i in range(3)
    ]
    repo = run_batches(tmp_path, pool, [[0], [1, 2]], client)
    assert grid(repo, "g/tas") == (4, 3, 4)
    meta = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    assert meta is not None
    stored = icepipe.open_dataset(str(repo), group="g").load()
    xr.testing.assert_identical(stored, sources(pool))


def test_netcdf3_files_with_a_fixed_time_dimension(tmp_path: Path, client: Any) -> None:
    pool = [
        write_days(tmp_path / "pool" / f"m{i}.nc", start, days, fmt="netcdf3")
        for i, (start, days) in enumerate(MONTHS[:3])
    ]
    repo = run_batches(tmp_path, pool, [[0, 1], [2]], client)
    assert grid(repo, "g/tas") == ((31, 29, 31), 3, 4)
    assert chunk_types(repo, "g/tas") == {"virtual": 3}
    stored = icepipe.open_dataset(str(repo), group="g").load()
    xr.testing.assert_identical(stored, sources(pool))


def test_padded_chunk_inside_the_array_is_refused(tmp_path: Path, client: Any) -> None:
    # 2003 in chunks of 10: its last chunk holds 5 days and is stored padded to 10.
    years(tmp_path / "src", chunks={2003: 10})
    pipeline = icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc"))
    with pytest.raises(SourceError) as info:
        icepipe.run(pipeline, client=client)
    msg = str(info.value)
    assert "y2003.nc" in msg and "'tas'" in msg and "zarr-specs #394" in msg
    assert "mode: native" in msg
    assert branch_tip(tmp_path / "repo") is None  # nothing committed


def test_padded_chunk_at_the_end_until_something_follows(tmp_path: Path, client: Any) -> None:
    # The last file (2006) in chunks of 100: its padded last chunk ends the array.
    pool = years(tmp_path / "pool", chunks={2006: 100})
    extra = write_days(tmp_path / "pool" / "y2007.nc", "2007-01-01", 365)
    repo = run_batches(tmp_path, pool, [[0, 1], [2, 3]], client)
    assert grid(repo, "g/tas") == ((365, 366, 365, 100, 100, 100, 100), 3, 4)
    xr.testing.assert_identical(icepipe.open_dataset(str(repo), group="g").load(), sources(pool))
    extra.rename(tmp_path / "src" / extra.name)
    pipeline = icepipe.load_pipeline(tmp_path / "test.yaml")
    with pytest.raises(SourceError, match="ends with a partial chunk") as info:
        icepipe.run(pipeline, client=client)
    assert "'tas'" in str(info.value) and "new group" in str(info.value)


def test_changed_file_is_reingested_into_its_chunks(tmp_path: Path, client: Any) -> None:
    files = years(tmp_path / "src", n=3)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="on_changed: reingest\n")
    pipeline = icepipe.load_pipeline(spec)
    assert icepipe.run(pipeline, client=client).status == "committed"
    # A corrected delivery of the leap year: same days, other values.
    fixed = write_days(tmp_path / "fix" / "y2004.nc", "2004-01-01", 366, seed=7)
    fixed.replace(files[1])
    result = icepipe.run(pipeline, client=client)
    assert result.status == "committed" and result.files_new == (url(files[1]),)
    repo = tmp_path / "repo"
    assert grid(repo, "g/tas") == ((365, 366, 365), 3, 4)
    assert chunk_types(repo, "g/tas") == {"virtual": 3}
    xr.testing.assert_identical(icepipe.open_dataset(str(repo), group="g").load(), sources(files))
    assert icepipe.run(pipeline, client=client).status == "nothing-new"


def test_leap_years_from_s3_into_an_s3_repository(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    pool = years(tmp_path / "pool", n=3)
    src = s3.bucket("src")
    s3.upload(pool[:2], src, "years")
    p = load(
        tmp_path,
        pipeline_doc(
            "uneven",
            f"s3://{src}/years/*.nc",
            f"s3://{s3.bucket('repo')}/repos/uneven",
            source_storage=s3.options(),
            target_storage=s3.options(),
        ),
    )
    assert icepipe.run(p, client=s3_client).status == "committed"
    s3.upload(pool[2:], src, "years")
    assert icepipe.run(p, client=s3_client).files_new == (f"s3://{src}/years/{pool[2].name}",)
    assert icepipe.run(p, client=s3_client).status == "nothing-new"
    xr.testing.assert_identical(read_back(p), sources(pool))
    session = s3_open_repo(p).readonly_session("main")
    assert read_chunk_grid(session.store, "g/tas") == ((365, 366, 365), 3, 4)
    assert dict(_chunk_type_counts(session, "/g/tas")) == {"virtual": 3}


def test_real_split_with_undecodable_times_appends_its_only_variable(
    tmp_path: Path, client: Any, sample_data: Path
) -> None:
    """hgt.nc (libncarg-data, netCDF3 with a fixed time dimension in 'months since', which
    xarray cannot decode) split in 6/5/... steps: HGT is the only variable along time, so a
    run appends nothing but it (rectilinear) and the raw time values."""
    real = sorted((sample_data / "corpus-splits" / "cdf" / "hgt").glob("hgt-p0*.nc"))
    pool = [Path(shutil.copy(f, tmp_path / f.name)) for f in real]
    repo = run_batches(tmp_path, pool, [[0], [1, 2], [3]], client)
    lengths = tuple(xr.open_dataset(f, decode_times=False).sizes["time"] for f in pool)
    assert len(set(lengths)) > 1
    stored_grid = grid(repo, "g/HGT")
    assert stored_grid is not None and stored_grid[0] == lengths
    assert chunk_types(repo, "g/HGT") == {"virtual": len(pool)}
    session = icepipe.repository.open_repo(str(repo)).readonly_session("main")
    stored = xr.open_zarr(session.store, group="g", consolidated=False, decode_times=False)
    expected = sources(pool, decode_times=False)
    np.testing.assert_array_equal(stored.HGT.values, expected.HGT.values)
    np.testing.assert_array_equal(stored.time.values, expected.time.values)
