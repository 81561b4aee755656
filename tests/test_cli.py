"""The `icepipe` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_pipeline, write_series

ICEPIPE = [sys.executable, "-m", "icepipe.cli"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ICEPIPE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_run_then_nothing_new_then_log(tmp_path: Path) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="cli-demo", urls="src/*.nc")
    first = _run("run", str(spec), "--workers", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "ingested 2 new file(s)" in first.stdout
    assert "snapshot" in first.stdout and "time=8" in first.stdout

    second = _run("run", str(spec), "--workers", "1", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["status"] == "nothing-new"

    log = _run("log", str(tmp_path / "repo"), cwd=tmp_path)
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    assert "cli-demo" in lines[1] and " 2 " in lines[1]
    assert "Repository initialized" in lines[2]


def test_log_of_missing_repo_is_a_config_error(tmp_path: Path) -> None:
    out = _run("log", str(tmp_path / "nope"), cwd=tmp_path)
    assert out.returncode == 2
    assert "no Icechunk repository" in out.stderr
