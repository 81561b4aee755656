"""What the web server shows: the catalog's repositories and the pipelines' targets.

:func:`known_repos` is asked on every request: it is cached by what it reads (the catalog
files and every pipeline file, each by ``(path, inode, mtime_ns, size)``, and the listing of
each pipeline folder), so an edited, added or deleted file shows on the next request and an
unchanged site costs a few ``stat`` calls. Each pipeline file is loaded once per version
(:func:`load_pipeline_cached`), shared by the catalog, the search index and the pipelines
page.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from icepipe.catalog import CatalogEntry, catalog_path, load_catalog
from icepipe.errors import ConfigError, IcepipeError

if TYPE_CHECKING:
    from icepipe.spec import Pipeline

__all__ = ["KnownRepo", "WebConfig", "known_repos", "load_pipeline_cached", "pipeline_files"]


@dataclass(frozen=True)
class WebConfig:
    """The server's settings (everything pickles; nothing here is a secret).

    ``pipelines``: folders or files of pipeline definitions whose target repositories, run
    reports and schedules are shown; ``catalog``: the catalog file (default: as every command:
    ``$ICEPIPE_CATALOG``, else ``~/.config/icepipe/catalog.yaml``); ``state_dir``: where run
    reports are (default: each pipeline's ``.icepipe/`` folder, as ``icepipe status``).
    ``request_timeout``: seconds one request may spend reading a repository;
    ``max_quicklook_chunks``: the most chunks one quicklook picture reads.
    ``workers``: the threads reading repositories (one pool per application);
    ``max_waiting``: the reads that may wait for a thread; past that a request is a 503
    ("busy"). A read that outlives its request (a 504) keeps its thread until its storage
    answers or times out (``config.storage.timeouts`` of the repository).
    ``allowed_hosts``: the host names a request may address (its ``Host`` header, port
    aside); empty: any (``icepipe web`` sets the loopback names when it listens on one,
    against DNS rebinding).
    """

    pipelines: tuple[str, ...] = ()
    catalog: str | None = None
    state_dir: str | None = None
    request_timeout: float = 20.0
    max_quicklook_chunks: int = 16
    max_search_results: int = 200
    workers: int = 8
    max_waiting: int = 64
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class KnownRepo:
    """A repository the server shows.

    ``key`` names it in URLs (``/repo?name=KEY``): the catalog name (``org/name``) when the
    catalog holds it, else the name of the first pipeline (sorted) writing into it.
    ``pipelines``: the pipeline files (paths) writing into it; ``specs``: those files loaded
    (same order).
    """

    key: str
    entry: CatalogEntry
    pipelines: tuple[str, ...] = field(default=())
    in_catalog: bool = True
    specs: tuple[Pipeline, ...] = field(default=(), compare=False, repr=False)


#: What a file was when read: path, inode, mtime (ns), size; ``None`` fields: no such file.
type Stamp = tuple[str, int | None, int | None, int | None]


def _stamp(path: str | os.PathLike[str]) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None, None, None)
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)


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


def _catalog_stamps(catalog: str | None) -> tuple[Stamp, ...]:
    """The catalog the server shows and the one ``catalog:`` targets of pipelines resolve
    against (``$ICEPIPE_CATALOG`` or the default: ``icepipe web --catalog`` sets both)."""
    shown, default = catalog_path(catalog), catalog_path(None)
    return (_stamp(shown),) if shown == default else (_stamp(shown), _stamp(default))


class _Cache[K, V]:
    """A small thread-safe LRU of values by key (``None``: not cached)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)


#: path -> (its stamp and the catalogs' stamps, the Pipeline or why it does not load)
_PIPELINES: _Cache[str, tuple[tuple[Stamp, ...], Pipeline | IcepipeError]] = _Cache(4096)
#: config -> (the stamps of every file read, the repositories)
_KNOWN: _Cache[WebConfig, tuple[tuple[Stamp, ...], tuple[KnownRepo, ...]]] = _Cache(16)


def load_pipeline_cached(
    path: str | os.PathLike[str], catalogs: tuple[Stamp, ...] | None = None
) -> Pipeline:
    """:func:`icepipe.spec.load_pipeline`, loaded again only when the file or the catalog
    ``catalog:`` targets resolve against changed (``catalogs``: that catalog's stamp, read
    when not given).

    Raises
    ------
    IcepipeError
        The file does not load (the same error as ``load_pipeline``'s).
    """
    from icepipe.spec import load_pipeline

    key = (_stamp(path), *(catalogs if catalogs is not None else _catalog_stamps(None)))
    cached = _PIPELINES.get(str(path))
    if cached is None or cached[0] != key:
        try:
            value: Pipeline | IcepipeError = load_pipeline(path)
        except IcepipeError as exc:
            value = exc
        cached = (key, value)
        _PIPELINES.put(str(path), cached)
    if isinstance(cached[1], IcepipeError):
        raise cached[1].with_traceback(None)
    return cached[1]


def known_repos(config: WebConfig) -> list[KnownRepo]:
    """The catalog's entries, then the pipelines' targets the catalog does not name, by key.

    A pipeline file that does not load is left out here (the pipelines page shows its error).
    Cached until a file it read changes, appears or goes (see the module's docstring).

    Raises
    ------
    ConfigError
        The catalog does not load, or a pipeline path given does not exist.
    """
    files = pipeline_files(config.pipelines)
    catalogs = _catalog_stamps(config.catalog)
    stamps = (*catalogs, *(_stamp(f) for f in files))
    cached = _KNOWN.get(config)
    if cached is not None and cached[0] == stamps:
        return list(cached[1])
    repos = tuple(_read_known_repos(config, files, catalogs))
    _KNOWN.put(config, (stamps, repos))
    return list(repos)


def _read_known_repos(
    config: WebConfig, files: list[Path], catalogs: tuple[Stamp, ...]
) -> list[KnownRepo]:
    catalog = load_catalog(config.catalog)
    by_url: dict[str, KnownRepo] = {
        e.url: KnownRepo(key=name, entry=e) for name, e in sorted(catalog.entries.items())
    }
    for path in files:
        try:
            p = load_pipeline_cached(path, catalogs[-1:])  # the one targets resolve against
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
            specs=(*known.specs, p),
        )
    return sorted(by_url.values(), key=lambda r: r.key)
