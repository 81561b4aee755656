"""`icepipe validate` compares stored data with the sources; `icepipe run --stage` publishes a
validated stage branch with a compare-and-set, or leaves the target branch alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe import repository
from icepipe.cli import main
from icepipe.errors import ConflictError
from icepipe.ops.stage import run_staged
from tests.conftest import branch_tip, write_pipeline, write_series


def test_validate_passes_then_names_the_changed_file_and_variable(
    tmp_path: Path, client: Any, capsys: Any
) -> None:
    write_series(tmp_path / "src", 3)
    spec = write_pipeline(tmp_path, name="val", urls="src/*.nc")
    assert main(["run", str(spec), "--scheduler", client.scheduler.address]) == 0
    capsys.readouterr()
    assert main(["validate", str(spec), "--all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["files_checked"]) == 3 and report["variables_checked"] == 12

    # A file replaced after ingest: its virtual references no longer resolve.
    write_series(tmp_path / "other", 3, seed=42)
    (tmp_path / "other" / "f001.nc").replace(tmp_path / "src" / "f001.nc")
    assert main(["validate", str(spec), "--sample", "2"]) == 0  # first and last only
    capsys.readouterr()
    assert main(["validate", str(spec), "--all"]) == 6
    err = capsys.readouterr().err
    assert "f001.nc: variable 'tas' cannot be read from the repository" in err
    assert "context:" not in err

    # A source file that disappeared cannot be read back either.
    (tmp_path / "src" / "f002.nc").unlink()
    assert main(["validate", str(spec), "--sample", "3"]) == 6
    err = capsys.readouterr().err
    assert "2 of 3 checked file(s) differ" in err and "f001.nc" in err
    assert "f002.nc: the source file cannot be read back" in err


def test_validate_native_ingest_finds_values_that_differ(
    tmp_path: Path, client: Any, capsys: Any
) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(
        tmp_path, name="nat", urls="src/*.nc", extra="mode: native\nchunks: {time: 3}\n"
    )
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert main(["validate", str(spec), "--all"]) == 0
    assert "OK, 2 of 2" in capsys.readouterr().out
    # The rewritten copy no longer matches a source file that changed since.
    write_series(tmp_path / "other", 2, seed=42)
    (tmp_path / "other" / "f001.nc").replace(tmp_path / "src" / "f001.nc")
    assert main(["validate", str(spec), "--all"]) == 6
    assert "f001.nc: variable 'tas' differs at time[4:8], index" in capsys.readouterr().err


def test_stage_publishes_only_after_validation(tmp_path: Path, client: Any, capsys: Any) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="stg", urls="src/*.nc")
    args = ["run", str(spec), "--scheduler", client.scheduler.address, "--stage", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "committed" and out["branch"] == "main"
    assert {"validate", "publish"} <= set(out["stages"])
    assert branch_tip(tmp_path / "repo") == out["snapshot_id"]
    repo = repository.open_repo(str(tmp_path / "repo"))
    assert sorted(repo.list_branches()) == ["main"]  # the stage branch is gone
    report = json.loads(Path(out["report_file"]).read_text())
    assert report["stage_branch"].startswith("stage/stg-")
    # Nothing new: no commit, no branch left behind.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "nothing-new"
    assert sorted(repository.open_repo(str(tmp_path / "repo")).list_branches()) == ["main"]


class _MoveMainDuringValidation:
    """A second writer commits to main while the staged run validates."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.moved_to: str | None = None

    def stage_started(self, stage: str, client: Any) -> None:
        if stage == "validate":
            ds = xr.Dataset({"x": ("i", np.arange(3))})
            self.moved_to = icepipe.to_icechunk(ds, str(self.repo), group="other", mode="w")

    def stage_finished(self, stage: str, seconds: float) -> None:
        pass


def test_stage_compare_and_set_fails_cleanly_when_main_moved(
    tmp_path: Path, client: Any, capsys: Any
) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="cas", urls="src/*.nc")
    pipeline = icepipe.load_pipeline(spec)
    mover = _MoveMainDuringValidation(tmp_path / "repo")
    with pytest.raises(ConflictError) as info:
        run_staged(pipeline, client=client, run_id="0123456789abcdef", observer=mover)
    assert info.value.exit_code == 4
    assert "stage/cas-0123456789ab" in str(info.value)
    repo = repository.open_repo(str(tmp_path / "repo"))
    # main holds the other writer's commit only; the validated data waits on the stage branch.
    assert repo.lookup_branch("main") == mover.moved_to
    assert "stage/cas-0123456789ab" in repo.list_branches()
    staged = icepipe.open_dataset(
        str(tmp_path / "repo"), branch="stage/cas-0123456789ab", group="g"
    )
    assert staged.sizes["time"] == 8
    assert main(["log", str(tmp_path / "repo")]) == 0
    assert "cas" not in capsys.readouterr().out  # no ingest commit on main


def test_validate_times_xarray_cannot_decode(
    tmp_path: Path, sample_data: Path, capsys: Any
) -> None:
    """Real parts of ncarg's hgt.nc ("months since 1958-1-1" in the standard calendar, which
    xarray refuses to decode): validation compared them undecoded instead of crashing."""
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted((sample_data / "corpus-splits" / "cdf" / "hgt").glob("*.nc")):
        shutil.copy(f, src / f.name)
    spec = write_pipeline(tmp_path, name="hgt", urls="src/*.nc")
    assert main(["run", str(spec)]) == 0
    capsys.readouterr()
    assert main(["validate", str(spec), "--all", "--json"]) == 0  # was a ValueError traceback
    report = json.loads(capsys.readouterr().out)
    assert len(report["files_checked"]) == 4 and report["variables_checked"] > 4
    with pytest.raises(ValueError, match="unable to decode time units"):
        icepipe.open_dataset(str(tmp_path / "repo"), group="g")
    ds = icepipe.open_dataset(str(tmp_path / "repo"), group="g", decode_times=False)
    assert "months since" in ds["time"].attrs["units"]

    # A value changed in one file after ingest is named, undecoded times and all.
    part = src / "hgt-p01.nc"
    with xr.open_dataset(part, decode_times=False) as f:
        changed = f.load()
    name = next(n for n, v in changed.data_vars.items() if "time" in v.dims and v.size > 1)
    changed[name].values[...] = changed[name].values + 1
    part.unlink()
    changed.to_netcdf(part, format="NETCDF3_CLASSIC")
    assert main(["validate", str(spec), "--all"]) == 6
    err = capsys.readouterr().err
    assert "hgt-p01.nc" in err and "Traceback" not in err


def test_validate_at_a_ref_reads_that_snapshot_and_its_ledger(tmp_path: Path, capsys: Any) -> None:
    """`validate --ref main~1` compares the data stored one commit back with the files ingested
    up to it: a file only the later commit ingested, since deleted, fails at the tip only."""
    write_series(tmp_path / "all", 3)
    (tmp_path / "src").mkdir()
    for name in ("f000.nc", "f001.nc"):
        shutil.copy2(tmp_path / "all" / name, tmp_path / "src" / name)
    spec = write_pipeline(tmp_path, name="refs", urls="src/*.nc")
    assert main(["run", str(spec)]) == 0
    first = branch_tip(tmp_path / "repo")
    shutil.copy2(tmp_path / "all" / "f002.nc", tmp_path / "src" / "f002.nc")
    assert main(["run", str(spec)]) == 0
    (tmp_path / "src" / "f002.nc").unlink()
    capsys.readouterr()

    assert main(["validate", str(spec), "--all", "--ref", "main~1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["snapshot_id"] == first and report["ref"] == "main~1"
    assert report["files_ingested"] == 2 and len(report["files_checked"]) == 2
    assert main(["validate", str(spec), "--all", "--ref", str(first)]) == 0
    assert f"[{first}]" in capsys.readouterr().out
    assert main(["validate", str(spec), "--all"]) == 6  # the tip still lists f002.nc
    assert "f002.nc" in capsys.readouterr().err

    assert main(["validate", str(spec), "--ref", "main~5"]) == 2
    assert "fewer than 5 ancestors" in capsys.readouterr().err
    assert main(["validate", str(spec), "--ref", "main~1", "--branch", "main"]) == 2
    assert "--branch or --ref, not both" in capsys.readouterr().err
