"""``icepipe export kerchunk``: a virtual repository written as a kerchunk reference set, read
back by fsspec (and by icepipe itself) equal to the source data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

import icepipe
from icepipe.cli import main
from icepipe.errors import ConfigError, NotExportableError
from icepipe.ops.export import export_kerchunk
from icepipe.repository import open_repo, resolve_ref
from tests.conftest import write_pipeline, write_series


def fsspec_open(path: Path, **storage: Any) -> xr.Dataset:
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": {"fo": str(path), **storage}},
        decode_times=False,
    ).load()


def ingest(tmp_path: Path, paths: list[Path], **kw: Any) -> icepipe.Pipeline:
    p = write_pipeline(
        tmp_path, urls=[str(x) for x in paths], repo=str(tmp_path / "repo"), group="g", **kw
    )
    pipeline = icepipe.load_pipeline(p)
    icepipe.run(pipeline)
    return pipeline


def sources(paths: list[Path]) -> xr.Dataset:
    ds = xr.open_mfdataset(paths, decode_times=False, combine="nested", concat_dim="time")
    return ds.load()


@pytest.mark.parametrize("fmt", ["netcdf4", "netcdf3"])
def test_export_json_reads_back_as_the_sources(tmp_path: Path, fmt: str) -> None:
    paths = write_series(tmp_path / "src", 3, fmt=fmt)
    ingest(tmp_path, paths)
    out = tmp_path / "refs.json"
    assert main(["export", "kerchunk", str(tmp_path / "repo"), "--group", "g", str(out)]) == 0
    refs = json.loads(out.read_text())["refs"]
    assert any(isinstance(v, list) and v[0] == str(paths[0]) for v in refs.values())
    assert refs["time/0"].startswith("base64:")  # a loaded coordinate, inlined
    got = fsspec_open(out)
    xr.testing.assert_identical(
        got, icepipe.open_dataset(str(tmp_path / "repo"), group="g", decode_times=False).load()
    )
    xr.testing.assert_equal(got, sources(paths))


def test_export_parquet_and_ingest_it_again(tmp_path: Path, sample_data: Path) -> None:
    """Real NEMO files: ingest -> export as Parquet -> open with fsspec == the repository; and
    the export ingested as a kerchunk source is the same data again."""
    from fsspec.implementations.reference import LazyReferenceMapper, ReferenceFileSystem

    nemo = sorted((sample_data / "nemo").glob("*.nc"))
    p = write_pipeline(
        tmp_path,
        urls=[str(x) for x in nemo],
        repo=str(tmp_path / "repo"),
        concat_dim="time_counter",
        extra="",
    )
    order_by = ("concat_dim: time_counter", "concat_dim: time_counter\n  order_by: time_centered")
    p.write_text(p.read_text().replace(*order_by))
    icepipe.run(icepipe.load_pipeline(p))
    repo = open_repo(str(tmp_path / "repo"))
    out = tmp_path / "refs.parq"
    summary = export_kerchunk(
        repo, resolve_ref(repo, "main"), str(out), group="g", format="parquet", record_size=2
    )
    # tos of each file, the grid variables of the first; the loaded time coordinates (one
    # chunk each: a new concat coordinate is stored in 64 KiB chunks) inlined.
    assert summary.references >= 3 and summary.inlined >= 2
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g", decode_times=False).load()
    fs = ReferenceFileSystem(LazyReferenceMapper(str(out)), remote_protocol="file")
    got = xr.open_dataset(
        fs.get_mapper(), engine="zarr", consolidated=False, decode_times=False
    ).load()
    xr.testing.assert_identical(got, stored)
    (tmp_path / "again").mkdir()
    again = write_pipeline(
        tmp_path / "again",
        urls=[str(out)],
        repo=str(tmp_path / "again-repo"),
        concat_dim="time_counter",
        fmt="kerchunk",
    )
    again.write_text(again.read_text().replace(*order_by))
    icepipe.run(icepipe.load_pipeline(again))
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "again-repo"), group="g", decode_times=False).load(),
        stored,
    )


def test_native_chunks_over_the_limit_are_refused_by_name(tmp_path: Path) -> None:
    # Chunks of 8 kB: stored as chunk objects (Icechunk inlines only the smallest ones).
    paths = write_series(tmp_path / "src", 2, ny=40, nx=50)
    p = write_pipeline(
        tmp_path, urls=[str(x) for x in paths], repo=str(tmp_path / "repo"), extra="mode: native\n"
    )
    icepipe.run(icepipe.load_pipeline(p))
    repo = open_repo(str(tmp_path / "repo"))
    with pytest.raises(NotExportableError, match=r"variable 'tas' holds \d+ bytes") as info:
        export_kerchunk(
            repo, resolve_ref(repo, "main"), str(tmp_path / "o.json"), group="g", inline_limit=1000
        )
    assert info.value.variable == "tas" and info.value.exit_code == 2
    # Small enough native data are inlined: the set is then self-contained.
    out = tmp_path / "all.json"
    assert main(["export", "kerchunk", str(p), str(out), "--inline-limit", "1000000"]) == 0
    refs = json.loads(out.read_text())["refs"]
    assert all(isinstance(v, str) for k, v in refs.items() if k.startswith("tas/0"))
    xr.testing.assert_equal(fsspec_open(out), sources(paths))
    assert main(["export", "kerchunk", str(p), str(out)]) == 2  # exists: refused


def test_uneven_chunks_are_refused_by_name(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "src", 2, steps=[2, 3], time_chunk=None)
    ingest(tmp_path, paths)
    repo = open_repo(str(tmp_path / "repo"))
    with pytest.raises(NotExportableError, match="'tas' is chunked unevenly"):
        export_kerchunk(repo, resolve_ref(repo, "main"), str(tmp_path / "o.json"), group="g")


def test_an_unknown_group_is_a_config_error(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "src", 1)
    ingest(tmp_path, paths)
    repo = open_repo(str(tmp_path / "repo"))
    with pytest.raises(ConfigError):
        export_kerchunk(repo, resolve_ref(repo, "main"), str(tmp_path / "o.json"), group="nope")


def test_file_names_needing_escapes_round_trip(tmp_path: Path) -> None:
    """Icechunk stores reference URLs percent-encoded; the export writes them literally (as
    kerchunk does), and ingesting the export finds the same files again."""
    (path,) = write_series(tmp_path / "src dir", 1)
    odd = path.rename(path.with_name("a b%20c#1.nc"))
    ingest(tmp_path, [odd])
    out = tmp_path / "refs.json"
    assert main(["export", "kerchunk", str(tmp_path / "repo"), "--group", "g", str(out)]) == 0
    refs = json.loads(out.read_text())["refs"]
    urls = {v[0] for v in refs.values() if isinstance(v, list)}
    assert urls == {str(odd)}
    xr.testing.assert_equal(fsspec_open(out), sources([odd]))
    (tmp_path / "again").mkdir()
    again = write_pipeline(
        tmp_path / "again", urls=[str(out)], repo=str(tmp_path / "again-repo"), fmt="kerchunk"
    )
    icepipe.run(icepipe.load_pipeline(again))
    got = icepipe.open_dataset(str(tmp_path / "again-repo"), group="g", decode_times=False)
    xr.testing.assert_equal(got.load(), sources([odd]))
