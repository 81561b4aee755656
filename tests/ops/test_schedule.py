"""Schedules: validation, exports for cron/systemd/Kubernetes, and the embedded scheduler
running real pipelines on a real 1-minute cron schedule."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import icepipe
from icepipe.cli import main
from icepipe.cron import Schedule, parse_schedule
from icepipe.errors import ConfigError
from icepipe.ops.schedule import lock_path, systemd_calendar
from tests.conftest import write_pipeline
from tests.ops.minute_serve import MEMORY_LIMIT

ICEPIPE = [sys.executable, "-m", "icepipe.cli"]


@pytest.mark.parametrize(
    ("raw", "field", "match"),
    [
        ("0 2 * *", "schedule", "expected 5 fields"),
        ("0 25 * * *", "schedule", "out of range"),
        ("0 2 L * *", "schedule", "not portable"),
        ("0 0 31 2 *", "schedule", "never fires"),
        ("@reboot", "schedule", "unknown macro"),
        (42, "schedule", "expected a cron expression"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Base"}, "schedule.timezone", "unknown time"),
        ({"cron": "0 2 * * *", "tz": "UTC"}, "schedule.tz", "unknown key"),
        ({"timezone": "UTC"}, "schedule.cron", "expected a cron expression"),
    ],
)
def test_bad_schedules_name_the_field(raw: Any, field: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_schedule(raw)
    assert info.value.field == field


def test_schedules_in_pipelines(tmp_path: Path) -> None:
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra='schedule: "@daily"\n')
    assert icepipe.load_pipeline(spec).schedule == Schedule("@daily", "UTC")
    spec.write_text(spec.read_text().replace('"@daily"', "{cron: '0 2 * * *', timezone: X/Y}"))
    with pytest.raises(ConfigError) as info:
        icepipe.load_pipeline(spec)
    assert info.value.field == "schedule.timezone"
    paris = Schedule("0 2 * * *", "Europe/Paris")
    nxt = paris.next_after(datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert nxt.astimezone(UTC) == datetime(2026, 7, 2, 0, tzinfo=UTC)  # 02:00 CEST


@pytest.mark.parametrize(
    "cron",
    ["0 2 * * *", "*/15 9-17 * * mon-fri", "0 0 1,15 * 0", "5 4 * jan,jul sun", "30 6 * * 1-5"],
)
def test_systemd_calendars_fire_when_cron_does(cron: str) -> None:
    schedule = Schedule(cron, "Europe/Paris")
    calendars = systemd_calendar(schedule)
    assert all(c.endswith(" Europe/Paris") for c in calendars)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # the translation is still checked by the other assertions
        return
    out = subprocess.run(
        [analyze, "calendar", "--iterations=5", *calendars],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC", "SYSTEMD_COLORS": "0"},
    ).stdout
    fired: set[datetime] = set()
    for line in out.splitlines():
        if "elapse:" in line or line.strip().startswith("Iter."):
            stamp = " ".join(line.split(":", 1)[1].split()[1:3])
            fired.add(datetime.fromisoformat(stamp).replace(tzinfo=UTC))
    expected: list[datetime] = []
    t = datetime.now(UTC)
    for _ in range(5):
        t = schedule.next_after(t).astimezone(UTC)
        expected.append(t)
    assert sorted(fired)[:5] == expected


def test_exports(tmp_path: Path, capsys: Any) -> None:
    write_pipeline(
        tmp_path,
        name="nightly",
        urls="src/*.nc",
        extra="schedule: {cron: '0 2 * * *', timezone: Europe/Paris}\n",
    )
    write_pipeline(tmp_path, name="hourly", urls="src/*.nc", extra="schedule: '@hourly'\n")
    write_pipeline(tmp_path, name="manual", urls="src/*.nc")
    assert main(["schedule", "export", str(tmp_path), "--format", "cron"]) == 0
    cron = capsys.readouterr().out
    assert "CRON_TZ=Europe/Paris\n0 2 * * * flock -n " in cron
    assert "CRON_TZ=UTC\n0 * * * * flock -n " in cron
    assert str(lock_path(tmp_path / ".icepipe", "nightly")) in cron
    assert f"run {tmp_path}/nightly.yaml" in cron and "manual" not in cron

    out = tmp_path / "units"
    args = ["schedule", "export", str(tmp_path), "--format", "systemd", "--output-dir", str(out)]
    assert main([*args, "--nothing-new-exit-code", "10"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4  # the files written
    timer = (out / "icepipe-nightly.timer").read_text()
    service = (out / "icepipe-nightly.service").read_text()
    assert "OnCalendar=*-*-* 02:00:00 Europe/Paris" in timer and "Persistent=true" in timer
    assert "Type=oneshot" in service and "RestartPreventExitStatus=2 3 6" in service
    assert "--nothing-new-exit-code 10" in service

    assert (
        main(
            [
                *["schedule", "export", str(tmp_path), "--format", "kubernetes"],
                *["--image", "reg/icepipe:1", "--configmap", "pipes", "--pipeline-dir", "/p"],
            ]
        )
        == 0
    )
    jobs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(capsys.readouterr().out)}
    job = jobs["icepipe-nightly"]
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["schedule"] == "0 2 * * *" and job["spec"]["timeZone"] == "Europe/Paris"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["icepipe", "run", "/p/nightly.yaml"]
    assert pod["volumes"][0]["configMap"]["name"] == "pipes"
    assert jobs["icepipe-hourly"]["spec"]["schedule"] == "0 * * * *"

    assert main(["schedule", "export", str(tmp_path / "manual.yaml"), "--format", "cron"]) == 2


def _serve(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ICEPIPE, "schedule", "serve", str(folder), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_stops_on_sigterm_and_at_until(tmp_path: Path) -> None:
    write_pipeline(tmp_path, name="yearly", urls="src/*.nc", extra="schedule: '0 0 1 1 *'\n")
    log = tmp_path / "serve.log"
    term = _serve(tmp_path, "--log", str(log))
    until = _serve(tmp_path, "--until", "2s", "--log", str(tmp_path / "until.log"))
    deadline = time.monotonic() + 60
    while "scheduled yearly" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and term.poll() is None
        time.sleep(0.2)
    term.send_signal(signal.SIGTERM)
    assert term.wait(timeout=30) == 0
    assert until.wait(timeout=60) == 0
    text = log.read_text()
    assert "received SIGTERM: stopping" in text and "scheduler stopped" in text
    assert "--until" in (tmp_path / "until.log").read_text()


def test_serve_runs_pipelines_on_a_one_minute_schedule(minute_serve: Any, capsys: Any) -> None:
    """Real cron path: `* * * * *`, the scheduler waits for the next minute (up to ~60 s). It
    was started with the session (tests/ops/minute_serve.py: three pipelines, "busy" locked
    by the test process), so most or all of that wait has passed by now."""
    assert minute_serve is not None  # started by the session-wide fixture
    proc = minute_serve.proc
    try:
        assert proc.wait(timeout=150) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    tmp_path, log = minute_serve.folder, minute_serve.log
    text = log.read_text()
    assert "good: finished with exit code 0 (success)" in text
    assert "bad: finished with exit code 3 (bad source data)" in text  # the scheduler survived
    assert "busy: due at" in text and "another process holds" in text
    assert "good | good: ingested 2 new file(s)" in text
    # The run's command line, with the options given to the scheduler.
    assert f"run {tmp_path / 'good.yaml'} " in text
    assert f"--memory-limit {MEMORY_LIMIT}" in text

    assert main(["status", str(tmp_path), "--json"]) == 0
    by_name = {p["pipeline"]: p for p in json.loads(capsys.readouterr().out)["pipelines"]}
    assert by_name["good"]["runs"][0]["status"] == "committed"
    assert by_name["good"]["schedule"] == "* * * * * (UTC)"
    assert by_name["bad"]["runs"][0]["exit_code"] == 3
    assert by_name["busy"]["runs"] == []


def test_exports_pass_cluster_options_to_every_run(tmp_path: Path, capsys: Any) -> None:
    """`--cluster` and `--memory-limit` reach the runs' command lines as `icepipe run` takes
    them; without them a pipeline's own `cluster:` is left to apply."""
    write_pipeline(
        tmp_path,
        name="nightly",
        urls="src/*.nc",
        extra="schedule: '0 2 * * *'\ncluster: clusters:slurm\n",
    )
    export = ["schedule", "export", str(tmp_path)]
    assert main([*export, "--format", "cron", "--cluster", "clusters:pbs"]) == 0
    assert f"run {tmp_path}/nightly.yaml --cluster clusters:pbs" in capsys.readouterr().out
    out = tmp_path / "units"
    args = [*export, "--format", "systemd", "--output-dir", str(out)]
    assert main([*args, "--workers", "2", "--memory-limit", "4GiB"]) == 0
    capsys.readouterr()
    service = (out / "icepipe-nightly.service").read_text()
    assert "--workers 2 --memory-limit 4GiB" in service
    assert main([*export, "--format", "kubernetes", "--memory-limit", "2GiB"]) == 0
    (job,) = yaml.safe_load_all(capsys.readouterr().out)
    command = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-2:] == ["--memory-limit", "2GiB"]
    assert main([*export, "--format", "cron"]) == 0
    assert "--cluster" not in capsys.readouterr().out  # the pipeline's cluster: applies

    # Checked before anything is written or scheduled, by export and serve alike.
    for command_ in ([*export, "--format", "cron"], ["schedule", "serve", str(tmp_path)]):
        assert main([*command_, "--memory-limit", "lots"]) == 2
        assert "--memory-limit" in capsys.readouterr().err
        assert main([*command_, "--scheduler", "tcp://h:8786", "--cluster", "m:f"]) == 2
        assert "either --scheduler" in capsys.readouterr().err
