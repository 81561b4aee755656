"""`icepipe status` as an alert check (exit 10 failing, 11 late, 12 behind), on the reports
of real runs, including those started from Python with `icepipe.run()`."""

from __future__ import annotations

import json
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import icepipe
from icepipe.cli import main
from icepipe.ops.status import check_alerts, pipeline_status
from tests.conftest import write_pipeline, write_series


def _status(spec: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["status", str(spec), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_alerts_on_real_runs(
    tmp_path: Path,
    client: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ICEPIPE_STATE_DIR", raising=False)
    files = write_series(tmp_path / "all", 4)
    (tmp_path / "src").mkdir()
    shutil.copy2(files[0], tmp_path / "src")
    spec = write_pipeline(tmp_path, urls="src/*.nc")

    # A run from Python writes the same report as the CLI: status sees it.
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.report_file and Path(result.report_file).parent == (
        tmp_path / ".icepipe" / "runs" / "test"
    )
    report = json.loads(Path(result.report_file).read_text())
    assert report["status"] == "committed" and report["argv"] == ["icepipe.run()"]
    assert report["files"]["new"] == list(result.files_new)
    code, doc = _status(spec, "--max-age", "1h", "--max-pending", "0", capsys=capsys)
    assert code == 0 and doc["alerts"] == []
    assert doc["pipelines"][0]["runs"][0]["report_file"] == result.report_file
    # Without alert options status keeps exiting 0 and prints no alerts.
    code, doc = _status(spec, capsys=capsys)
    assert code == 0 and "alerts" not in doc

    time.sleep(1.2)
    code, doc = _status(spec, "--max-age", "1s", capsys=capsys)
    assert code == 11 and [a["kind"] for a in doc["alerts"]] == ["late"]

    for f in files[1:3]:
        shutil.copy2(f, tmp_path / "src")
    code, doc = _status(spec, "--max-pending", "1", capsys=capsys)
    assert code == 12
    assert "2 source file(s) pending" in doc["alerts"][0]["reason"]
    assert _status(spec, "--max-pending", "2", capsys=capsys)[0] == 0

    # A failed run (a file that is not netCDF): failing wins over behind.
    (tmp_path / "src" / "f009.nc").write_bytes(b"not a netCDF file" * 10)
    assert main(["run", str(spec), "--scheduler", client.scheduler.address]) == 3
    code, doc = _status(spec, "--check", "--max-pending", "0", capsys=capsys)
    assert code == 10
    assert [a["kind"] for a in doc["alerts"]] == ["failing", "behind"]
    capsys.readouterr()
    assert main(["status", str(spec), "--check"]) == 10
    assert "ALERT test: failing: last run" in capsys.readouterr().out


def test_late_against_the_schedule(tmp_path: Path, client: Any) -> None:
    write_series(tmp_path / "src", 1)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="schedule: '@hourly'\n")
    pipeline = icepipe.load_pipeline(spec)
    never = pipeline_status(pipeline, state=str(tmp_path / "state"))
    assert [a.kind for a in check_alerts(never, pipeline)] == ["late"]  # never ran

    icepipe.run(pipeline, client=client, state_dir=str(tmp_path / "state"))
    status = pipeline_status(pipeline, state=str(tmp_path / "state"))
    finished = status.runs[0]["finished_at"]
    from datetime import datetime

    ran = datetime.fromisoformat(finished.replace("Z", "+00:00"))
    grace = timedelta(minutes=10)
    # Before the next hour's run is due (plus grace): on time.
    next_hour = ran.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert check_alerts(status, pipeline, grace=grace, now=next_hour + timedelta(minutes=5)) == []
    # The next hourly run should have finished by now: late.
    late = check_alerts(status, pipeline, grace=grace, now=next_hour + timedelta(minutes=11))
    assert [a.kind for a in late] == ["late"]
    assert "no successful run since the scheduled time" in late[0].reason
