"""What the pages read from repositories: catalog rows, a ref's tree, branches and tags, the log
with each commit's ingested files, diffs. Plain dataclasses out (``dataclasses.asdict`` gives
the JSON API's answer).

Reading is blocking (Icechunk, zarr): pages call these functions through :func:`run_blocking`,
in a worker thread under the server's ``request_timeout``. Everything here only reads: no
commit, no branch move, no lock (``open_repo`` without containers writes nothing).

Helpers for every page module:

- :func:`run_blocking` -- ``await run_blocking(request, fn, *args, what=)``: ``fn`` on one
  of the application's bounded worker threads; :class:`~icepipe.web.app.TimedOut` (a 504
  naming ``what``) when it takes too long, :class:`~icepipe.web.workers.Busy` (a 503) when
  every thread is taken and the queue is full;
- :func:`find_known` / :func:`open_known` -- a known repository by key, and it opened
  (:class:`~icepipe.web.app.NotFound` for an unknown key or a repository not created yet);
- :func:`resolve_ref_or_404` -- a ref's snapshot id, or a 404 naming the repository's refs;
- :func:`default_branch` -- ``main``, else the first branch;
- :func:`cache_for` -- a bounded cache on ``app.state`` for what is read from a snapshot
  (immutable: keys hold the snapshot id).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import anyio
from starlette.exceptions import HTTPException

from icepipe import repository
from icepipe.errors import ConfigError, IcepipeError
from icepipe.ops.repos import shown_storage
from icepipe.web.app import NotFound, TimedOut, Unavailable
from icepipe.web.config import KnownRepo, WebConfig, known_repos
from icepipe.web.workers import Busy, WorkerPool

if TYPE_CHECKING:
    import icechunk
    from starlette.requests import Request

    from icepipe.repository import ArrayInfo, CommitInfo, CommitRecord, RefInfo

__all__ = [
    "DEFAULT_LOG_LIMIT",
    "MAX_DIFF_FILES",
    "MAX_FILES_SHOWN",
    "MAX_LOG_LIMIT",
    "Commit",
    "Diff",
    "Log",
    "Node",
    "Ref",
    "RepoPage",
    "RepoRow",
    "row_base",
    "SnapshotCache",
    "cache_for",
    "catalog_row",
    "default_branch",
    "diff_view",
    "find_known",
    "log_view",
    "open_known",
    "parse_limit",
    "read_log_page",
    "repo_view",
    "resolve_ref_or_404",
    "run_blocking",
    "shown_storage",
    "workers_of",
]

#: Commits a log shows unless asked (``limit``), and the most it ever shows.
DEFAULT_LOG_LIMIT = 50
MAX_LOG_LIMIT = 500
#: Files listed per commit (a commit of a large backfill may ingest thousands).
MAX_FILES_SHOWN = 200
#: Files listed by a diff (which may span a backfill of years).
MAX_DIFF_FILES = 2000

# ----------------------------------------------------------------------------------------------
# Helpers for the page modules
# ----------------------------------------------------------------------------------------------


async def run_blocking[T](
    request: Request, fn: Callable[..., T], *args: Any, what: str, timeout: float | None = None
) -> T:
    """``fn(*args)`` on one of the application's worker threads (:func:`workers_of`), given
    at most ``timeout`` seconds (default: the server's ``request_timeout``), waiting for a
    free thread included.

    Raises
    ------
    TimedOut
        ``fn`` took longer (a 504 page naming ``what``, e.g. ``"repository 'demo/nemo'"``).
        The thread is abandoned, not killed: it ends when its read does (storage timeouts
        bound it) and counts against the pool until then.
    Busy
        Every worker thread is taken and the queue is full (a 503).
    """
    if timeout is None:
        timeout = float(request.app.state.config.request_timeout)
    pool = workers_of(request)
    future = pool.submit(fn, *args)
    if future is None:
        raise Busy(what, pool)
    try:
        with anyio.fail_after(timeout):
            return await asyncio.wrap_future(future)
    except TimeoutError:
        future.cancel()  # still queued: its place is free again
        raise TimedOut(what, timeout) from None


def workers_of(request: Request) -> WorkerPool:
    """The application's :class:`~icepipe.web.workers.WorkerPool` (``config.workers``
    threads, ``config.max_waiting`` queued), made on first use."""
    state = request.app.state
    with _POOL_LOCK:
        pool: WorkerPool | None = getattr(state, "workers", None)
        if pool is None:
            config: WebConfig = state.config
            pool = WorkerPool(config.workers, config.max_waiting)
            state.workers = pool
    return pool


_POOL_LOCK = threading.Lock()


class SnapshotCache:
    """What was read from immutable things (a snapshot's tree, statistics), by key; the least
    recently used entries go beyond ``size``. Thread-safe (pages read in worker threads)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get[T](self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value cached under ``key``, else ``compute()`` (cached)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                value: T = self._values[key]
                return value
            self.misses += 1
        value = compute()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


def cache_for(request: Request, name: str = "snapshot_cache", size: int = 512) -> SnapshotCache:
    """The application's :class:`SnapshotCache` ``name`` (made on first use, holding up to
    ``size`` values)."""
    state = request.app.state
    cache = getattr(state, name, None)
    if cache is None:
        cache = SnapshotCache(size)
        setattr(state, name, cache)
    assert isinstance(cache, SnapshotCache)
    return cache


def find_known(config: WebConfig, key: str) -> KnownRepo:
    """The repository the server knows as ``key``.

    Raises
    ------
    NotFound
        No repository of the catalog or of the pipelines has that key.
    """
    repos = known_repos(config)
    for r in repos:
        if r.key == key:
            return r
    keys = ", ".join(r.key for r in repos[:20]) or "none"
    raise NotFound(f"no repository named {key!r} in the catalog or the pipelines; known: {keys}")


def open_known(config: WebConfig, key: str) -> tuple[icechunk.Repository, KnownRepo]:
    """The repository known as ``key``, opened read-only (nothing written, no lock taken).

    Raises
    ------
    NotFound
        Unknown key, or no repository at its location yet (no pipeline committed to it).
    Unavailable
        It cannot be opened (storage unreachable, credentials refused: the message says).
    """
    known = find_known(config, key)
    e = known.entry
    try:
        repo = repository.open_repo(e.url, storage=e.storage, config=e.config)
    except repository.RepoNotFoundError:
        links = [
            (f"pipeline {p.name}: its runs", f"/pipelines#pipeline-{quote(p.name)}")
            for p in known.specs
        ]
        raise NotFound(
            f"no repository {key!r} at {e.url}: not created yet (no pipeline has committed to "
            "it), or deleted or moved since",
            links,
        ) from None
    except IcepipeError as exc:
        raise Unavailable(f"cannot open repository {key!r}: {exc}") from exc
    return repo, known


def resolve_ref_or_404(
    repo: icechunk.Repository, key: str, ref: str, *, path: str | None = None
) -> str:
    """The snapshot id ``ref`` names in ``repo`` (see :func:`icepipe.repository.resolve_ref`).

    Raises
    ------
    NotFound
        No branch, tag or snapshot of that name (the message lists the refs; the page links
        to the repository, and to the array ``path`` when given, at the default branch: a
        branch deleted while its page was open).
    """
    try:
        return repository.resolve_ref(repo, ref)
    except ConfigError as exc:
        links = [(f"{key} at its default branch", "/repo?" + urlencode({"name": key}))]
        if path:
            array = "/array?" + urlencode({"name": key, "path": path})
            links.insert(0, (f"{path} at the default branch", array))
        raise NotFound(f"repository {key!r}: {exc}", links) from None


def parse_limit(text: str | None) -> int:
    """A log's ``limit`` parameter: :data:`DEFAULT_LOG_LIMIT` when absent, at most
    :data:`MAX_LOG_LIMIT` (larger values are cut down to it).

    Raises
    ------
    HTTPException
        A 400 when it is not a positive whole number.
    """
    if not text:
        return DEFAULT_LOG_LIMIT
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise HTTPException(
            status_code=400, detail=f"limit: expected a whole number from 1; got {text!r}"
        )
    return min(n, MAX_LOG_LIMIT)


def default_branch(branches: Sequence[str]) -> str | None:
    """``main``, else the first branch by name (``None`` without branches)."""
    if "main" in branches:
        return "main"
    return min(branches) if branches else None


def _default_ref(repo: icechunk.Repository) -> str:
    branches = [r.name for r in repository.list_refs(repo) if r.kind == "branch"]
    return default_branch(branches) or "main"


# ----------------------------------------------------------------------------------------------
# What pages show
# ----------------------------------------------------------------------------------------------


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Commit:
    """One commit: when, its message, and icepipe's provenance when icepipe made it
    (``files``: the source files it ingested, the first :data:`MAX_FILES_SHOWN`)."""

    id: str
    written_at: str
    message: str
    pipeline: str | None = None
    mode: str | None = None
    group: str | None = None
    n_files: int | None = None
    files: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, info: CommitInfo, record: CommitRecord | None = None) -> Commit:
        files = [f.url for f in (record.files if record else None) or ()]
        return cls(
            id=info.id,
            written_at=_time(info.written_at),
            message=info.message,
            pipeline=info.pipeline,
            mode=info.mode,
            group=info.group,
            n_files=info.n_files if info.n_files is not None else (len(files) or None),
            files=files[:MAX_FILES_SHOWN],
        )


@dataclass(frozen=True)
class Ref:
    """A branch or tag and the commit it points to."""

    kind: str
    name: str
    snapshot_id: str
    written_at: str
    message: str

    @classmethod
    def of(cls, r: RefInfo) -> Ref:
        return cls(r.kind, r.name, r.snapshot_id, _time(r.written_at), r.message)


@dataclass(frozen=True)
class RepoRow:
    """A catalog row: the repository, and what it holds at its default branch's tip.

    ``exists``: ``False`` when nothing is at the location yet, ``None`` when it could not be
    opened or read in time (``problem`` says why). ``native_bytes``: chunks stored in the
    repository itself (native and inline) reachable from any branch or tag;
    ``virtual_share``: the share of the tip's written chunks that are virtual references
    (``None`` when nothing is written).
    """

    key: str
    url: str
    description: str
    pipelines: list[str]
    in_catalog: bool
    storage: dict[str, Any]
    exists: bool | None = None
    problem: str | None = None
    branches: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    default_branch: str | None = None
    last_commit: Commit | None = None
    chunks: dict[str, int] | None = None
    virtual_share: float | None = None
    native_bytes: int | None = None
    virtual_bytes: int | None = None


def row_base(known: KnownRepo) -> dict[str, Any]:
    """The fields of a :class:`RepoRow` that need no reading."""
    return {
        "key": known.key,
        "url": known.entry.url,
        "description": known.entry.description,
        "pipelines": list(known.pipelines),
        "in_catalog": known.in_catalog,
        "storage": shown_storage(known.entry),
    }


def _share(counts: dict[str, int]) -> float | None:
    written = sum(counts.values())
    return counts.get("virtual", 0) / written if written else None


def catalog_row(known: KnownRepo, cache: SnapshotCache) -> RepoRow:
    """``known``'s catalog row (blocking). Problems become the row's ``problem``, never errors.

    What is read from the tip is cached by snapshot id; the storage statistics by the set of
    branch and tag tips (they cover every reachable snapshot).
    """
    base = row_base(known)
    e = known.entry
    try:
        repo = repository.open_repo(e.url, storage=e.storage, config=e.config)
    except repository.RepoNotFoundError:
        return RepoRow(**base, exists=False)
    except IcepipeError as exc:
        return RepoRow(**base, problem=f"cannot open: {exc}")
    try:
        refs = repository.list_refs(repo)
        branches = [r.name for r in refs if r.kind == "branch"]
        default = default_branch(branches)
        tip = next(r.snapshot_id for r in refs if r.kind == "branch" and r.name == default)
        last, counts = cache.get(
            ("tip", known.key, e.url, tip),
            lambda: (_last_commit(repo, tip), repository.chunk_counts(repo, tip)),
        )
        tips = tuple(sorted((r.kind, r.name, r.snapshot_id) for r in refs))
        stats = cache.get(
            ("storage", known.key, e.url, tips), lambda: repository.storage_stats(repo)
        )
    except (IcepipeError, StopIteration) as exc:
        return RepoRow(**base, exists=True, problem=f"cannot read: {exc}")
    return RepoRow(
        **base,
        exists=True,
        branches=branches,
        tags=[r.name for r in refs if r.kind == "tag"],
        default_branch=default,
        last_commit=last,
        chunks=counts,
        virtual_share=_share(counts),
        native_bytes=stats.native + stats.inline,
        virtual_bytes=stats.virtual,
    )


def _last_commit(repo: icechunk.Repository, tip: str) -> Commit:
    ((info, record),) = repository.read_history(repo, tip, limit=1)
    return Commit.of(info, record)


@dataclass(frozen=True)
class Node:
    """A group or array of a snapshot's tree (see :class:`icepipe.repository.ArrayInfo`);
    ``chunks`` as text (``1x332x362``; a rectilinear dimension as its lengths: ``(56,93)``)."""

    path: str
    name: str
    depth: int
    is_group: bool
    shape: list[int] | None = None
    dtype: str | None = None
    dims: list[str] = field(default_factory=list)
    chunks: str | None = None
    shards: list[int] | None = None
    grid: int = 0
    native: int = 0
    inline: int = 0
    virtual: int = 0
    empty: int = 0

    @classmethod
    def of(cls, n: ArrayInfo) -> Node:
        name = n.path.rsplit("/", 1)[-1] or "/"
        depth = 0 if n.path == "/" else n.path.count("/")
        if n.is_group:
            return cls(path=n.path, name=name, depth=depth, is_group=True)
        return cls(
            path=n.path,
            name=name,
            depth=depth,
            is_group=False,
            shape=list(n.shape or ()),
            dtype=n.dtype,
            dims=list(n.dims),
            chunks=_chunks_text(n),
            shards=list(n.shards) if n.shards else None,
            grid=n.grid,
            native=n.native,
            inline=n.inline,
            virtual=n.virtual,
            empty=n.empty,
        )


def _chunks_text(n: ArrayInfo) -> str:
    edges = n.edges or (None,) * len(n.chunks or ())
    parts = []
    for k, e in zip(n.chunks or (), edges, strict=True):
        if e is None:
            parts.append(str(k))
        elif len(e) <= 8:
            parts.append(f"({','.join(map(str, e))})")
        else:
            parts.append(f"({len(e)} chunks {min(e)}-{max(e)})")
    return "x".join(parts)


@dataclass(frozen=True)
class RepoPage:
    """A repository at a ref: its tree, branches and tags."""

    key: str
    url: str
    description: str
    pipelines: list[str]
    storage: dict[str, Any]
    ref: str
    snapshot_id: str
    default_branch: str | None
    branches: list[Ref]
    tags: list[Ref]
    tree: list[Node]


def repo_view(
    config: WebConfig, key: str, ref: str | None, cache: SnapshotCache
) -> tuple[icechunk.Repository, RepoPage]:
    """The repository ``key`` at ``ref`` (default: its default branch), blocking; the open
    repository too, for reading its log without opening it again.

    Raises
    ------
    NotFound
        Unknown key or ref, or no repository there yet.
    """
    repo, known = open_known(config, key)
    refs = repository.list_refs(repo)
    default = default_branch([r.name for r in refs if r.kind == "branch"])
    ref = ref or default or "main"
    snapshot_id = resolve_ref_or_404(repo, key, ref)
    url = known.entry.url
    tree = cache.get(
        ("tree", key, url, snapshot_id),
        lambda: [Node.of(n) for n in repository.tree_info(repo, snapshot_id)],
    )
    return repo, RepoPage(
        key=key,
        url=url,
        description=known.entry.description,
        pipelines=list(known.pipelines),
        storage=shown_storage(known.entry),
        ref=ref,
        snapshot_id=snapshot_id,
        default_branch=default,
        branches=[Ref.of(r) for r in refs if r.kind == "branch"],
        tags=[Ref.of(r) for r in refs if r.kind == "tag"],
        tree=tree,
    )


@dataclass(frozen=True)
class Log:
    """The ``limit`` newest commits of a ref's history (``more``: older ones exist)."""

    key: str
    ref: str
    snapshot_id: str
    limit: int
    more: bool
    commits: list[Commit]


def log_view(repo: icechunk.Repository, key: str, ref: str, snapshot_id: str, limit: int) -> Log:
    """The log of ``snapshot_id`` (which ``ref`` names), blocking."""
    history = repository.read_history(repo, snapshot_id, limit=limit + 1)
    commits = [Commit.of(info, record) for info, record in history[:limit]]
    return Log(key, ref, snapshot_id, limit, len(history) > limit, commits)


def read_log_page(config: WebConfig, key: str, ref: str | None, limit: int) -> Log:
    """``/api/log``: the log of ``key`` at ``ref`` (default: its default branch), blocking."""
    repo, _known = open_known(config, key)
    ref = ref or _default_ref(repo)
    return log_view(repo, key, ref, resolve_ref_or_404(repo, key, ref), limit)


@dataclass(frozen=True)
class Diff:
    """What changed from ref ``a`` to ref ``b`` (see :class:`icepipe.repository.RepoDiff`)."""

    key: str
    a: str
    b: str
    from_id: str
    to_id: str
    new_groups: list[str]
    new_arrays: list[str]
    deleted_groups: list[str]
    deleted_arrays: list[str]
    updated_groups: list[str]
    updated_arrays: list[str]
    updated_chunks: dict[str, int]
    commits: list[Commit]
    #: The source files the commits ingested: the first :data:`MAX_DIFF_FILES` of ``n_files``.
    files: list[str]
    n_files: int


def diff_view(config: WebConfig, key: str, a: str | None, b: str | None) -> Diff:
    """The changes from ``a`` to ``b`` (defaults: ``b`` the default branch, ``a`` = ``b~1``,
    or ``b`` itself when it has no parent), blocking.

    Raises
    ------
    NotFound
        Unknown key or ref.
    ConfigError
        ``a`` is not an ancestor of ``b`` (a 400 naming their common ancestor).
    """
    repo, _known = open_known(config, key)
    b = b or _default_ref(repo)
    resolve_ref_or_404(repo, key, b)
    if not a:
        a = f"{b}~1"
        try:
            resolve_ref_or_404(repo, key, a)
        except NotFound:  # b is the first snapshot (a new repository): nothing before it
            a = b
    resolve_ref_or_404(repo, key, a)
    d = repository.diff_refs(repo, a, b)
    return Diff(
        key=key,
        a=a,
        b=b,
        from_id=d.from_id,
        to_id=d.to_id,
        new_groups=d.new_groups,
        new_arrays=d.new_arrays,
        deleted_groups=d.deleted_groups,
        deleted_arrays=d.deleted_arrays,
        updated_groups=d.updated_groups,
        updated_arrays=d.updated_arrays,
        updated_chunks=d.updated_chunks,
        commits=[Commit.of(c) for c in d.commits],
        files=d.files[:MAX_DIFF_FILES],
        n_files=len(d.files),
    )
