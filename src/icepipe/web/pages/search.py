"""Search (``/search?q=``, ``/api/search?q=&limit=``, ``POST /api/reindex``).

The index (:class:`icepipe.web.search_index.SearchIndex`) lives on ``app.state.search_index``:
:func:`search_lifespan` (the application's lifespan) starts building it in a background
thread when the server starts (the pages say "indexing..." until it is ready); the first
request that needs it starts it when no one did. Each search first checks the repositories'
branch tips (at most every ``SearchIndex.check_interval`` seconds) and re-reads the
repositories whose tips moved.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from icepipe.errors import IcepipeError
from icepipe.web.app import render
from icepipe.web.search_index import Hit, SearchIndex

__all__ = ["ROUTES", "result_url", "search_index", "search_lifespan", "start_search_index"]

_CREATE = threading.Lock()
#: Seconds a search waits for the repositories whose tips moved to be read again.
REFRESH_WAIT = 2.0


def search_index(app: Starlette) -> SearchIndex:
    """The application's index, created and started on first use."""
    with _CREATE:
        index: SearchIndex | None = getattr(app.state, "search_index", None)
        if index is None:
            index = SearchIndex(app.state.config)
            app.state.search_index = index
    index.start()
    return index


def start_search_index(app: Starlette) -> None:
    """Start building ``app``'s index in the background (a startup hook: returns at once)."""
    search_index(app)


@contextlib.asynccontextmanager
async def search_lifespan(app: Starlette) -> AsyncIterator[None]:
    """The application's lifespan (``Starlette(lifespan=search_lifespan)``): the index starts
    building when the server starts, so the first search rarely waits."""
    start_search_index(app)
    yield


async def bounded[T](request: Request, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, a 504 naming ``what`` after ``request_timeout``."""
    timeout = _timeout(request)
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(
                functools.partial(fn, *args), abandon_on_cancel=True
            )
    except TimeoutError:
        raise HTTPException(
            504, f"{what} took more than {timeout:g}s (the server's request timeout)"
        ) from None


def _timeout(request: Request) -> float:
    return float(request.app.state.config.request_timeout)


async def _for_at_most(fn: Callable[[], object], seconds: float) -> None:
    """Run ``fn`` in a thread of its own, waiting for it ``seconds`` at most (it goes on)."""
    thread = threading.Thread(target=fn, name="icepipe-web-search-refresh", daemon=True)
    thread.start()
    await anyio.to_thread.run_sync(thread.join, seconds, abandon_on_cancel=True)


def result_url(hit: Hit) -> str:
    """Where a result leads: the repository, the array, or the pipeline's row."""
    ref = {"ref": hit.ref} if hit.ref else {}
    if hit.kind == "array":
        return "/array?" + urlencode({"name": hit.repo, "path": hit.path, **ref})
    if hit.kind == "pipeline":
        return "/pipelines#pipeline-" + quote(hit.title)
    return _repo_url(hit.repo) + ("&" + urlencode(ref) if ref else "")


def _repo_url(key: str) -> str:
    return "/repo?" + urlencode({"name": key})


def _limit(request: Request) -> int:
    most: int = request.app.state.config.max_search_results
    text = request.query_params.get("limit") or str(min(50, most))
    try:
        limit = int(text)
    except ValueError:
        raise HTTPException(400, f"limit={text!r} is not a whole number") from None
    return max(0, min(limit, most))


async def _results(request: Request) -> dict[str, Any]:
    index = search_index(request.app)
    q = request.query_params.get("q", "")
    limit = _limit(request)
    # New commits: re-read what moved, answering from the index as it is after REFRESH_WAIT.
    if index.due():
        await _for_at_most(index.refresh_if_stale, min(REFRESH_WAIT, _timeout(request)))
    hits = await bounded(request, "the search", functools.partial(index.search, limit=limit), q)
    return {
        "query": q,
        "state": index.state,
        "error": index.error,
        "unreadable": dict(index.repo_errors),
        "index": {"repos": index.stats.repos, "documents": index.stats.documents},
        "count": len(hits),
        "results": [
            {**h.as_dict(), "url": result_url(h), "repo_url": _repo_url(h.repo)} for h in hits
        ],
    }


async def search_page(request: Request) -> Response:
    doc = await _results(request)
    status = 503 if doc["state"] == "failed" else 200
    return render(request, "search.html", {**doc, "q": doc["query"]}, status)


async def api_search(request: Request) -> Response:
    doc = await _results(request)
    return JSONResponse(doc, status_code=503 if doc["state"] == "failed" else 200)


async def api_reindex(request: Request) -> Response:
    """Re-read every repository; 202 when that takes longer than the request timeout (the
    rebuild goes on)."""
    index = search_index(request.app)
    timeout = _timeout(request)
    done: dict[str, Any] = {}

    def rebuild() -> None:
        index.wait()
        with contextlib.suppress(IcepipeError):  # index.state and index.error say what failed
            done["stats"] = index.refresh(force=True)

    await _for_at_most(rebuild, timeout)
    if "stats" not in done:
        state = "failed" if index.state == "failed" else "indexing"
        return JSONResponse(
            {"state": state, "error": index.error, "timeout": timeout},
            status_code=503 if state == "failed" else 202,
        )
    s = done["stats"]
    return JSONResponse(
        {
            "state": index.state,
            "repos": s.repos,
            "documents": s.documents,
            "seconds": s.seconds,
            "errors": s.errors,
        }
    )


ROUTES: list[BaseRoute] = [
    Route("/search", search_page, name="search"),
    Route("/api/search", api_search, name="api_search"),
    Route("/api/reindex", api_reindex, methods=["POST"], name="api_reindex"),
]
