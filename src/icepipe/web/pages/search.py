"""Pages of the search family (see :mod:`icepipe.web.pages`)."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
