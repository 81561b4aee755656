"""Scheduled ingests: an embedded scheduler (``icepipe schedule serve``) and exports of the
pipelines' ``schedule:`` fields for cron, systemd timers and Kubernetes CronJobs
(``icepipe schedule export``).

Every scheduled run is a plain ``icepipe run PIPELINE.yaml`` in its own process, so the exit
codes, run reports and guarantees are those of a manual run. One pipeline never runs twice at
once: its runs hold an OS lock, ``<state>/locks/<name>.lock`` (an inherited ``flock``: held
until the run exits, even if the scheduler dies first). The cron export takes the same lock
with ``flock -n``, systemd never starts a unit that is still active, and the Kubernetes export
sets ``concurrencyPolicy: Forbid``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import yaml

from icepipe.cron import Schedule
from icepipe.errors import ConfigError
from icepipe.locks import require_posix, try_lock

# NO_RETRY_EXIT_CODES: exit codes a person must look at (config, source data, validation).
from icepipe.ops.kubernetes import NO_RETRY_EXIT_CODES, KubernetesOptions, cronjobs
from icepipe.ops.reports import state_dir
from icepipe.ops.status import find_pipelines
from icepipe.spec import load_pipeline

__all__ = [
    "ExportFormat",
    "ScheduledPipeline",
    "Scheduler",
    "export_schedules",
    "load_scheduled",
    "lock_path",
    "systemd_calendar",
]

ExportFormat = Literal["cron", "systemd", "kubernetes"]
_DOW = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


@dataclass(frozen=True)
class ScheduledPipeline:
    """A pipeline file with a ``schedule:``."""

    path: Path
    name: str
    schedule: Schedule


def load_scheduled(
    path: str | os.PathLike[str],
) -> tuple[list[ScheduledPipeline], list[str]]:
    """The pipelines with a schedule in a folder (or one file), and notes about the others.

    Raises
    ------
    ConfigError
        A pipeline file is invalid, two pipelines share a name (their locks and reports would
        collide), or none has a schedule.
    """
    files = find_pipelines(path)
    if not files:
        raise ConfigError(f"no pipeline files (*.yaml, *.yml) in {str(path)!r}")
    out: list[ScheduledPipeline] = []
    notes: list[str] = []
    seen: dict[str, Path] = {}
    for f in files:
        try:
            p = load_pipeline(f)
        except ConfigError as exc:
            raise ConfigError(f"{f}: {exc}", field=exc.field) from exc
        if p.name in seen:
            raise ConfigError(
                f"{f} and {seen[p.name]} are both named {p.name!r}: scheduled pipelines need "
                "distinct names (locks and run reports are per name)",
                field="name",
            )
        seen[p.name] = f
        if p.schedule is None:
            notes.append(f"{f}: no schedule, not scheduled")
            continue
        out.append(ScheduledPipeline(path=f.absolute(), name=p.name, schedule=p.schedule))
    if not out:
        raise ConfigError(
            f'no pipeline in {str(path)!r} has a schedule; add e.g. `schedule: "0 2 * * *"`',
            field="schedule",
        )
    return out, notes


def lock_path(state: Path, name: str) -> Path:
    """The OS lock file that keeps two runs of pipeline ``name`` apart."""
    return state / "locks" / f"{name}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``path``, or ``None`` when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not try_lock(fd):
        os.close(fd)
        return None
    return fd


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _Child:
    pipeline: ScheduledPipeline
    proc: subprocess.Popen[str]
    lock_fd: int
    started: float
    reader: threading.Thread
    extra: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """Runs due pipelines as subprocesses until stopped (see ``icepipe schedule serve``).

    Parameters
    ----------
    pipelines
        What to schedule (:func:`load_scheduled`).
    state
        The state folder (run reports and locks), passed to every run as ``--state-dir``.
    run_args
        Extra arguments of every ``icepipe run`` (``--workers 2``, ...).
    logger
        Where the scheduler and the runs' output are logged.
    max_runs
        Stop once this many runs have finished (and start no more than that).
    until
        Stop at this time (runs in progress are waited for).
    once
        Stop after the runs of the first fire time have finished.
    grace
        On SIGTERM/SIGINT, how long to wait for runs in progress before interrupting them
        (they then exit without committing, code 130).

    Raises
    ------
    ConfigError
        On Windows: the scheduler relies on POSIX locks its runs inherit, and on process
        groups (:func:`icepipe.locks.require_posix`).
    """

    def __init__(
        self,
        pipelines: Sequence[ScheduledPipeline],
        *,
        state: Path,
        run_args: Sequence[str] = (),
        logger: logging.Logger | None = None,
        max_runs: int | None = None,
        until: datetime | None = None,
        once: bool = False,
        grace: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        require_posix("icepipe schedule serve")
        self.pipelines = list(pipelines)
        self.state = state
        self.run_args = list(run_args)
        self.log = logger or logging.getLogger("icepipe.schedule")
        self.max_runs = max_runs
        self.until = until
        self.once = once
        self.grace = grace
        self.python = python
        self.stop = threading.Event()
        self.running: dict[str, _Child] = {}
        self.started = 0
        self.finished = 0
        self.results: list[tuple[str, int]] = []

    # -- signals -----------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.log.info("received %s: stopping", signal.Signals(signum).name)
        self.stop.set()

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # -- main loop ---------------------------------------------------------------------------
    def serve(self) -> int:
        """Run until stopped; return the exit code of the scheduler itself (0)."""
        now = datetime.now(UTC)
        next_fire = {p.name: p.schedule.next_after(now) for p in self.pipelines}
        for p in self.pipelines:
            self.log.info(
                "scheduled %s (%s, %s): next run %s",
                p.name,
                p.schedule.cron,
                p.schedule.timezone,
                _iso(next_fire[p.name]),
            )
        fired = False
        while not self.stop.is_set():
            self._reap()
            if self.max_runs is not None and self.finished >= self.max_runs:
                self.log.info("--max-runs %d reached: stopping", self.max_runs)
                break
            now = datetime.now(UTC)
            if self.until is not None and now >= self.until and not self.running:
                self.log.info("--until %s reached: stopping", _iso(self.until))
                break
            if self.once and fired and not self.running:
                self.log.info("--once: the first scheduled runs finished: stopping")
                break
            can_start = self.until is None or now < self.until
            due_now = [p for p in self.pipelines if next_fire[p.name] <= now]
            for p in due_now:
                due = next_fire[p.name]
                # Missed fire times (a suspended machine) collapse into one run, like cron.
                next_fire[p.name] = p.schedule.next_after(now)
                if can_start and not (self.once and fired):
                    self._start(p, due)
            fired = fired or bool(due_now)
            wake = min(next_fire.values())
            if self.until is not None:
                wake = min(wake, self.until)
            delay = (wake - datetime.now(UTC)).total_seconds()
            # Wake at least every second while runs are in progress, to reap them promptly.
            self.stop.wait(max(0.05, min(delay, 1.0 if self.running else 30.0)))
        self._shutdown()
        return 0

    def _start(self, p: ScheduledPipeline, due: datetime) -> None:
        if self.max_runs is not None and self.started >= self.max_runs:
            self.log.info("%s: due at %s, not started (--max-runs)", p.name, _iso(due))
            return
        if p.name in self.running:
            self.log.warning(
                "%s: due at %s but the previous run (pid %d) is still running: skipped",
                p.name,
                _iso(due),
                self.running[p.name].proc.pid,
            )
            return
        lock = lock_path(self.state, p.name)
        fd = _try_lock(lock)
        if fd is None:
            self.log.warning(
                "%s: due at %s but another process holds %s (a run started elsewhere): skipped",
                p.name,
                _iso(due),
                lock,
            )
            return
        cmd = [
            self.python,
            "-m",
            "icepipe.cli",
            "run",
            str(p.path),
            "--state-dir",
            str(self.state),
            "--progress",
            "log",
            *self.run_args,
        ]
        env = {**os.environ, "ICEPIPE_SCHEDULED_AT": _iso(due)}
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                pass_fds=(fd,),  # the run holds the lock too, even if we die first
                start_new_session=True,  # our terminal's Ctrl-C is ours to forward
                cwd=str(p.path.parent),
                env=env,
            )
        except OSError as exc:
            os.close(fd)
            self.log.error("%s: cannot start %s: %s", p.name, shlex.join(cmd), exc)
            return
        reader = threading.Thread(
            target=self._pump, args=(p.name, proc), name=f"icepipe-log-{p.name}", daemon=True
        )
        reader.start()
        self.running[p.name] = _Child(p, proc, fd, time.monotonic(), reader)
        self.started += 1
        self.log.info(
            "%s: started (pid %d, due %s): %s", p.name, proc.pid, _iso(due), shlex.join(cmd)
        )

    def _pump(self, name: str, proc: subprocess.Popen[str]) -> None:
        if proc.stdout is None:  # Popen(stdout=PIPE) always sets it
            return
        for line in proc.stdout:
            self.log.info("%s | %s", name, line.rstrip())

    def _reap(self) -> None:
        for name, child in list(self.running.items()):
            code = child.proc.poll()
            if code is None:
                continue
            child.reader.join(timeout=5)
            os.close(child.lock_fd)
            del self.running[name]
            self.finished += 1
            self.results.append((name, code))
            seconds = time.monotonic() - child.started
            level = logging.INFO if code in (0,) else logging.ERROR
            self.log.log(
                level,
                "%s: finished with exit code %d (%s) in %.1fs",
                name,
                code,
                _exit_meaning(code),
                seconds,
            )

    def _shutdown(self) -> None:
        if self.running:
            self.log.info(
                "waiting up to %.0fs for %d run(s) in progress: %s",
                self.grace,
                len(self.running),
                ", ".join(self.running),
            )
            deadline = time.monotonic() + self.grace
            while self.running and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.2)
        for child in self.running.values():
            self.log.warning(
                "%s: interrupting the run (pid %d); nothing it wrote is committed",
                child.pipeline.name,
                child.proc.pid,
            )
            _signal_group(child.proc, signal.SIGINT)
        deadline = time.monotonic() + 30
        while self.running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        for child in list(self.running.values()):
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
            self._reap()
        self.log.info(
            "scheduler stopped: %d run(s) started, %d finished", self.started, self.finished
        )


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the run and its Dask worker processes


def _exit_meaning(code: int) -> str:
    return {
        0: "success",
        1: "unexpected error",
        2: "configuration error",
        3: "bad source data",
        4: "conflict: retried at the next fire time",
        5: "transient storage or cluster error: retried at the next fire time",
        6: "validation failed",
        130: "interrupted",
    }.get(code, "success, nothing new" if code > 6 else "error")


# ---------------------------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------------------------


def systemd_calendar(schedule: Schedule) -> list[str]:
    """``OnCalendar=`` values equivalent to ``schedule`` (time zone appended).

    Cron fires when the day of month *or* the day of week matches if both are restricted;
    systemd requires both, so that case becomes two ``OnCalendar=`` lines.
    """
    minute, hour, dom, month, dow = schedule.fields()
    t = f"{_sd(hour, 0, 23)}:{_sd(minute, 0, 59)}:00"
    month_s = _sd(month, 1, 12)
    tz = f" {schedule.timezone}"
    if dom is not None and dow is not None:
        return [
            f"*-{month_s}-{_sd(dom, 1, 31)} {t}{tz}",
            f"{_sd_dow(dow)} *-{month_s}-* {t}{tz}",
        ]
    prefix = f"{_sd_dow(dow)} " if dow is not None else ""
    return [f"{prefix}*-{month_s}-{_sd(dom, 1, 31)} {t}{tz}"]


def _runs(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _sd(values: list[int] | None, lo: int, hi: int) -> str:
    if values is None or values == list(range(lo, hi + 1)):
        return "*"
    if len(values) >= 3:
        step = values[1] - values[0]
        if step > 1 and values == list(range(values[0], hi + 1, step)):
            return f"{values[0]:02d}/{step}"
    parts = []
    for a, b in _runs(values):
        if b - a >= 2:
            parts.append(f"{a:02d}..{b:02d}")
        else:
            parts += [f"{v:02d}" for v in range(a, b + 1)]
    return ",".join(parts)


def _sd_dow(values: list[int]) -> str:
    parts = []
    for a, b in _runs(values):
        if b - a >= 2:
            parts.append(f"{_DOW[a]}..{_DOW[b]}")
        else:
            parts += [_DOW[v] for v in range(a, b + 1)]
    return ",".join(parts)


def export_schedules(
    pipelines: Sequence[ScheduledPipeline],
    fmt: ExportFormat,
    *,
    command: Sequence[str],
    state: Path | None = None,
    run_args: Sequence[str] = (),
    kubernetes: KubernetesOptions | None = None,
) -> dict[str, str]:
    """Render scheduler configuration for ``pipelines``: file name -> content.

    Parameters
    ----------
    fmt
        ``cron`` (one crontab), ``systemd`` (a ``.service`` and a ``.timer`` per pipeline) or
        ``kubernetes`` (one multi-document YAML of CronJobs).
    command
        How to invoke icepipe (``["icepipe"]``, or ``[python, "-m", "icepipe.cli"]``).
    state
        ``--state-dir`` of every run (cron and systemd; default: the runs' own default). The
        cron lines' locks live there too.
    run_args
        Extra arguments of every ``icepipe run``.
    kubernetes
        How the CronJobs run (image, namespace, secrets, resources, ...; see
        :class:`icepipe.ops.kubernetes.KubernetesOptions`).
    """
    if fmt == "cron":
        return {"crontab": _cron(pipelines, command, state, run_args)}
    if fmt == "systemd":
        out: dict[str, str] = {}
        for p in pipelines:
            out.update(_systemd(p, command, state, run_args))
        return out
    if fmt == "kubernetes":
        docs = cronjobs(pipelines, command, run_args, kubernetes or KubernetesOptions())
        return {"icepipe-cronjobs.yaml": yaml.safe_dump_all(docs, sort_keys=False)}
    raise ConfigError(f"expected cron, systemd or kubernetes; got {fmt!r}", field="--format")


def _run_cmd(
    p: ScheduledPipeline, command: Sequence[str], state: Path | None, extra: Sequence[str]
) -> list[str]:
    cmd = [*command, "run", str(p.path)]
    if state is not None:
        cmd += ["--state-dir", str(state)]
    return cmd + list(extra)


def _cron(
    pipelines: Sequence[ScheduledPipeline],
    command: Sequence[str],
    state: Path | None,
    run_args: Sequence[str],
) -> str:
    lines = [
        f"# Generated by `icepipe schedule export --format cron` on {_iso(datetime.now(UTC))}.",
        "# Each run holds its pipeline's lock (flock -n): a run still going makes the next one",
        "# skip. Exit codes: 0 ok, 2 config, 3 source data, 4 conflict and 5 storage (retried at",
        "# the next fire), 6 validation. CRON_TZ is honoured by cronie (RHEL, Fedora, Arch) and",
        "# ignored by Debian's cron, which uses the machine's zone: prefer systemd timers there.",
    ]
    by_tz: dict[str, list[ScheduledPipeline]] = {}
    for p in pipelines:
        by_tz.setdefault(p.schedule.timezone, []).append(p)
    for tz, group in by_tz.items():
        lines += ["", f"CRON_TZ={tz}"]
        for p in group:
            st = state if state is not None else state_dir(p.path)
            cmd = [
                "flock",
                "-n",
                str(lock_path(st, p.name)),
                *_run_cmd(p, command, state, run_args),
            ]
            # cron treats % as a newline in commands.
            lines.append(f"{p.schedule.expression} {shlex.join(cmd).replace('%', r'\%')}")
    return "\n".join(lines) + "\n"


def _systemd(
    p: ScheduledPipeline, command: Sequence[str], state: Path | None, run_args: Sequence[str]
) -> dict[str, str]:
    unit = f"icepipe-{p.name}"
    cmd = shlex.join(_run_cmd(p, command, state, run_args)).replace("%", "%%")
    no_retry = " ".join(str(c) for c in NO_RETRY_EXIT_CODES)
    service = f"""[Unit]
Description=icepipe pipeline {p.name}
Documentation=file://{p.path}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={p.path.parent}
ExecStart={cmd}
# systemd never starts this unit while it is active: one run at a time.
# Exit codes 4 (conflict) and 5 (transient storage) are retried; {no_retry} need a person.
Restart=on-failure
RestartSec=5min
RestartPreventExitStatus={no_retry}
"""
    calendars = "\n".join(f"OnCalendar={c}" for c in systemd_calendar(p.schedule))
    timer = f"""[Unit]
Description=Run icepipe pipeline {p.name} ({p.schedule.cron}, {p.schedule.timezone})

[Timer]
{calendars}
Persistent=true
Unit={unit}.service

[Install]
WantedBy=timers.target
"""
    return {f"{unit}.service": service, f"{unit}.timer": timer}
