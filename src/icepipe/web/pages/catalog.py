"""The catalog: every repository the server knows (``/``, ``/api/repos``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from icepipe.web.app import render
from icepipe.web.config import known_repos


def _rows(request: Request) -> list[dict[str, object]]:
    return [
        {
            "key": r.key,
            "url": r.entry.url,
            "description": r.entry.description,
            "pipelines": list(r.pipelines),
            "in_catalog": r.in_catalog,
        }
        for r in known_repos(request.app.state.config)
    ]


async def catalog_page(request: Request) -> Response:
    return render(request, "catalog.html", {"repos": _rows(request)})


async def api_repos(request: Request) -> Response:
    return JSONResponse({"repos": _rows(request)})


ROUTES: list[BaseRoute] = [
    Route("/", catalog_page, name="catalog"),
    Route("/api/repos", api_repos, name="api_repos"),
]
