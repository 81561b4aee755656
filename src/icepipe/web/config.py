"""What the web server shows: the catalog's repositories and the pipelines' targets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from icepipe.catalog import CatalogEntry, load_catalog
from icepipe.errors import ConfigError, IcepipeError

__all__ = ["KnownRepo", "WebConfig", "known_repos", "pipeline_files"]


@dataclass(frozen=True)
class WebConfig:
    """The server's settings (everything pickles; nothing here is a secret).

    ``pipelines``: folders or files of pipeline definitions whose target repositories, run
    reports and schedules are shown; ``catalog``: the catalog file (default: as every command:
    ``$ICEPIPE_CATALOG``, else ``~/.config/icepipe/catalog.yaml``); ``state_dir``: where run
    reports are (default: each pipeline's ``.icepipe/`` folder, as ``icepipe status``).
    ``request_timeout``: seconds one request may spend reading a repository;
    ``max_quicklook_chunks``: the most chunks one quicklook picture reads.
    """

    pipelines: tuple[str, ...] = ()
    catalog: str | None = None
    state_dir: str | None = None
    request_timeout: float = 20.0
    max_quicklook_chunks: int = 16
    max_search_results: int = 200


@dataclass(frozen=True)
class KnownRepo:
    """A repository the server shows.

    ``key`` names it in URLs (``/repo?name=KEY``): the catalog name (``org/name``) when the
    catalog holds it, else the name of the first pipeline (sorted) writing into it.
    ``pipelines``: the pipeline files (paths) writing into it.
    """

    key: str
    entry: CatalogEntry
    pipelines: tuple[str, ...] = field(default=())
    in_catalog: bool = True


def pipeline_files(paths: tuple[str, ...]) -> list[Path]:
    """The pipeline files of ``paths`` (folders listed as ``icepipe status`` lists them).

    Raises
    ------
    ConfigError
        A path does not exist.
    """
    from icepipe.ops.status import find_pipelines

    out: list[Path] = []
    for p in paths:
        if not os.path.exists(p):
            raise ConfigError(f"no such pipeline file or folder: {p!r}", field="PIPELINES")
        out.extend(find_pipelines(p))
    return sorted(set(out))


def known_repos(config: WebConfig) -> list[KnownRepo]:
    """The catalog's entries, then the pipelines' targets the catalog does not name, by key.

    A pipeline file that does not load is left out here (the pipelines page shows its error).
    """
    from icepipe.spec import load_pipeline

    catalog = load_catalog(config.catalog)
    by_url: dict[str, KnownRepo] = {
        e.url: KnownRepo(key=name, entry=e) for name, e in sorted(catalog.entries.items())
    }
    for path in pipeline_files(config.pipelines):
        try:
            p = load_pipeline(path)
        except IcepipeError:  # shown on the pipelines page, not here
            continue
        t = p.target
        known = by_url.get(t.repo)
        if known is None:
            entry = CatalogEntry(name=p.name, url=t.repo, storage=t.storage, config=t.config)
            known = KnownRepo(key=p.name, entry=entry, in_catalog=False)
        by_url[t.repo] = KnownRepo(
            key=known.key,
            entry=known.entry,
            pipelines=(*known.pipelines, str(path)),
            in_catalog=known.in_catalog,
        )
    return sorted(by_url.values(), key=lambda r: r.key)
