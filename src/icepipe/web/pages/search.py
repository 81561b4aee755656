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
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from icepipe.web.app import JSONResponse, node_anchor, refuse_cross_site, render
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
    from icepipe.web.data import run_blocking

    return await run_blocking(request, fn, *args, what=what)


def _timeout(request: Request) -> float:
    return float(request.app.state.config.request_timeout)


async def _for_at_most(thread: threading.Thread, seconds: float) -> None:
    """Wait for ``thread`` ``seconds`` at most (it goes on)."""
    await anyio.to_thread.run_sync(thread.join, seconds, abandon_on_cancel=True)


def _in_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn, name="icepipe-web-search-refresh", daemon=True)
    thread.start()
    return thread


def _utc(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def result_url(hit: Hit) -> str:
    """Where a result leads: the array, the pipeline's row, the repository (for a group: at
    the group's row of its tree)."""
    ref = {"ref": hit.ref} if hit.ref else {}
    if hit.kind == "array":
        return "/array?" + urlencode({"name": hit.repo, "path": hit.path, **ref})
    if hit.kind == "pipeline":
        return "/pipelines#pipeline-" + quote(hit.title)
    url = _repo_url(hit.repo) + ("&" + urlencode(ref) if ref else "")
    return url + "#" + node_anchor(hit.path) if hit.kind == "group" else url


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
        refresh = _in_thread(index.refresh_if_stale)
        await _for_at_most(refresh, min(REFRESH_WAIT, _timeout(request)))
    hits = await bounded(request, "the search", functools.partial(index.search, limit=limit), q)
    return {
        "query": q,
        "state": index.state,
        "rebuilding": index.rebuilding,
        "built_at": _utc(index.built_at),
        "seconds": index.stats.seconds,
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
    context = {**doc, "q": doc["query"], "reindexed": request.query_params.get("reindexed") == "1"}
    return render(request, "search.html", context, status)


async def api_search(request: Request) -> Response:
    doc = await _results(request)
    return JSONResponse(doc, status_code=503 if doc["state"] == "failed" else 200)


def _is_form(request: Request) -> bool:
    """Whether ``request`` comes from an HTML form (the search page's "Reindex" button)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/x-www-form-urlencoded"


async def _form_query(request: Request) -> str:
    """The ``q`` field of the form (the search to show again), read from at most 4 KiB."""
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > 4096:
            break
    values = parse_qs(body[:4096].decode("utf-8", "replace")).get("q") or [""]
    return values[0][:500]


async def api_reindex(request: Request) -> Response:
    """Re-read every repository (one rebuild at a time: a second click joins the first).

    From the search page's "Reindex" form: waits :data:`REFRESH_WAIT` seconds at most, then
    back to the search (303), which says whether the rebuild is over. From the API: waits up
    to the request timeout; 200 with the build's numbers, 202 while it runs on.

    Only this server's own pages may ask (:func:`~icepipe.web.app.refuse_cross_site`): a page
    of another site in the user's browser may not make the server re-read every repository.
    """
    refuse_cross_site(request)
    index = search_index(request.app)
    thread = index.rebuild()
    if _is_form(request):
        q = await _form_query(request)
        await _for_at_most(thread, min(REFRESH_WAIT, _timeout(request)))
        query = {"q": q, "reindexed": "1"} if q else {"reindexed": "1"}
        return RedirectResponse("/search?" + urlencode(query), status_code=303)
    timeout = _timeout(request)
    await _for_at_most(thread, timeout)
    if thread.is_alive() or index.state != "ready":
        state = "failed" if index.state == "failed" else "indexing"
        return JSONResponse(
            {"state": state, "error": index.error, "timeout": timeout},
            status_code=503 if state == "failed" else 202,
        )
    s = index.stats
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
