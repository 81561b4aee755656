"""One module per page family, each exporting ``ROUTES`` (its pages and their JSON API).

- ``catalog``: ``/`` (every repository); ``/api/repos``
- ``repo``: ``/repo?name=&ref=`` (tree, branches, tags, log), ``/diff?name=&a=&b=``;
  ``/api/repo``, ``/api/log``, ``/api/diff``
- ``array``: ``/array?name=&path=&ref=``; ``/api/array``, ``/quicklook.png``
- ``search``: ``/search?q=``; ``/api/search``, ``POST /api/reindex``
- ``pipelines``: ``/pipelines``; ``/api/pipelines``
"""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["all_routes"]


def all_routes() -> list[BaseRoute]:
    """The routes of every page module."""
    from icepipe.web.pages import array, catalog, pipelines, repo, search

    return [r for m in (catalog, repo, array, search, pipelines) for r in m.ROUTES]
