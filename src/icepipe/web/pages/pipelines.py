"""The pipelines (``/pipelines``, ``/api/pipelines``): what ``icepipe status`` says, as a page.

One row per pipeline file given on the command line: its target (a link to the repository),
mode, schedule and next run, its last runs (from the run reports, in ``config.state_dir``
or beside each file as ``icepipe status --state-dir``), its lag, and, when its last run
failed, the error and the files it names (the row has class ``failing``). Alerts
(:func:`icepipe.ops.status.check_alerts`: failing, late against the schedule) come first. A
file that does not load shows its error in its row; a pipeline whose status takes longer
than the request timeout says so in its row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icepipe.errors import IcepipeError
from icepipe.web.app import JSONResponse, TimedOut, render
from icepipe.web.config import WebConfig, known_repos, load_pipeline_cached, pipeline_files

__all__ = ["ROUTES", "PipelineRow", "pipeline_row"]

#: Run reports shown per pipeline.
RUNS = 5


@dataclass
class PipelineRow:
    """One row of the page (``status``: :class:`icepipe.ops.status.PipelineStatus` as a dict;
    ``error``: why the file does not load, or why its status is unknown)."""

    file: str
    name: str
    repo_key: str | None = None
    repo_url: str | None = None
    mode: str | None = None
    status: dict[str, Any] | None = None
    alerts: list[dict[str, str]] = field(default_factory=list)
    failing: bool = False
    error: str | None = None
    failed_files: list[str] = field(default_factory=list)
    lag: str | None = None
    data_until: str | None = None


def pipeline_row(path: Path, config: WebConfig, repo_keys: dict[str, str]) -> PipelineRow:
    """The row of the pipeline file ``path`` (``repo_keys``: repository URL -> key)."""
    from icepipe.ops.render import render_lag
    from icepipe.ops.status import check_alerts, pipeline_status

    try:
        pipeline = load_pipeline_cached(path)
    except IcepipeError as exc:
        return PipelineRow(file=str(path), name=path.stem, error=str(exc))
    status = pipeline_status(pipeline, state=config.state_dir, runs=RUNS)
    alerts = check_alerts(status, pipeline)
    last = status.runs[0] if status.runs else {}
    failing = last.get("status") in ("failed", "interrupted")
    lag, until = render_lag(status.lag)
    key = repo_keys.get(pipeline.target.repo)
    return PipelineRow(
        file=str(path),
        name=pipeline.name,
        repo_key=key,
        repo_url="/repo?" + urlencode({"name": key}) if key else None,
        mode=pipeline.mode,
        status=asdict(status),
        alerts=[asdict(a) for a in alerts],
        failing=failing,
        error=(last.get("error") or f"exit {last.get('exit_code')}") if failing else None,
        failed_files=list(last.get("failed_files") or []) if failing else [],
        lag=lag,
        data_until=until,
    )


async def _rows(request: Request) -> list[PipelineRow]:
    """Every row, each read on a worker thread, all within the request timeout."""
    from icepipe.web.data import run_blocking, workers_of
    from icepipe.web.workers import Busy

    config: WebConfig = request.app.state.config
    timeout = config.request_timeout
    try:
        keys = await run_blocking(request, _repo_keys, config, what="the catalog")
    except (TimedOut, Busy):  # the rows say so; without links to their repositories
        keys = {}
    files = pipeline_files(config.pipelines)
    rows: list[PipelineRow | None] = [None] * len(files)
    limiter = anyio.CapacityLimiter(workers_of(request).workers)
    deadline = anyio.current_time() + timeout

    async def one(i: int, path: Path) -> None:
        async with limiter:
            left = deadline - anyio.current_time()
            try:
                if left <= 0:
                    raise TimedOut(str(path), timeout)
                rows[i] = await run_blocking(
                    request, pipeline_row, path, config, keys, what=str(path), timeout=left
                )
                return
            except TimedOut:
                error = f"status not read within {timeout:g}s (the request timeout)"
            except Busy as exc:
                error = exc.detail
        rows[i] = PipelineRow(file=str(path), name=path.stem, error=error)

    async with anyio.create_task_group() as tg:
        for i, path in enumerate(files):
            tg.start_soon(one, i, path)
    return [r for r in rows if r is not None]


def _repo_keys(config: WebConfig) -> dict[str, str]:
    return {r.entry.url: r.key for r in known_repos(config)}


async def pipelines_page(request: Request) -> Response:
    rows = await _rows(request)
    alerts = [a for r in rows for a in r.alerts]
    return render(request, "pipelines.html", {"rows": rows, "alerts": alerts})


async def api_pipelines(request: Request) -> Response:
    rows = await _rows(request)
    return JSONResponse(
        {
            "pipelines": [asdict(r) for r in rows],
            "alerts": [a for r in rows for a in r.alerts],
        }
    )


ROUTES: list[BaseRoute] = [
    Route("/pipelines", pipelines_page, name="pipelines"),
    Route("/api/pipelines", api_pipelines, name="api_pipelines"),
]
