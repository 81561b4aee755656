"""Reading repositories whose arrays have rectilinear chunk grids (files of uneven length, one
chunk each, issue 13): ``icepipe.open_dataset`` (locally and on a distributed cluster),
``icepipe info``, ``validate`` and ``status``.

The repositories are built file by file (one commit each, with ledger records) by
``tests/rectilinear_repo.py`` from generated daily files in yearly files across the leap year
2020 (365, 366, 365 days), so the readers are tested without depending on the writer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe import repository
from icepipe.cli import main
from icepipe.ops.render import render_tree
from icepipe.ops.status import pipeline_status
from icepipe.ops.validate import validate_pipeline
from tests.conftest import write_pipeline
from tests.rectilinear_repo import write_virtual_rectilinear
from tests.uneven_series import (
    Layout,
    write_daily_files,
    write_forecast_series,
    write_monthly_daily,
    write_yearly_daily,
    yearly_periods,
)


@pytest.fixture(scope="module")
def yearly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A virtual repository of daily data in yearly files 2019-2021: ``(folder, files)``;
    the repository is ``folder/repo``, group ``g``."""
    folder = tmp_path_factory.mktemp("yearly")
    files = write_yearly_daily(folder / "src")
    write_virtual_rectilinear(folder / "repo", files)
    return folder, files


def _expected(files: list[Path]) -> xr.Dataset:
    return xr.open_mfdataset(files, combine="nested", concat_dim="time").load()


def test_open_dataset_reads_a_rectilinear_virtual_array(yearly: tuple[Path, list[Path]]) -> None:
    folder, files = yearly
    ds = icepipe.open_dataset(str(folder / "repo"), group="g")
    xr.testing.assert_identical(ds.load(), _expected(files).assign_attrs(ds.attrs))
    lazy = icepipe.open_dataset(str(folder / "repo"), group="g", chunks={})
    assert lazy.tas.chunks == ((365, 366, 365), (2,), (3,))
    assert str(lazy.time.values[365 + 59])[:10] == "2020-02-29"


def test_open_dataset_on_a_distributed_cluster(
    yearly: tuple[Path, list[Path]], client: Any
) -> None:
    """The workers unpickle the parsed arrays: they need no flag of their own."""
    folder, files = yearly
    ds = icepipe.open_dataset(str(folder / "repo"), group="g", chunks={})
    per_year = ds.tas.groupby("time.year").sum().compute()  # the default scheduler: the client
    want = _expected(files).tas.groupby("time.year").sum()
    np.testing.assert_allclose(per_year.values, want.values, rtol=1e-6)
    got = client.compute(ds.tas.data[365:731]).result()
    np.testing.assert_array_equal(got, _expected(files).tas.values[365:731])


def test_info_shows_the_grid_and_virtual_chunks(
    yearly: tuple[Path, list[Path]], capsys: Any
) -> None:
    folder, _ = yearly
    repo = repository.open_repo(str(folder / "repo"))
    nodes = {n.path: n for n in repository.tree_info(repo, repo.lookup_branch("main"))}
    tas = nodes["/g/tas"]
    assert tas.edges == ((365, 366, 365), None, None) and tas.chunks == (366, 2, 3)
    assert (tas.grid, tas.virtual, tas.native) == (3, 3, 0)
    assert nodes["/g/lat"].edges is None
    exact = {n.path: n for n in repository.tree_info(repo, repo.lookup_branch("main"), exact=True)}
    assert exact["/g/tas"] == tas

    assert main(["info", str(folder / "repo")]) == 0
    out = capsys.readouterr().out
    assert "tas (time, lat, lon) 1096 x 2 x 3 float32 chunks (365,366,365)x2x3" in out
    assert "3/3 stored (virtual 100%)" in out
    assert main(["info", str(folder / "repo"), "--json"]) == 0
    doc = {n["path"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert doc["/g/tas"]["edges"] == [[365, 366, 365], None, None]
    assert doc["/g/tas"]["empty"] == 0


def test_info_summarises_long_grids() -> None:
    node = repository.ArrayInfo(
        path="/g/tas",
        shape=(365 * 4 + 1, 2),
        dtype="float32",
        dims=("time", "x"),
        chunks=(366, 2),
        edges=((365, 365, 365, 366), None),
        grid=4,
        virtual=4,
    )
    assert "chunks (365*3,366)x2: 4/4 stored" in render_tree([node], header="h")
    monthly = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    node = repository.ArrayInfo(
        path="/t", shape=(365,), dtype="f8", chunks=(31,), edges=(monthly,), grid=12
    )
    assert "chunks (12 chunks 28-31): 0/12 stored (nothing written)" in render_tree(
        [node], header="h"
    )


def _pipeline(folder: Path, name: str = "rect") -> Path:
    return write_pipeline(folder, name=name, urls="src/*.nc", fmt="netcdf4")


def test_validate_compares_every_file_of_a_rectilinear_array(tmp_path: Path, capsys: Any) -> None:
    files = write_monthly_daily(tmp_path / "src", 2020, (1, 2, 3))  # 31, 29, 31 days
    write_virtual_rectilinear(tmp_path / "repo", files, pipeline="rect")
    spec = _pipeline(tmp_path)
    report = validate_pipeline(icepipe.load_pipeline(spec), sample=None)
    assert report.files_checked == [f"file://{p}" for p in files]
    # tas (n x 2 x 3), time (n), lat (2), lon (3) per file
    assert report.values_checked == sum(n * 7 + 5 for n in (31, 29, 31))

    # The middle file replaced after ingest: its virtual references no longer resolve.
    (other,) = write_monthly_daily(tmp_path / "other", 2020, (2,))
    later = other.stat().st_mtime + 60  # surely after the references were recorded
    os.utime(other, (later, later))
    other.replace(files[1])
    assert main(["validate", str(spec), "--all"]) == 6
    err = capsys.readouterr().err
    assert f"{files[1].name}: variable 'tas' cannot be read from the repository" in err
    assert files[0].name not in err and files[2].name not in err


def test_status_reads_the_last_coordinate(yearly: tuple[Path, list[Path]]) -> None:
    folder, _ = yearly
    st = pipeline_status(icepipe.load_pipeline(_pipeline(folder)))
    assert st.problems == []
    assert st.lag["last_coordinate"] == "2021-12-31T00:00:00Z"
    assert st.lag["files_ingested"] == 3 and st.lag["files_pending"] == 0
    assert st.last_commit is not None and st.last_commit["files"] == 1


def test_readers_after_pipeline_runs_on_real_monthly_files(
    sample_data: Path, tmp_path: Path, client: Any, capsys: Any
) -> None:
    """Real daily files, one per month (31, 31, 28, 31, 30, 31 days), ingested virtually by
    two pipeline runs: info, validate, status and open_dataset read the rectilinear arrays."""
    real = sorted((sample_data / "uneven-splits" / "chi200-monthly").glob("*.nc"))
    (tmp_path / "src").mkdir()
    spec = write_pipeline(tmp_path, name="chi", urls="src/*.nc", fmt="netcdf3")
    for batch in (real[:2], real[2:]):
        for p in batch:
            (tmp_path / "src" / p.name).write_bytes(p.read_bytes())
        assert main(["run", str(spec), "--scheduler", client.scheduler.address]) == 0
    capsys.readouterr()

    assert main(["info", str(tmp_path / "repo")]) == 0
    out = capsys.readouterr().out
    assert "CHI (time, lon) 182 x 128 float32 chunks (31*2,28,31,30,31)x128: 6/6 stored " in out
    assert "(virtual 100%)" in out
    assert main(["validate", str(spec), "--all"]) == 0
    assert "OK, 6 of 6" in capsys.readouterr().out
    st = pipeline_status(icepipe.load_pipeline(spec))
    assert st.problems == [] and st.lag["files_pending"] == 0
    assert st.lag["last_coordinate"] == 181  # 'days' without a date: raw values

    files = sorted((tmp_path / "src").glob("*.nc"))
    ds = icepipe.open_dataset(str(tmp_path / "repo"), group="g", chunks={})
    assert ds.CHI.chunks == ((31, 31, 28, 31, 30, 31), (128,))
    want = xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal")
    xr.testing.assert_equal(ds.CHI.load(), want.CHI.load())
    np.testing.assert_array_equal(ds.date.values, want.date.values)


def test_readers_on_padded_last_chunks_and_forecast_steps(
    tmp_path: Path, client: Any, capsys: Any
) -> None:
    """HDF5 files chunked along time: 2020 in chunks of 61 (6 whole chunks), then 2021 in
    chunks of 100, whose last chunk is stored padded (it ends the array, so it is allowed);
    and forecast files of 6, 12, 3 and 9 hourly steps. Reads never show the padding."""
    first = write_daily_files(tmp_path / "src", yearly_periods([2020]), layout=Layout(chunk=61))
    last = write_daily_files(tmp_path / "src", yearly_periods([2021]), layout=Layout(chunk=100))
    spec = write_pipeline(tmp_path, name="pad", urls="src/*.nc", fmt="netcdf4")
    forecasts = write_forecast_series(tmp_path / "fc")
    spec_fc = write_pipeline(tmp_path, name="fc", urls="fc/*.nc", fmt="netcdf4", repo="fc-repo")
    for s in (spec, spec_fc):
        assert main(["run", str(s), "--scheduler", client.scheduler.address]) == 0
    capsys.readouterr()

    assert main(["info", str(tmp_path / "repo")]) == 0
    assert "chunks (61*6,100*3,65)x2x3: 10/10 stored (virtual 100%)" in capsys.readouterr().out
    ds = icepipe.open_dataset(str(tmp_path / "repo"), group="g", chunks={})
    assert ds.tas.chunks[0] == (61,) * 6 + (100, 100, 100, 65)
    xr.testing.assert_equal(ds.tas.load(), _expected(first + last).tas)
    assert main(["validate", str(spec), "--all"]) == 0

    assert main(["info", str(tmp_path / "fc-repo")]) == 0
    assert "tas (time, lat, lon) 30 x 2 x 3 float32 chunks (6,12,3,9)x2x3: 4/4" in (
        capsys.readouterr().out
    )
    fc = icepipe.open_dataset(str(tmp_path / "fc-repo"), group="g")
    xr.testing.assert_equal(fc.tas.load(), _expected(forecasts).tas)
    assert main(["validate", str(spec_fc), "--all"]) == 0
