"""The Starlette application: templates, error pages, and the routes of :mod:`.pages`.

Read-only: every route is a GET (but ``POST /api/reindex``, which rebuilds the search index
from the repositories). Unknown paths, repositories, refs and arrays are 404s (an HTML page,
or ``{"error": ...}`` under ``/api/``); a configuration problem is a 400 naming the fix; any
other error is a 500 that shows no traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from icepipe import __version__
from icepipe.errors import IcepipeError
from icepipe.ops.render import human_bytes
from icepipe.web.config import WebConfig
from icepipe.web.text import safe_text
from icepipe.web.workers import WorkerPool

__all__ = [
    "JSONResponse",
    "NotFound",
    "TimedOut",
    "Unavailable",
    "create_app",
    "host_name",
    "node_anchor",
    "optional_param",
    "param",
    "refuse_cross_site",
    "render",
    "templates",
]

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["icepipe_version"] = __version__


def _percent(share: float | None) -> str:
    """``42%``; ``-`` for ``None``."""
    return "-" if share is None else f"{share:.0%}"


def node_anchor(path: str) -> str:
    """The HTML id of a group's or array's row in a repository's tree (``node-/sst``), also
    the fragment of a link to it: no whitespace, anything unusual %-escaped."""
    return "node-" + quote(path, safe="/")


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` of a page: text that is not UTF-8 (lone surrogates, from
    attributes) shown escaped instead of failing the page (:func:`safe_text`)."""
    if isinstance(value, str):
        fixed = safe_text(value)
        if fixed is not value:
            return Markup(fixed) if isinstance(value, Markup) else fixed
    return value


def _utf8(value: Any) -> Any:
    """``value`` (JSON data) with every string and key passed through :func:`safe_text`."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_utf8(v) for v in value]
    return value


class JSONResponse(_StarletteJSON):
    """Starlette's ``JSONResponse``; text that is not UTF-8 (lone surrogates) escaped as
    :func:`safe_text` does instead of failing the answer."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(_utf8(content))


templates.env.finalize = _finalize
templates.env.filters["filesize"] = human_bytes
templates.env.filters["node_anchor"] = node_anchor
templates.env.filters["percent"] = _percent


class NotFound(HTTPException):
    """A repository, ref, group, array or pipeline the server does not know (a clean 404).

    ``links``: ``(text, url)`` pairs the error page offers (e.g. the repository at its
    default branch, when the branch asked for was deleted).
    """

    def __init__(self, what: str, links: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(status_code=404, detail=what)
        self.links = list(links)


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


def host_name(host: str) -> str:
    """The name of a ``Host`` header or an origin's ``netloc``, its port left out (IPv6
    literals keep no brackets), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def refuse_cross_site(request: Request) -> None:
    """Refuse a request that a page of another site made the user's browser send.

    The server listens on 127.0.0.1, yet any page the user opens could POST to it: browsers
    say where a request comes from (``Sec-Fetch-Site``, ``Origin``, else ``Referer``), and
    it must be this server (scheme, host and port of the ``Host`` the request addresses). A
    client sending none of them (curl, scripts) is no browser driven by another site.

    Raises
    ------
    HTTPException
        A 403 naming what the browser said.
    """
    headers = request.headers
    source = headers.get("origin") or headers.get("referer")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        where = f" from {source[:200]!r}" if source else ""
        raise HTTPException(
            status_code=403,
            detail=f"refused: a {fetch_site} request{where}; only this server's own pages may "
            "send it",
        )
    if source is None:
        return
    parts = urlsplit(source)
    here = headers.get("host", "").strip().lower()
    if source == "null" or parts.netloc.lower() != here or parts.scheme != request.url.scheme:
        raise HTTPException(
            status_code=403,
            detail=f"refused: a request from {source[:200]!r}, not from this server ({here!r}); "
            "only this server's own pages may send it",
        )


class _TrustedHosts:
    """Answer only requests addressed to one of ``names`` (the ``Host`` header): a page of
    another site cannot reach a server on 127.0.0.1 through a name of its own that resolves
    there (DNS rebinding)."""

    def __init__(self, app: ASGIApp, names: tuple[str, ...]) -> None:
        self.app = app
        self.names = {host_name(n) for n in names}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if host_name(host) not in self.names:
                detail = (
                    f"this server answers requests for {', '.join(sorted(self.names))}, not "
                    f"{host[:100]!r} (start icepipe web with --host to serve another address)"
                )
                await PlainTextResponse(detail, status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
        response: Response = JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    else:
        links = getattr(exc, "links", [])
        context = {"status": exc.status_code, "detail": exc.detail, "links": links}
        response = render(request, "error.html", context, exc.status_code)
    response.headers.update(exc.headers or {})  # Retry-After of a 503
    return response


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

    ``app.state.config`` holds ``config``, ``app.state.workers`` the threads that read
    repositories (:class:`~icepipe.web.workers.WorkerPool`); page modules keep what they
    cache on ``app.state`` too (one application per server; tests build their own). With
    ``config.allowed_hosts``, a request addressed to another host name is a 421.
    """
    from icepipe.web.pages import all_routes
    from icepipe.web.pages.search import search_lifespan

    routes = [
        *all_routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = (
        [Middleware(_TrustedHosts, names=config.allowed_hosts)] if config.allowed_hosts else []
    )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=search_lifespan,
        exception_handlers={
            HTTPException: _http_error,
            IcepipeError: _icepipe_error,
            Exception: _server_error,
        },
    )
    app.state.config = config
    app.state.workers = WorkerPool(config.workers, config.max_waiting)
    return app
