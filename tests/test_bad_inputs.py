"""Bad inputs end to end: real (corrupted) files, real repositories, a real Dask cluster.

For every bad input the run must raise the right icepipe exception, name the offending file (or
field) and say how to fix it, and leave the branch exactly as it was: no repository at all after
a failed first run, the same snapshot after a failed later run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

import icepipe
from icepipe import load_pipeline
from icepipe.cli import main
from icepipe.errors import (
    ConfigError,
    IcepipeError,
    SchemaMismatchError,
    SourceError,
)
from tests.conftest import branch_tip, write_pipeline

Series = Callable[..., list[Path]]

# Fragments of library output that must never reach a user.
LEAKS = ("Traceback", "Debug source", 'File "')


def url(path: Path) -> str:
    return f"file://{path}"


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def later(paths: list[Path]) -> str:
    """A start date just after the last file of a default 4-step daily series."""
    return f"2020-01-{4 * len(paths) + 1:02d}"


@dataclass
class Bad:
    """What a failing run must report."""

    pipeline: Path
    exc: type[IcepipeError]
    names: list[str]  # offending file URLs (or the field for config errors)
    hints: list[str]  # how to fix it
    urls: list[str] = field(default_factory=list)  # SourceError.urls, when not just `names`


def run_fails(bad: Bad, client: Any, *, repo: Path, tip: str | None) -> IcepipeError:
    """Run ``bad.pipeline``, check the error it raises, and that the branch did not move."""
    with pytest.raises(IcepipeError) as info:
        icepipe.run(load_pipeline(bad.pipeline), client=client)
    err = info.value
    msg = str(err)
    assert type(err) is bad.exc, f"{type(err).__name__}: {msg}"
    for text in [*bad.names, *bad.hints]:
        assert text in msg, f"{text!r} not in {msg!r}"
    for leak in LEAKS:
        assert leak not in msg, msg
    if isinstance(err, SourceError):
        assert set(err.urls) == set(bad.urls or bad.names)
        assert err.url in err.urls
    if isinstance(err, ConfigError):
        assert err.field in bad.names
    assert branch_tip(repo) == tip
    if tip is None:
        assert not repo.exists(), "a failed first run must not create the repository"
    return err


# --- bad first runs: nothing may be created -------------------------------------------------


def empty_glob(d: Path, series: Series) -> Bad:
    (d / "src").mkdir()
    (d / "src" / "README.txt").write_text("data arrives here")
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(d / "src/*.nc")],
        ["matched no files", "check the path in source.urls"],
    )


def glob_folder_missing(d: Path, series: Series) -> Bad:
    return Bad(
        write_pipeline(d, urls="nowhere/*.nc"),
        SourceError,
        [url(d / "nowhere/*.nc")],
        ["does not exist", "check source.urls"],
    )


def missing_listed_file(d: Path, series: Series) -> Bad:
    series(2)
    return Bad(
        write_pipeline(d, urls=["src/f000.nc", "src/f002.nc", "src/f001.nc"]),
        SourceError,
        [url(d / "src/f002.nc")],
        ["not found", "remove it in source.urls"],
    )


def missing_listed_folder(d: Path, series: Series) -> Bad:
    series(1)
    return Bad(
        write_pipeline(d, urls=["src/f000.nc", "moved/f001.nc"]),
        SourceError,
        [url(d / "moved/f001.nc")],
        ["not found", "remove it in source.urls"],
    )


def listed_twice(d: Path, series: Series) -> Bad:
    series(2)
    return Bad(
        write_pipeline(d, urls=["src/f000.nc", "src/f001.nc", "./src/../src/f000.nc"]),
        ConfigError,
        ["source.urls"],
        [url(d / "src/f000.nc"), "listed twice"],
    )


def truncated_netcdf4(d: Path, series: Series) -> Bad:
    paths = series(3)
    truncate(paths[1])
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(paths[1])],
        ["truncated or corrupt", "replace it, or remove it from source.urls"],
    )


def truncated_netcdf3(d: Path, series: Series) -> Bad:
    paths = series(3, fmt="netcdf3")
    truncate(paths[2])
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(paths[2])],
        ["truncated or corrupt", "replace it, or remove it from source.urls"],
    )


def truncated_netcdf3_data_only(d: Path, series: Series) -> Bad:
    """Only data bytes are cut: the header and the coordinates still read fine."""
    (path,) = series(1, fmt="netcdf3")
    ds = xr.open_dataset(path, decode_times=False).load()
    ds.close()
    # Coordinates first, so the file ends with the last record of the data variable.
    reordered = xr.Dataset(coords={k: ds[k] for k in ("time", "lat", "lon")}, attrs=ds.attrs)
    reordered["tas"] = ds["tas"]
    reordered.to_netcdf(path, format="NETCDF3_64BIT", unlimited_dims=["time"])
    path.write_bytes(path.read_bytes()[:-20])
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(path)],
        ["truncated", "replace it, or remove it from source.urls"],
    )


def empty_file(d: Path, series: Series) -> Bad:
    series(2)
    (d / "src" / "f002.nc").write_bytes(b"")
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(d / "src/f002.nc")],
        ["empty", "remove it from source.urls"],
    )


def text_file(d: Path, series: Series) -> Bad:
    series(2)
    (d / "src" / "notes.nc").write_text("temperature files for 2020, see README\n")
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(d / "src/notes.nc")],
        ["not a netCDF3, netCDF4/HDF5 or GRIB file", "remove it from source.urls or fix the glob"],
    )


def png_file(d: Path, series: Series) -> Bad:
    series(2)
    (d / "src" / "map.nc").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
    )
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(d / "src/map.nc")],
        ["not a netCDF3, netCDF4/HDF5 or GRIB file", "PNG", "remove it from source.urls"],
    )


def wrong_format_forced(d: Path, series: Series) -> Bad:
    paths = series(1)
    return Bad(
        write_pipeline(d, urls="src/*.nc", fmt="netcdf3"),
        SourceError,
        [url(paths[0])],
        ["cannot be read as netcdf3", "set source.format: auto"],
    )


def extra_variable(d: Path, series: Series) -> Bad:
    paths = series(2)
    (odd,) = series(1, prefix="g", start=later(paths), variables=("tas", "pr"))
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SchemaMismatchError,
        [url(odd)],
        ["has extra pr", "fix or remove the file"],
        urls=[url(odd), url(paths[0])],
    )


def missing_variable(d: Path, series: Series) -> Bad:
    paths = series(2, variables=("tas", "pr"))
    (odd,) = series(1, prefix="g", start=later(paths), variables=("tas",))
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SchemaMismatchError,
        [url(odd)],
        ["lacks pr", "fix or remove the file"],
        urls=[url(odd), url(paths[0])],
    )


def other_dim_differs(d: Path, series: Series) -> Bad:
    paths = series(2)
    (odd,) = series(1, prefix="g", start=later(paths), ny=7)
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SchemaMismatchError,
        [url(odd)],
        ["'lat'", "length 7", "only 'time' may differ", "fix or remove the file"],
        urls=[url(odd), url(paths[0])],
    )


def dtype_differs(d: Path, series: Series) -> Bad:
    paths = series(2)
    (odd,) = series(1, prefix="g", start=later(paths), dtype="f8")
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SchemaMismatchError,
        [url(odd)],
        ["float64", "float32", "fix or remove the file"],
        urls=[url(odd), url(paths[0])],
    )


def padded_chunk_inside(d: Path, series: Series) -> Bad:
    # 10 steps in chunks of 4: the last chunk holds 2 steps, stored padded to 4. Another file
    # after it (chunked otherwise: a rectilinear grid) cannot follow it (zarr-specs #394).
    (padded,) = series(1, steps=10, time_chunk=4)
    series(1, prefix="g", start="2020-01-11", steps=10, time_chunk=5)
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(padded)],
        ["'tas'", "zarr-specs #394", "mode: native", "divide its length"],
    )


def time_units_differ(d: Path, series: Series) -> Bad:
    paths = series(2)
    # Another calendar: no lossless conversion exists.
    (odd,) = series(1, prefix="g", start=later(paths), calendar="noleap")
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SchemaMismatchError,
        [url(odd)],
        ["'noleap'", "different calendars", "rewrite the file"],
        urls=[url(odd), url(paths[0])],
    )


def overlapping_times(d: Path, series: Series) -> Bad:
    paths = series(2)
    (dup,) = series(1, prefix="g", start="2020-01-03")  # repeats 2020-01-03 and -04
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(dup), url(paths[0])],
        ["overlap along 'time'", "duplicate timestamps", "Remove one of the files"],
    )


def empty_time_axis(d: Path, series: Series) -> Bad:
    """A netCDF3 file with no records yet (still being written) must not disable the checks."""
    series(2, fmt="netcdf3")
    series(1, fmt="netcdf3", prefix="g", start="2020-01-03")  # overlaps f000
    (empty,) = series(1, fmt="netcdf3", prefix="e", steps=0)
    return Bad(
        write_pipeline(d, urls="src/*.nc"),
        SourceError,
        [url(empty)],
        ["has no steps along 'time'", "remove it from source.urls"],
    )


def concat_dim_absent(d: Path, series: Series) -> Bad:
    paths = series(1)
    return Bad(
        write_pipeline(d, urls="src/*.nc", concat_dim="valid_time"),
        SourceError,
        [url(paths[0])],
        ["'valid_time'", "set source.concat_dim to one of"],
    )


def chunks_without_native(d: Path, series: Series) -> Bad:
    series(1)
    return Bad(
        write_pipeline(d, urls="src/*.nc", extra="chunks: {time: 4}\n"),
        ConfigError,
        ["chunks"],
        ["mode: native"],
    )


FIRST_RUN_CASES = [
    empty_glob,
    glob_folder_missing,
    missing_listed_file,
    missing_listed_folder,
    listed_twice,
    truncated_netcdf4,
    truncated_netcdf3,
    truncated_netcdf3_data_only,
    empty_file,
    text_file,
    png_file,
    wrong_format_forced,
    extra_variable,
    missing_variable,
    other_dim_differs,
    dtype_differs,
    padded_chunk_inside,
    time_units_differ,
    overlapping_times,
    empty_time_axis,
    concat_dim_absent,
    chunks_without_native,
]


@pytest.mark.parametrize("case", FIRST_RUN_CASES, ids=lambda f: f.__name__)
def test_bad_first_run_creates_nothing(
    case: Callable[[Path, Series], Bad], tmp_path: Path, series: Series, client: Any
) -> None:
    run_fails(case(tmp_path, series), client, repo=tmp_path / "repo", tip=None)


# --- bad later runs: the branch must not move -----------------------------------------------


@pytest.fixture
def ingested(tmp_path: Path, series: Series, client: Any) -> tuple[Path, list[Path], str]:
    """A repository holding two ingested files: (pipeline, source paths, snapshot id)."""
    paths = series(2)
    pipeline = write_pipeline(tmp_path, urls="src/*.nc")
    result = icepipe.run(load_pipeline(pipeline), client=client)
    assert result.status == "committed"
    assert result.snapshot_id == branch_tip(tmp_path / "repo")
    return pipeline, paths, result.snapshot_id


def starts_before_last_ingested(d: Path, series: Series, paths: list[Path]) -> Bad:
    (new,) = series(1, prefix="g", start="2020-01-06")  # last ingested: 2020-01-08
    return Bad(
        d / "test.yaml",
        SourceError,
        [url(new)],
        ["straddles the end of the data already ingested", "Remove or fix the file"],
    )


def late_file_duplicates_ingested_data(d: Path, series: Series, paths: list[Path]) -> Bad:
    # Exactly the values of an ingested file, under another name: a duplicate, not stored.
    (new,) = series(1, prefix="g", start="2020-01-05")
    return Bad(
        d / "test.yaml",
        SourceError,
        [url(new), url(paths[1])],
        ["duplicates data already ingested from", "duplicates are not stored"],
    )


def late_file_not_contiguous(d: Path, series: Series, paths: list[Path]) -> Bad:
    # Inside the ingested range, every other day: not one region of the stored axis.
    (new,) = series(1, prefix="g", start="2020-01-02", freq="2D", steps=2)
    return Bad(
        d / "test.yaml",
        SourceError,
        [url(new)],
        ["not contiguous on the stored axis"],
    )


def rewritten_after_ingest(d: Path, series: Series, paths: list[Path]) -> Bad:
    before = paths[0].stat()
    series(1, seed=42)  # same name, other content
    after = paths[0].stat()
    assert after.st_size != before.st_size
    return Bad(
        d / "test.yaml",
        SourceError,
        [url(paths[0])],
        ["changed after they were ingested", "Restore the original file", "on_changed: reingest"],
    )


def new_file_truncated(d: Path, series: Series, paths: list[Path]) -> Bad:
    (new,) = series(1, prefix="g", start=later(paths))
    truncate(new)
    return Bad(d / "test.yaml", SourceError, [url(new)], ["truncated or corrupt"])


def new_file_dtype_differs(d: Path, series: Series, paths: list[Path]) -> Bad:
    (new,) = series(1, prefix="g", start=later(paths), dtype="f8")
    return Bad(
        d / "test.yaml",
        SchemaMismatchError,
        [url(new)],
        ["float64", "the repository has", "fix or remove the file"],
    )


def new_file_units_differ(d: Path, series: Series, paths: list[Path]) -> Bad:
    (new,) = series(1, prefix="g", start=later(paths), calendar="noleap")
    return Bad(
        d / "test.yaml",
        SchemaMismatchError,
        [url(new)],
        ["'noleap'", "the repository", "different calendars"],
    )


def new_file_extra_variable(d: Path, series: Series, paths: list[Path]) -> Bad:
    (new,) = series(1, prefix="g", start=later(paths), variables=("tas", "pr"))
    return Bad(
        d / "test.yaml",
        SchemaMismatchError,
        [url(new)],
        ["has extra pr", "the repository"],
    )


def new_file_padded_before_another(d: Path, series: Series, paths: list[Path]) -> Bad:
    # 3 steps in chunks of 2 (the last padded), then another file: refused by name.
    (padded,) = series(1, prefix="g", start=later(paths), steps=3, time_chunk=2)
    series(1, prefix="h", start="2020-01-12", steps=2, time_chunk=2)
    return Bad(
        d / "test.yaml",
        SourceError,
        [url(padded)],
        ["last chunk is partial", "mode: native"],
    )


LATER_RUN_CASES = [
    starts_before_last_ingested,
    late_file_duplicates_ingested_data,
    late_file_not_contiguous,
    rewritten_after_ingest,
    new_file_truncated,
    new_file_dtype_differs,
    new_file_units_differ,
    new_file_extra_variable,
    new_file_padded_before_another,
]


@pytest.mark.parametrize("case", LATER_RUN_CASES, ids=lambda f: f.__name__)
def test_bad_later_run_leaves_branch_unchanged(
    case: Callable[[Path, Series, list[Path]], Bad],
    ingested: tuple[Path, list[Path], str],
    tmp_path: Path,
    series: Series,
    client: Any,
) -> None:
    _pipeline, paths, tip = ingested
    run_fails(case(tmp_path, series, paths), client, repo=tmp_path / "repo", tip=tip)


def test_rewritten_netcdf3_of_same_size_is_detected(
    tmp_path: Path, series: Series, client: Any
) -> None:
    paths = series(2, fmt="netcdf3")
    pipeline = write_pipeline(tmp_path, urls="src/*.nc")
    tip = icepipe.run(load_pipeline(pipeline), client=client).snapshot_id
    before = paths[1].stat()
    series(2, fmt="netcdf3", seed=7)
    now = paths[1].stat()
    assert now.st_size == before.st_size
    assert now.st_mtime_ns != before.st_mtime_ns
    bad = Bad(
        pipeline,
        SourceError,
        [url(paths[0]), url(paths[1])],
        ["source file(s) changed after they were ingested", "Restore the original file"],
    )
    run_fails(bad, client, repo=tmp_path / "repo", tip=tip)


# --- several bad files: all named at once ----------------------------------------------------


def test_all_unreadable_files_are_named_in_one_error(
    tmp_path: Path, series: Series, client: Any
) -> None:
    paths = series(4)
    truncate(paths[1])
    truncate(paths[3], 0.1)
    (tmp_path / "src" / "notes.nc").write_text("not data")
    (nc3,) = series(1, fmt="netcdf3", prefix="h", start="2021-01-01")
    truncate(nc3)
    bad_urls = [url(paths[1]), url(paths[3]), url(tmp_path / "src/notes.nc"), url(nc3)]
    bad = Bad(
        write_pipeline(tmp_path, urls="src/*.nc"),
        SourceError,
        bad_urls,
        ["4 source files cannot be ingested"],
    )
    err = run_fails(bad, client, repo=tmp_path / "repo", tip=None)
    assert url(paths[0]) not in str(err)
    assert url(paths[2]) not in str(err)


def test_all_missing_listed_files_are_named_in_one_error(
    tmp_path: Path, series: Series, client: Any
) -> None:
    series(1)
    missing = [url(tmp_path / "src/f001.nc"), url(tmp_path / "src/f002.nc")]
    bad = Bad(
        write_pipeline(tmp_path, urls=["src/f000.nc", "src/f001.nc", "src/f002.nc"]),
        SourceError,
        missing,
        ["not found"],
    )
    run_fails(bad, client, repo=tmp_path / "repo", tip=None)


# --- the CLI: exit codes for schedulers -----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [
        (empty_glob, 3),
        (missing_listed_file, 3),
        (truncated_netcdf4, 3),  # starts a 1-worker cluster: the full path through scanning
        (listed_twice, 2),
        (chunks_without_native, 2),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_cli_exit_codes(
    case: Callable[[Path, Series], Bad],
    code: int,
    tmp_path: Path,
    series: Series,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = case(tmp_path, series)
    # No progress lines (a stage over 10 s on a loaded machine prints one before the error).
    assert main(["run", str(bad.pipeline), "--workers", "1", "--progress", "none"]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("icepipe: error: ")
    for text in bad.names:
        assert text in err
    assert branch_tip(tmp_path / "repo") is None


def test_cli_bad_later_run_exits_3_and_keeps_the_branch(
    ingested: tuple[Path, list[Path], str],
    tmp_path: Path,
    series: Series,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline, paths, tip = ingested
    series(1, seed=42)  # rewrite f000.nc: detected before any cluster starts
    assert main(["run", str(pipeline), "--workers", "1"]) == 3
    assert url(paths[0]) in capsys.readouterr().err
    assert branch_tip(tmp_path / "repo") == tip
