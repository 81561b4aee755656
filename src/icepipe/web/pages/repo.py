"""A repository: its tree at a ref, branches and tags, log, and diffs between refs.

- ``/repo?name=KEY[&ref=REF][&limit=N]``; ``/api/repo?name=&ref=`` (without the log)
- ``/api/log?name=&ref=&limit=`` (each commit with its pipeline and ingested files)
- ``/diff?name=KEY&a=REF&b=REF``; ``/api/diff?...`` (defaults: ``b`` the default branch,
  ``a`` its parent)

REF: a branch, a tag, a snapshot id, ``branch:NAME``/``tag:NAME``, any of them with ``~N``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icepipe.web.app import JSONResponse, optional_param, param, render
from icepipe.web.config import WebConfig
from icepipe.web.data import (
    Log,
    RepoPage,
    SnapshotCache,
    cache_for,
    diff_view,
    log_view,
    parse_limit,
    read_log_page,
    repo_view,
    run_blocking,
)


def _repo_and_log(
    config: WebConfig, key: str, ref: str | None, limit: int, cache: SnapshotCache
) -> tuple[RepoPage, Log]:
    repo, page = repo_view(config, key, ref, cache)
    return page, log_view(repo, key, page.ref, page.snapshot_id, limit)


async def repo_page(request: Request) -> Response:
    config = request.app.state.config
    key = param(request, "name")
    limit = parse_limit(optional_param(request, "limit"))
    page, log = await run_blocking(
        request,
        _repo_and_log,
        config,
        key,
        optional_param(request, "ref"),
        limit,
        cache_for(request),
        what=f"repository {key!r}",
    )
    return render(request, "repo.html", {"repo": page, "log": log})


async def api_repo(request: Request) -> Response:
    config = request.app.state.config
    key = param(request, "name")
    _repo, page = await run_blocking(
        request,
        repo_view,
        config,
        key,
        optional_param(request, "ref"),
        cache_for(request),
        what=f"repository {key!r}",
    )
    return JSONResponse(asdict(page))


async def api_log(request: Request) -> Response:
    config = request.app.state.config
    key = param(request, "name")
    log = await run_blocking(
        request,
        read_log_page,
        config,
        key,
        optional_param(request, "ref"),
        parse_limit(optional_param(request, "limit")),
        what=f"the log of repository {key!r}",
    )
    return JSONResponse(asdict(log))


async def _diff(request: Request) -> dict[str, Any]:
    config = request.app.state.config
    key = param(request, "name")
    d = await run_blocking(
        request,
        diff_view,
        config,
        key,
        optional_param(request, "a"),
        optional_param(request, "b"),
        what=f"the diff of repository {key!r}",
    )
    return asdict(d)


async def diff_page(request: Request) -> Response:
    return render(request, "diff.html", {"diff": await _diff(request)})


async def api_diff(request: Request) -> Response:
    return JSONResponse(await _diff(request))


ROUTES: list[BaseRoute] = [
    Route("/repo", repo_page, name="repo"),
    Route("/diff", diff_page, name="diff"),
    Route("/api/repo", api_repo, name="api_repo"),
    Route("/api/log", api_log, name="api_log"),
    Route("/api/diff", api_diff, name="api_diff"),
]
