"""``icepipe status``: the last runs of a pipeline (from its run reports), the last commit it
made, and how far the repository lags behind the source files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np

from icepipe import repository, sources
from icepipe.errors import IcepipeError
from icepipe.ops.reports import read_reports, runs_dir, state_dir
from icepipe.spec import Pipeline, load_pipeline

__all__ = [
    "ALERT_EXIT_CODES",
    "Alert",
    "PipelineStatus",
    "alert_exit_code",
    "check_alerts",
    "find_pipelines",
    "pipeline_status",
]


@dataclass(frozen=True)
class PipelineStatus:
    """Everything ``icepipe status`` shows for one pipeline (JSON-able with ``asdict``).

    ``lag`` holds ``files_pending`` / ``bytes_pending`` (listed files not ingested yet, or
    changed since), ``newest_source_mtime`` / ``newest_ingested_mtime`` and their difference
    ``mtime_lag_seconds``, and ``last_coordinate`` (the last stored value along
    ``concat_dim``, or ``order_by``) with ``data_age_seconds`` (now minus that value, for
    time coordinates).
    """

    pipeline: str
    pipeline_file: str
    repo: str
    branch: str
    group: str | None
    schedule: str | None = None
    next_run: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    tip: str | None = None
    last_commit: dict[str, Any] | None = None
    lag: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def find_pipelines(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself, or the ``*.yaml``/``*.yml`` files of a folder (sorted)."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
    return [p]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _run_summary(r: dict[str, Any]) -> dict[str, Any]:
    files = r.get("files") or {}
    error = r.get("error") or {}
    return {
        "run_id": r.get("run_id"),
        "started_at": r.get("started_at"),
        "finished_at": r.get("finished_at"),
        "status": r.get("status"),
        "exit_code": r.get("exit_code"),
        "files_new": len(files.get("new") or []),
        "files_failed": len(files.get("failed") or []) + len(files.get("skipped") or []),
        "failed_files": [
            f["url"]
            for f in [*(files.get("failed") or []), *(files.get("skipped") or [])]
            if isinstance(f, dict) and "url" in f
        ],
        "seconds": r.get("seconds"),
        "snapshot_id": r.get("snapshot_id"),
        "error": error.get("message"),
        "report_file": r.get("report_file"),
    }


def pipeline_status(
    pipeline: Pipeline, *, state: str | None = None, runs: int = 5, now: datetime | None = None
) -> PipelineStatus:
    """Collect the status of ``pipeline`` (never raises for a missing repository or sources:
    those are listed in ``problems``)."""
    now = now or datetime.now(UTC)
    t, src = pipeline.target, pipeline.source
    folder = runs_dir(state_dir(pipeline.path, state), pipeline.name)
    status = PipelineStatus(
        pipeline=pipeline.name,
        pipeline_file=str(Path(pipeline.path).absolute()) if pipeline.path else "",
        repo=t.repo,
        branch=t.branch,
        group=t.group,
        schedule=_describe_schedule(pipeline),
        next_run=_iso(pipeline.schedule.next_after(now)) if pipeline.schedule else None,
        runs=[_run_summary(r) for r in read_reports(folder, limit=runs)],
    )
    ledger: dict[str, repository.FileRecord] = {}
    try:
        repo = repository.open_repo(
            t.repo, storage=t.storage, source_storage=src.storage, config=t.config
        )
        tip = repository.resolve_ref(repo, f"branch:{t.branch}")
        status = _replace(status, tip=tip)
        for c in repository.read_log(repo, t.branch):
            if c.pipeline == pipeline.name and (c.group or None) == (t.group or None):
                status = _replace(
                    status,
                    last_commit={
                        "snapshot_id": c.id,
                        "written_at": _iso(c.written_at),
                        "message": c.message,
                        "files": c.n_files,
                    },
                )
                break
        ledger = repository.read_ledger(repo, tip, t.group)
    except IcepipeError as exc:
        status.problems.append(f"repository: {exc}")
        repo = None
    lag = _source_lag(pipeline, ledger, status.problems)
    if repo is not None and ledger:
        groups: list[str | None] = [t.group]
        if src.grib_cubes is not None:  # one group per GRIB hypercube: the newest of them
            groups = [
                repository.subgroup(t.group, c) for c in repository.ledger_cubes(ledger.values())
            ]
        coords = [_last_coordinate(pipeline, status.tip, now, g) for g in groups]
        coords = [last for last in coords if last]
        if coords:
            newest: dict[str, Any] = max(coords, key=lambda last: str(last["last_coordinate"]))
            lag.update(newest)
    return _replace(status, lag=lag)


def _source_lag(
    pipeline: Pipeline, ledger: dict[str, repository.FileRecord], problems: list[str]
) -> dict[str, Any]:
    """How far the ingested files lag behind the listed sources (counts, bytes, mtimes);
    sources missing or changed since their ingest are added to ``problems``."""
    src = pipeline.source
    lag: dict[str, Any] = {}
    try:
        listed = sources.list_sources(src.urls, is_glob=src.is_glob, storage=src.storage)
        pending = [f for f in listed if f.url not in ledger or not f.same_version(ledger[f.url])]
        newest_source = max((_parse_time(f.mtime) for f in listed), default=None, key=_key)
        newest_ingested = max(
            (_parse_time(r.mtime) for r in ledger.values()), default=None, key=_key
        )
        missing = (
            sources.missing_since_ingest(src.urls[0], listed, list(ledger)) if src.is_glob else []
        )
        changed = [f.url for f in listed if f.url in ledger and not f.same_version(ledger[f.url])]
        for urls, what in (
            (missing, "no longer exist (deleted or moved since)"),
            (changed, "changed since they were ingested"),
        ):
            if urls:
                more = f" and {len(urls) - 5} more" if len(urls) > 5 else ""
                fix = (
                    "reads of their data fail until they are restored"
                    if urls is missing and pipeline.mode == "virtual"
                    else "restore them"
                    if urls is missing
                    else "restore them, or set on_changed: reingest"
                )
                problems.append(
                    f"sources: {len(urls)} ingested file(s) {what}: {', '.join(urls[:5])}{more}; "
                    + fix
                )
        lag.update(
            files_listed=len(listed),
            files_ingested=len(ledger),
            files_missing=len(missing),
            files_changed=len(changed),
            files_pending=len(pending),
            bytes_pending=sum(f.size for f in pending),
            newest_source_mtime=_iso(newest_source) if newest_source else None,
            newest_ingested_mtime=_iso(newest_ingested) if newest_ingested else None,
            mtime_lag_seconds=(
                max(0.0, (newest_source - newest_ingested).total_seconds())
                if newest_source and newest_ingested
                else None
            ),
        )
    except IcepipeError as exc:
        problems.append(f"sources: {exc}")
    return lag


def _key(t: datetime | None) -> datetime:
    return t or datetime.min.replace(tzinfo=UTC)


def _replace(s: PipelineStatus, **kw: Any) -> PipelineStatus:
    from dataclasses import replace

    return replace(s, **kw)


def _describe_schedule(pipeline: Pipeline) -> str | None:
    s = pipeline.schedule
    return f"{s.cron} ({s.timezone})" if s else None


def _last_coordinate(
    pipeline: Pipeline, tip: str | None, now: datetime, group: str | None
) -> dict[str, Any]:
    from icepipe.xarray import open_dataset

    t, src = pipeline.target, pipeline.source
    name = src.order_by or src.concat_dim
    try:
        ds = open_dataset(
            t.repo, snapshot_id=tip, group=group, storage=t.storage, source_storage=src.storage
        )
        if name not in ds.variables or ds[name].ndim != 1 or ds[name].size == 0:
            return {}
        value = ds[name].values[-1]
    except Exception:  # status is best effort: a coordinate that cannot be read is no error
        return {}
    if isinstance(value, np.datetime64):
        last = datetime.fromisoformat(str(value.astype("datetime64[us]"))).replace(tzinfo=UTC)
        return {
            "last_coordinate": _iso(last),
            "data_age_seconds": round((now - last).total_seconds(), 3),
        }
    if hasattr(value, "isoformat"):  # cftime dates: no age across calendars
        return {"last_coordinate": value.isoformat()}
    return {"last_coordinate": value.item() if hasattr(value, "item") else value}


def status_of_path(path: str | os.PathLike[str], *, state: str | None, runs: int) -> PipelineStatus:
    """The status of the pipeline file ``path`` (see :func:`pipeline_status`)."""
    return pipeline_status(load_pipeline(path), state=state, runs=runs)


#: ``icepipe status`` exit codes when an alert threshold is crossed (the first that applies).
ALERT_EXIT_CODES = {"failing": 10, "late": 11, "behind": 12}


@dataclass(frozen=True)
class Alert:
    """Why a pipeline needs attention: ``kind`` is ``failing``, ``late`` or ``behind``."""

    pipeline: str
    kind: str
    reason: str


def _last_success(status: PipelineStatus) -> datetime | None:
    """When the pipeline last ran successfully: its newest successful run report (a run
    with nothing new counts), or its newest commit (a run elsewhere, without a report
    here)."""
    times = [
        _parse_time(r.get("finished_at") or r.get("started_at"))
        for r in status.runs
        if r.get("status") in ("committed", "nothing-new")
    ]
    if status.last_commit:
        times.append(_parse_time(status.last_commit.get("written_at")))
    return max((t for t in times if t), default=None)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def check_alerts(
    status: PipelineStatus,
    pipeline: Pipeline,
    *,
    max_age: timedelta | None = None,
    max_pending: int | None = None,
    grace: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> list[Alert]:
    """The alerts for one pipeline's status.

    - ``failing``: its newest run report says it failed (or was interrupted);
    - ``late``: its last successful run is older than ``max_age``, or (with a ``schedule``)
      older than the last scheduled time that is at least ``grace`` ago, or it never ran;
    - ``behind``: more than ``max_pending`` listed source files are not ingested (new, or
      changed since their ingest; ``files_pending`` of ``icepipe status``).
    """
    now = now or datetime.now(UTC)
    out: list[Alert] = []
    name = status.pipeline
    if status.runs and status.runs[0].get("status") in ("failed", "interrupted"):
        last = status.runs[0]
        out.append(
            Alert(
                name,
                "failing",
                f"last run {last.get('run_id')} ({last.get('started_at')}) "
                f"{last.get('status')} with exit {last.get('exit_code')}: {last.get('error')}",
            )
        )
    success = _last_success(status)
    if max_age is not None or pipeline.schedule is not None:
        due = _last_due(pipeline, now - grace)
        if success is None:
            out.append(Alert(name, "late", "no successful run found (run reports or commits)"))
        elif max_age is not None and now - success > max_age:
            out.append(
                Alert(
                    name,
                    "late",
                    f"last successful run {_ago((now - success).total_seconds())}"
                    f" ago ({_iso(success)}), more than --max-age {_ago(max_age.total_seconds())}",
                )
            )
        elif due is not None and success < due:
            out.append(
                Alert(
                    name,
                    "late",
                    f"no successful run since the scheduled time {_iso(due)} "
                    f"({_describe_schedule(pipeline)}); last at {_iso(success)}",
                )
            )
    pending = status.lag.get("files_pending")
    if max_pending is not None and isinstance(pending, int) and pending > max_pending:
        out.append(
            Alert(
                name,
                "behind",
                f"{pending} source file(s) pending, more than --max-pending {max_pending}",
            )
        )
    return out


def _last_due(pipeline: Pipeline, before: datetime) -> datetime | None:
    """The last scheduled time at or before ``before`` (``None`` without a schedule)."""
    s = pipeline.schedule
    if s is None:
        return None
    from croniter import croniter

    it = croniter(s.expression, before.astimezone(s.zone) + timedelta(seconds=1))
    return cast(datetime, it.get_prev(datetime))


def alert_exit_code(alerts: list[Alert]) -> int:
    """0 without alerts, else the code of the first kind that applies (failing, late,
    behind): see :data:`ALERT_EXIT_CODES`."""
    kinds = {a.kind for a in alerts}
    return next((code for kind, code in ALERT_EXIT_CODES.items() if kind in kinds), 0)
