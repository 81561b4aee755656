"""`icepipe schedule serve` on a real ``* * * * *`` schedule, started when the session starts.

The scheduler fires at the next full minute: up to 60 s of waiting (30 s on average, 61 s seen
in CI) that has nothing to do with what the test checks. Started by the session-wide fixture
``minute_serve`` (tests/conftest.py) before the first test, the wait overlaps the rest of the
suite; ``tests/ops/test_schedule.py::test_serve_runs_pipelines_on_a_one_minute_schedule``
then waits for the scheduler to finish and checks everything it did. Run alone, that test
waits as it always did.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from icepipe.ops.schedule import lock_path
from tests.conftest import write_pipeline, write_series

TEST_NAME = "test_serve_runs_pipelines_on_a_one_minute_schedule"
MEMORY_LIMIT = "1GiB"  # passed on to the runs


@dataclass
class MinuteServe:
    folder: Path
    log: Path
    proc: subprocess.Popen[str]
    held: IO[str]  # the lock of "busy", held as another process running it would

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.held.close()


def start(folder: Path) -> MinuteServe:
    """Three pipelines due every minute: ``good``, ``bad`` (no source files) and ``busy``
    (its lock held by this process: the scheduler must not start a second run), and the
    scheduler serving them until two runs finished.

    No cluster is named: ``good`` (two small netCDF files, virtual) is scanned in its own
    process, so that the runs, fired while other tests run, never touch the session's
    cluster (a test counting its running tasks would see theirs). ``--memory-limit`` (which
    starts no cluster) checks that the scheduler passes its run options on to each run."""
    write_series(folder / "src", 2)
    every_minute = "schedule: '* * * * *'\n"
    write_pipeline(folder, name="good", urls="src/*.nc", extra=every_minute)
    write_pipeline(folder, name="bad", urls="missing/*.nc", repo="repo2", extra=every_minute)
    write_pipeline(folder, name="busy", urls="src/*.nc", repo="repo3", extra=every_minute)
    busy = lock_path(folder / ".icepipe", "busy")
    busy.parent.mkdir(parents=True)
    held = open(busy, "w")  # noqa: SIM115 (closed by MinuteServe.stop)
    fcntl.flock(held, fcntl.LOCK_EX)
    log = folder / "serve.log"
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "icepipe.cli", "schedule", "serve", str(folder)],
            *["--max-runs", "2", "--log", str(log), "--memory-limit", MEMORY_LIMIT],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return MinuteServe(folder, log, proc, held)
