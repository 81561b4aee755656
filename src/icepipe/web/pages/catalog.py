"""The catalog: every repository the server knows (``/``, ``/api/repos``).

Each row reads its repository in its own worker thread, all at once, each under the server's
``request_timeout``: a slow or missing repository shows as such in its row, the others still
show. What a row reads from a snapshot is cached on ``app.state`` (snapshots are immutable),
so a catalog page costs one ref listing per repository once seen.
"""

from __future__ import annotations

from dataclasses import asdict

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icepipe.web.app import JSONResponse, TimedOut, render
from icepipe.web.config import KnownRepo, known_repos
from icepipe.web.data import RepoRow, cache_for, catalog_row, row_base, run_blocking, workers_of
from icepipe.web.workers import Busy


async def catalog_rows(request: Request) -> list[RepoRow]:
    """Every known repository's row, read concurrently (as many at once as the server has
    worker threads), all within one ``request_timeout``."""
    config = request.app.state.config
    timeout = config.request_timeout
    repos = await run_blocking(
        request, known_repos, config, what="the catalog and the pipeline files"
    )
    cache = cache_for(request)
    rows: list[RepoRow | None] = [None] * len(repos)
    # One page does not fill the queue on its own: others' requests still get a thread.
    limiter = anyio.CapacityLimiter(workers_of(request).workers)
    deadline = anyio.current_time() + timeout

    async def fill(i: int, known: KnownRepo) -> None:
        what = f"repository {known.key!r}"
        async with limiter:
            left = deadline - anyio.current_time()
            try:
                if left <= 0:
                    raise TimedOut(what, timeout)
                rows[i] = await run_blocking(
                    request, catalog_row, known, cache, what=what, timeout=left
                )
            except TimedOut:
                rows[i] = RepoRow(**row_base(known), problem=TimedOut(what, timeout).detail)
            except Busy as exc:
                rows[i] = RepoRow(**row_base(known), problem=exc.detail)

    async with anyio.create_task_group() as tg:
        for i, known in enumerate(repos):
            tg.start_soon(fill, i, known)
    return [r for r in rows if r is not None]


async def catalog_page(request: Request) -> Response:
    return render(request, "catalog.html", {"repos": await catalog_rows(request)})


async def api_repos(request: Request) -> Response:
    return JSONResponse({"repos": [asdict(r) for r in await catalog_rows(request)]})


ROUTES: list[BaseRoute] = [
    Route("/", catalog_page, name="catalog"),
    Route("/api/repos", api_repos, name="api_repos"),
]
