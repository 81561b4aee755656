"""`icepipe run` writes a JSON report for every run (failed ones too); `icepipe status` reads
them back with the last commit and the lag behind the sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from icepipe.cli import main
from tests.conftest import write_pipeline, write_series


def _reports(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_reports_of_success_nothing_new_and_failures(
    tmp_path: Path, client: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ICEPIPE_STATE_DIR", raising=False)
    addr = client.scheduler.address
    files = write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="rep", urls="src/*.nc")

    assert main(["run", str(spec), "--scheduler", addr, "--progress", "log"]) == 0
    out = capsys.readouterr()
    assert "report" in out.out
    runs = tmp_path / ".icepipe" / "runs" / "rep"
    (first,) = _reports(runs)
    assert first["status"] == "committed" and first["exit_code"] == 0
    assert first["bytes_new"] == sum(f.stat().st_size for f in files)
    assert len(first["files"]["new"]) == 2 and first["files"]["already_ingested"] == 0
    assert {"list", "plan", "scan", "write", "commit"} <= set(first["stages"])
    assert first["cluster"]["workers"] == 2 and first["snapshot_id"]
    assert first["repo"] == str(tmp_path / "repo") and first["error"] is None

    # "Nothing new" keeps exit code 0 unless asked otherwise.
    assert main(["run", str(spec), "--scheduler", addr, "--nothing-new-exit-code", "10"]) == 10
    assert main(["run", str(spec), "--nothing-new-exit-code", "3"]) == 2
    assert "--nothing-new-exit-code" in capsys.readouterr().err
    second = _reports(runs)[1]
    assert second["status"] == "nothing-new" and second["exit_code"] == 10
    assert second["files"]["already_ingested"] == 2

    # A failing run is reported too, with the failed file and the reason.
    (tmp_path / "src" / "f002.nc").write_bytes(b"not a netCDF file at all" * 10)
    assert main(["run", str(spec), "--scheduler", addr]) == 3
    failed = _reports(runs)[-1]
    assert failed["status"] == "failed" and failed["exit_code"] == 3
    assert failed["error"]["type"] == "SourceError"
    assert failed["files"]["failed"][0]["url"].endswith("f002.nc")
    assert "f002.nc" in failed["files"]["failed"][0]["reason"]

    # An invalid pipeline is reported under its file name; --state-dir / env override.
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nsource: {urls: 'src/*.nc'}\ntarget: {repo: repo}\n")
    monkeypatch.setenv("ICEPIPE_STATE_DIR", str(tmp_path / "state"))
    assert main(["run", str(bad)]) == 2
    (report,) = _reports(tmp_path / "state" / "runs" / "broken")
    assert report["error"]["field"] == "source.concat_dim" and report["exit_code"] == 2


def test_status_of_a_pipeline_and_a_folder(tmp_path: Path, client: Any, capsys: Any) -> None:
    addr = client.scheduler.address
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="st", urls="src/*.nc")
    (tmp_path / "broken.yaml").write_text("name: [\n")
    assert main(["status", str(spec), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)["pipelines"][0]
    assert before["runs"] == [] and before["last_commit"] is None
    assert any("no Icechunk repository" in p for p in before["problems"])
    assert before["lag"]["files_pending"] == 2

    assert main(["run", str(spec), "--scheduler", addr]) == 0
    capsys.readouterr()
    write_series(tmp_path / "late", 3)  # the same series, one file longer
    (tmp_path / "late" / "f002.nc").rename(tmp_path / "src" / "f002.nc")
    assert main(["status", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (st,) = doc["pipelines"]
    assert doc["errors"] and "broken.yaml" in doc["errors"][0]
    assert st["runs"][0]["status"] == "committed" and st["runs"][0]["files_new"] == 2
    assert st["last_commit"]["files"] == 2 and st["last_commit"]["snapshot_id"] == st["tip"]
    assert st["lag"]["files_pending"] == 1
    assert st["lag"]["last_coordinate"] == "2020-01-08T00:00:00Z"
    assert st["lag"]["mtime_lag_seconds"] >= 0

    assert main(["status", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "st  (" in text and "last runs" in text and "1 file(s) pending" in text
