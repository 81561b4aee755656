"""Run reports: one JSON file per ``icepipe run``, successful or not.

Reports live in a state folder, by default ``.icepipe/`` beside the pipeline file, else
``--state-dir`` or ``$ICEPIPE_STATE_DIR``::

    <state>/runs/<pipeline name>/<UTC time>-<run id>.json

File names sort by time. A report is written once, atomically (temporary file + rename), when
the run ends; ``icepipe status`` reads the newest ones.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icepipe import __version__
from icepipe.errors import IcepipeError, SourceError

if TYPE_CHECKING:
    from icepipe.pipeline import RunObserver
    from icepipe.spec import Pipeline

__all__ = [
    "REPORT_VERSION",
    "STATE_ENV",
    "Fanout",
    "RunRecorder",
    "exit_code_of",
    "recorder_for",
    "read_reports",
    "runs_dir",
    "state_dir",
]

REPORT_VERSION = 1
#: Environment variable overriding the state folder.
STATE_ENV = "ICEPIPE_STATE_DIR"


def state_dir(pipeline_path: str | os.PathLike[str] | None, override: str | None = None) -> Path:
    """The state folder: ``override``, else ``$ICEPIPE_STATE_DIR``, else ``.icepipe/`` in the
    pipeline file's folder (the current folder without a pipeline file)."""
    if override:
        return Path(override).expanduser().absolute()
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser().absolute()
    base = Path(pipeline_path).absolute().parent if pipeline_path else Path.cwd()
    return base / ".icepipe"


def runs_dir(state: Path, pipeline_name: str) -> Path:
    """Where the reports of ``pipeline_name`` go."""
    return state / "runs" / pipeline_name


def exit_code_of(exc: BaseException) -> int:
    """The exit code for a run that raised ``exc`` (see :mod:`icepipe.errors`)."""
    if isinstance(exc, IcepipeError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


class Fanout:
    """Several run observers as one."""

    def __init__(self, *observers: RunObserver) -> None:
        self.observers = observers

    def stage_started(self, stage: str, client: Any) -> None:
        for o in self.observers:
            o.stage_started(stage, client)

    def stage_finished(self, stage: str, seconds: float) -> None:
        for o in self.observers:
            o.stage_finished(stage, seconds)


def recorder_for(
    pipeline: Pipeline,
    *,
    run_id: str,
    state: str | None = None,
    argv: Sequence[str] = (),
    pipeline_file: str | os.PathLike[str] | None = None,
) -> RunRecorder:
    """The recorder of one run of ``pipeline``, its report going to the state folder
    (:func:`state_dir`: ``state``, else ``$ICEPIPE_STATE_DIR``, else beside the file)."""
    path = pipeline_file or pipeline.path
    recorder = RunRecorder(
        pipeline_name=pipeline.name,
        pipeline_file=str(path) if path else None,
        run_id=run_id,
        state=state_dir(path, state),
        argv=argv,
    )
    t = pipeline.target
    recorder.target = {"repo": t.repo, "branch": t.branch, "group": t.group}
    return recorder


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class RunRecorder:
    """Collects what a run did (it is the run's :class:`icepipe.pipeline.RunObserver`) and
    writes the report with :meth:`finish`.

    Stage durations and the cluster size are recorded as the run goes, so that failed runs
    report them too.
    """

    def __init__(
        self,
        *,
        pipeline_name: str,
        pipeline_file: str | None,
        run_id: str,
        state: Path,
        argv: Sequence[str] = (),
    ) -> None:
        self.pipeline_name = pipeline_name
        self.pipeline_file = str(Path(pipeline_file).absolute()) if pipeline_file else None
        self.run_id = run_id
        self.state = state
        self.argv = list(argv)
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.workers: int | None = None
        self.dashboard: str | None = None
        self.target: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    def stage_started(self, stage: str, client: Any) -> None:
        if client is not None and self.workers is None:
            try:
                self.workers = len(client.scheduler_info().get("workers", {}))
            except Exception:  # a report must never fail the run
                self.workers = None
            from icepipe.execute import dashboard_link

            self.dashboard = dashboard_link(client)

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def _cluster(self) -> dict[str, Any]:
        """What failed runs know of their cluster (a successful run's result says more)."""
        out: dict[str, Any] = {}
        if self.workers is not None:
            out["workers"] = self.workers
        if self.dashboard:
            out["dashboard"] = self.dashboard
        return out

    def finish(
        self,
        *,
        exit_code: int,
        result: Any = None,
        error: BaseException | None = None,
    ) -> Path | None:
        """Write the report of a run that returned ``result`` or raised ``error``; return its
        path, or ``None`` when it could not be written (never raises for an unwritable folder:
        the failure is reported on stderr)."""
        report = self.build(exit_code=exit_code, result=result, error=error)
        folder = runs_dir(self.state, self.pipeline_name)
        stamp = self.started_at.strftime("%Y%m%dT%H%M%S.%fZ")
        path = folder / f"{stamp}-{self.run_id}.json"
        tmp: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(report, fh, indent=2, default=str)
                fh.write("\n")
            os.replace(tmp, path)
        except OSError as exc:
            import sys

            if tmp is not None:  # a full disk: leave no half-written file behind
                Path(tmp).unlink(missing_ok=True)

            print(f"icepipe: warning: cannot write the run report {path}: {exc}", file=sys.stderr)
            return None
        return path

    def build(
        self, *, exit_code: int, result: Any = None, error: BaseException | None = None
    ) -> dict[str, Any]:
        """The report as a JSON-able dict (see ``docs/operations.md`` for the fields)."""
        finished = datetime.now(UTC)
        report: dict[str, Any] = {
            "report_version": REPORT_VERSION,
            "run_id": self.run_id,
            "pipeline": self.pipeline_name,
            "pipeline_file": self.pipeline_file,
            "status": "failed",
            "exit_code": exit_code,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(finished),
            "seconds": round(time.perf_counter() - self._t0, 3),
            **self.target,
            "snapshot_id": None,
            "files": {"new": [], "already_ingested": None, "skipped": [], "failed": []},
            "bytes_new": 0,
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
            "cluster": self._cluster(),
            "attempts": None,
            "error": None,
            "icepipe_version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": self.argv,
            **self.extra,
        }
        if result is not None:
            report.update(
                status=result.status,
                repo=result.repo,
                branch=result.branch,
                group=result.group,
                snapshot_id=result.snapshot_id,
                bytes_new=result.bytes_new,
                groups=list(result.groups),
                native_fallback=dict(result.native_fallback),
                attempts=result.attempts,
                cluster=dict(result.cluster) or report["cluster"],
                stages={k: round(v, 3) for k, v in (result.stages or self.stages).items()},
                files={
                    "new": list(result.files_new),
                    "already_ingested": result.files_already,
                    "skipped": [{"url": u, "reason": r} for u, r in result.files_skipped.items()],
                    "failed": [],
                    "missing": list(result.files_missing),
                },
            )
        if error is not None:
            report["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            report["error"] = {
                "type": type(error).__name__,
                "message": str(error) or type(error).__name__,
                "exit_code": exit_code,
            }
            field = getattr(error, "field", None)
            if field:
                report["error"]["field"] = field
            if isinstance(error, SourceError):
                report["files"]["failed"] = _failed_files(error)
            if isinstance(error, IcepipeError) and getattr(error, "conflicts", None):
                report["error"]["conflicts"] = list(error.conflicts)  # type: ignore[attr-defined]
        return report


def _failed_files(error: SourceError) -> list[dict[str, str]]:
    """Each failed file with the line of the message that names it (the whole message for a
    single file)."""
    message = str(error)
    lines = [ln.strip().removeprefix("- ") for ln in message.splitlines()]
    out = []
    for url in error.urls:
        path = url.removeprefix("file://")
        reason = next((ln for ln in lines if url in ln or path in ln), message)
        out.append({"url": url, "reason": reason})
    return out


def read_reports(folder: Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The reports in ``folder``, newest first (unreadable files are skipped)."""
    if not folder.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json"), reverse=True):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(report, dict):
            report["report_file"] = str(path)
            out.append(report)
        if limit is not None and len(out) >= limit:
            break
    return out
