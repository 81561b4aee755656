"""`icepipe rollback`, `mv` and `rm`: the ledger follows the branch, so rolled-back files are
ingested again; moved arrays keep their (virtual or native) chunks; deletions ask first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import icechunk
import pytest
import xarray as xr
import zarr

import icepipe
from icepipe.cli import main
from tests.conftest import branch_tip, write_pipeline, write_series
from tests.ingest_checks import sources


def _run(spec: Path, client: Any) -> icepipe.RunResult:
    return icepipe.run(icepipe.load_pipeline(spec), client=client, report=False)


def test_rollback_then_run_ingests_the_undone_files_again(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_series(tmp_path / "all", 4)
    (tmp_path / "src").mkdir()
    for f in files[:2]:
        shutil.copy2(f, tmp_path / "src" / f.name)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    repo = str(tmp_path / "repo")
    first = _run(spec, client).snapshot_id
    for f in files[2:]:
        shutil.copy2(f, tmp_path / "src" / f.name)
    second = _run(spec, client)
    assert len(second.files_new) == 2

    # Compare-and-set: a rollback expecting another tip changes nothing (exit 4).
    assert main(["rollback", repo, "--to", str(first), "--expect", str(first)]) == 4
    assert branch_tip(tmp_path / "repo") == second.snapshot_id
    # Not an ancestor: a branch elsewhere.
    assert main(["branch", repo, "create", "side", str(first)]) == 0
    capsys.readouterr()

    assert main(["rollback", repo, "--to", "main~1", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["from_id"] == second.snapshot_id and done["to_id"] == first
    assert sorted(done["files"]) == sorted(second.files_new)
    assert branch_tip(tmp_path / "repo") == first

    again = _run(spec, client)
    assert sorted(again.files_new) == sorted(second.files_new)
    stored = icepipe.open_dataset(repo, group="g").load()
    xr.testing.assert_identical(stored, sources(sorted((tmp_path / "src").glob("*.nc"))))


def test_rollback_refuses_a_ref_off_the_branch_and_a_moved_branch(
    tmp_path: Path, client: Any
) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    repo_path = str(tmp_path / "repo")
    _run(spec, client)
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(repo_path))
    base = r.lookup_branch("main")
    s = r.writable_session("main")
    zarr.create_group(s.store, path="other")
    side = s.commit("a commit off main", allow_empty=True)
    r.reset_branch("main", base)  # main does not contain `side` any more
    assert main(["rollback", repo_path, "--to", side]) == 2
    from icepipe.errors import ConflictError
    from icepipe.repository import open_repo
    from icepipe.repository.edits import rollback_branch

    # Another writer commits between the read and the move: nothing changes.
    s = r.writable_session("main")
    zarr.create_group(s.store, path="late")
    late = s.commit("concurrent")
    with pytest.raises(ConflictError, match="moved"):
        rollback_branch(open_repo(repo_path), "main", base, expected=base)
    assert r.lookup_branch("main") == late


def test_mv_keeps_virtual_and_native_chunks(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_series(tmp_path / "src", 2)
    virtual = write_pipeline(tmp_path, urls="src/*.nc")
    native = write_pipeline(
        tmp_path, name="nat", urls="src/*.nc", group="n", extra="mode: native\n"
    )
    _run(virtual, client)
    _run(native, client)
    repo = str(tmp_path / "repo")
    expected = sources(files)

    assert main(["mv", repo, "/g", "/archive/g"]) == 2  # a pipeline's group: refused
    assert "pass --force" in capsys.readouterr().err
    assert main(["rm", repo, "/n", "--yes"]) == 2
    capsys.readouterr()
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(repo))
    s = r.writable_session("main")
    zarr.create_group(s.store, path="archive")
    s.commit("a parent group")
    tip = branch_tip(tmp_path / "repo")
    assert main(["mv", repo, "/g", "/archive/g", "--force"]) == 0
    assert main(["mv", repo, "/n", "/archive/n", "--force"]) == 0
    assert main(["mv", repo, "/nothing", "/x", "--force"]) == 2
    moved_v = icepipe.open_dataset(repo, group="archive/g").load()
    moved_n = icepipe.open_dataset(repo, group="archive/n").load()
    xr.testing.assert_identical(moved_v, expected)
    xr.testing.assert_identical(moved_n, expected)
    log = [c.message for c in r.ancestry(branch="main")]
    assert log[:2] == ["icepipe mv /n /archive/n", "icepipe mv /g /archive/g"]
    # The earlier snapshot still has the old layout.
    old = icepipe.open_dataset(repo, group="g", snapshot_id=tip).load()
    xr.testing.assert_identical(old, expected)


def test_rm_asks_unless_yes_and_refuses_without_a_terminal(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "src", 1)
    _run(write_pipeline(tmp_path, urls="src/*.nc"), client)
    repo = str(tmp_path / "repo")
    before = branch_tip(tmp_path / "repo")
    assert main(["rm", repo, "/g/tas", "--force"]) == 2  # pytest's stdin is no terminal
    assert "--yes" in capsys.readouterr().err
    assert branch_tip(tmp_path / "repo") == before
    assert main(["rm", repo, "/g/tas", "--force", "--yes"]) == 0
    assert "tas" not in icepipe.open_dataset(repo, group="g").variables
    assert "tas" in icepipe.open_dataset(repo, group="g", snapshot_id=before).variables
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(repo))
    assert next(iter(r.ancestry(branch="main"))).message == "icepipe rm /g/tas"


def test_reading_at_any_ref(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_series(tmp_path / "all", 2)
    (tmp_path / "src").mkdir()
    shutil.copy2(files[0], tmp_path / "src")
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    repo = str(tmp_path / "repo")
    first = _run(spec, client).snapshot_id
    assert main(["tag", repo, "v1"]) == 0
    shutil.copy2(files[1], tmp_path / "src")
    _run(spec, client)
    one = sources(files[:1])
    for how in ({"tag": "v1"}, {"ref": "main~1"}, {"ref": "tag:v1"}, {"snapshot_id": first}):
        xr.testing.assert_identical(icepipe.open_dataset(repo, group="g", **how).load(), one)
    capsys.readouterr()
    assert main(["log", repo, "--ref", "v1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == first
    assert main(["info", repo, "--ref", "main~1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snapshot_id"] == first
