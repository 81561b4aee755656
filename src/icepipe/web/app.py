"""The Starlette application: templates, error pages, and the routes of :mod:`.pages`.

Read-only: every route is a GET (but ``POST /api/reindex``, which rebuilds the search index
from the repositories). Unknown paths, repositories, refs and arrays are 404s (an HTML page,
or ``{"error": ...}`` under ``/api/``); a configuration problem is a 400 naming the fix; any
other error is a 500 that shows no traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from icepipe import __version__
from icepipe.errors import IcepipeError
from icepipe.ops.render import human_bytes
from icepipe.web.config import WebConfig

__all__ = [
    "NotFound",
    "TimedOut",
    "Unavailable",
    "create_app",
    "optional_param",
    "param",
    "render",
    "templates",
]

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["icepipe_version"] = __version__


def _percent(share: float | None) -> str:
    """``42%``; ``-`` for ``None``."""
    return "-" if share is None else f"{share:.0%}"


templates.env.filters["filesize"] = human_bytes
templates.env.filters["percent"] = _percent


class NotFound(HTTPException):
    """A repository, ref, group, array or pipeline the server does not know (a clean 404)."""

    def __init__(self, what: str) -> None:
        super().__init__(status_code=404, detail=what)


class TimedOut(HTTPException):
    """Reading a repository took longer than the server's ``request_timeout`` (a 504)."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(
            status_code=504,
            detail=f"reading {what} took longer than {timeout:g} s (the server's request "
            "timeout): the storage is slow or unreachable; try again later",
        )


class Unavailable(HTTPException):
    """A repository the server knows cannot be read now (a 502 naming it and why)."""

    def __init__(self, what: str) -> None:
        super().__init__(status_code=502, detail=what)


def param(request: Request, name: str) -> str:
    """The query parameter ``name``.

    Raises
    ------
    HTTPException
        A 400 naming the parameter when it is missing or empty.
    """
    value = request.query_params.get(name)
    if not value:
        raise HTTPException(status_code=400, detail=f"missing query parameter {name!r}")
    return value


def optional_param(request: Request, name: str) -> str | None:
    """The query parameter ``name``, ``None`` when missing or empty."""
    return request.query_params.get(name) or None


def wants_json(request: Request) -> bool:
    """Whether the request is for the JSON API (``/api/...``)."""
    return request.url.path.startswith("/api/")


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page: ``template`` (under ``web/templates/``, extending ``base.html``) with ``context``."""
    return templates.TemplateResponse(request, template, context, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if wants_json(request):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return render(
        request, "error.html", {"status": exc.status_code, "detail": exc.detail}, exc.status_code
    )


async def _icepipe_error(request: Request, exc: Exception) -> Response:
    """icepipe's own errors say what failed and the fix: a configuration problem is a 400, a
    storage one a 502; their messages hold no secrets (credentials are never in them)."""
    from icepipe.errors import ConfigError

    status = 400 if isinstance(exc, ConfigError) else 502
    return await _http_error(request, HTTPException(status_code=status, detail=str(exc)))


async def _server_error(request: Request, exc: Exception) -> Response:
    detail = "internal error (see the server's log)"
    if wants_json(request):
        return JSONResponse({"error": detail}, status_code=500)
    return render(request, "error.html", {"status": 500, "detail": detail}, 500)


def create_app(config: WebConfig) -> Starlette:
    """The application serving ``config``'s repositories and pipelines.

    ``app.state.config`` holds ``config``; page modules keep what they cache on ``app.state``
    too (one application per server; tests build their own).
    """
    from icepipe.web.pages import all_routes
    from icepipe.web.pages.search import search_lifespan

    routes = [
        *all_routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=search_lifespan,
        exception_handlers={
            HTTPException: _http_error,
            IcepipeError: _icepipe_error,
            Exception: _server_error,
        },
    )
    app.state.config = config
    return app
