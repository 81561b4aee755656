"""Branches, tags, diffs, compare-and-set branch moves, what a snapshot's tree holds, and the
deletion of local repositories.

The functions take an open ``icechunk.Repository`` (see :func:`icepipe.repository.open_repo`),
except the two that delete a local repository by its location (:func:`delete_local_repo`,
:func:`discard_unused_repo`, under the commit lock), and convert Icechunk's errors into
icepipe's: a missing ref or a tag name that was used before is a :class:`ConfigError`, a branch
that moved is a :class:`ConflictError`, anything else a :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import icechunk
import zarr
from zarr.core.metadata.v3 import RegularChunkGridMetadata

from icepipe.errors import ConfigError, ConflictError
from icepipe.faults import storage_failure
from icepipe.repository.grids import rectilinear_enabled
from icepipe.repository.history import CommitInfo
from icepipe.repository.ledger import read_record
from icepipe.repository.repo import _local_path, commit_lock
from icepipe.storage import is_local

__all__ = [
    "ArrayInfo",
    "RefInfo",
    "RepoDiff",
    "StorageStats",
    "chunk_counts",
    "create_branch",
    "container_urls",
    "create_tag",
    "delete_branch",
    "delete_local_repo",
    "discard_unused_repo",
    "diff_refs",
    "list_refs",
    "move_branch",
    "resolve_ref",
    "storage_stats",
    "tree_info",
]

_SNAPSHOT_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}$")  # Crockford base32, 12 bytes
_ANCESTOR = re.compile(r"^(?P<ref>.+?)~(?P<n>\d+)$")
_REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")


def _msg(exc: BaseException) -> str:
    """An Icechunk error without its multi-line ``context:`` trace."""
    return str(exc).split("\n\ncontext:", 1)[0].strip()


@dataclass(frozen=True)
class RefInfo:
    """A branch or tag and the snapshot it points to."""

    kind: str  # "branch" | "tag"
    name: str
    snapshot_id: str
    written_at: datetime
    message: str


def list_refs(repo: icechunk.Repository) -> list[RefInfo]:
    """Every branch and tag with its snapshot, branches first, each sorted by name.

    Raises
    ------
    StorageError
        The refs cannot be read.
    """
    out: list[RefInfo] = []
    try:
        for kind, names, lookup in (
            ("branch", repo.list_branches(), repo.lookup_branch),
            ("tag", repo.list_tags(), repo.lookup_tag),
        ):
            for name in sorted(names):
                snap = repo.lookup_snapshot(lookup(name))
                out.append(RefInfo(kind, name, snap.id, snap.written_at, snap.message))
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, "cannot read the branches and tags") from exc
    return out


def resolve_ref(repo: icechunk.Repository, ref: str) -> str:
    """The snapshot id a ref names: a branch, a tag or a snapshot id, optionally followed by
    ``~N`` for its N-th ancestor (``main~1`` is the commit before ``main``'s tip).

    Branches win over tags of the same name; ``branch:NAME``, ``tag:NAME`` and
    ``snapshot:ID`` say which is meant.

    Raises
    ------
    ConfigError
        Nothing has that name, or the history is shorter than ``N``.
    """
    m = _ANCESTOR.match(ref)
    base, steps = (m["ref"], int(m["n"])) if m else (ref, 0)
    kind, _, name = base.partition(":") if ":" in base else ("", "", base)
    try:
        snapshot_id = _lookup(repo, kind, name)
        if snapshot_id is None:
            raise ConfigError(
                f"no branch, tag or snapshot named {ref!r}; branches: "
                f"{', '.join(sorted(repo.list_branches()))}; tags: "
                f"{', '.join(sorted(repo.list_tags())) or 'none'} (see `icepipe branch REPO "
                "list`)"
            )
        if steps:
            ancestry = repo.ancestry(snapshot_id=snapshot_id)
            for i, snap in enumerate(ancestry):
                if i == steps:
                    return snap.id
            raise ConfigError(f"{base!r} has fewer than {steps} ancestors; got {ref!r}")
        return snapshot_id
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot resolve {ref!r}") from exc


def _lookup(repo: icechunk.Repository, kind: str, name: str) -> str | None:
    if kind not in ("", "branch", "tag", "snapshot"):
        raise ConfigError(f"expected branch:, tag: or snapshot: before a name; got {kind!r}:")
    if kind in ("", "branch") and name in repo.list_branches():
        return repo.lookup_branch(name)
    if kind in ("", "tag") and name in repo.list_tags():
        return repo.lookup_tag(name)
    if kind in ("", "snapshot") and _SNAPSHOT_ID.match(name):
        try:
            return repo.lookup_snapshot(name).id
        except icechunk.NotFoundError:
            return None
    return None


def _check_ref_name(name: str, what: str) -> None:
    if not _REF_NAME.match(name) or ".." in name or name.endswith("/"):
        raise ConfigError(
            f"expected a {what} name of letters, digits, '_', '-', '.' and '/'; got {name!r}"
        )


def create_tag(repo: icechunk.Repository, name: str, snapshot_id: str) -> None:
    """Tag ``snapshot_id`` as ``name``.

    Tags are immutable and their names can never be used again, not even after the tag was
    deleted: choose names that say what they mark (``release-2026-01``).

    Raises
    ------
    ConfigError
        The name is taken, or was taken by a deleted tag.
    StorageError
        The tag cannot be written.
    """
    _check_ref_name(name, "tag")
    try:
        repo.create_tag(name, snapshot_id)
    except icechunk.AlreadyExistsError as exc:
        if name in repo.list_tags():
            where = repo.lookup_tag(name)
            detail = f"already exists (on {where}); tags are immutable"
        else:
            detail = "was used by a deleted tag; Icechunk never reuses tag names"
        raise ConfigError(f"tag {name!r} {detail}: choose another name") from exc
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot create tag {name!r}") from exc


def create_branch(repo: icechunk.Repository, name: str, snapshot_id: str) -> None:
    """Create branch ``name`` at ``snapshot_id``.

    Raises
    ------
    ConfigError
        The branch exists already.
    StorageError
        The branch cannot be written.
    """
    _check_ref_name(name, "branch")
    try:
        repo.create_branch(name, snapshot_id)
    except icechunk.AlreadyExistsError as exc:
        raise ConfigError(
            f"branch {name!r} exists already (at {repo.lookup_branch(name)}); delete it first "
            "or choose another name"
        ) from exc
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot create branch {name!r}") from exc


def delete_branch(repo: icechunk.Repository, name: str) -> str:
    """Delete branch ``name``; return the snapshot it pointed to (still reachable by id until
    ``icepipe gc`` with expiry removes it).

    Raises
    ------
    ConfigError
        No such branch, or ``main`` (which Icechunk never deletes).
    StorageError
        The branch cannot be deleted.
    """
    if name == "main":
        raise ConfigError("the main branch cannot be deleted (Icechunk keeps it always)")
    if name not in repo.list_branches():
        raise ConfigError(
            f"no branch named {name!r}; branches: {', '.join(sorted(repo.list_branches()))}"
        )
    try:
        tip = repo.lookup_branch(name)
        repo.delete_branch(name)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot delete branch {name!r}") from exc
    return tip


@contextmanager
def _lock(location: str | None) -> Iterator[None]:
    if location is None:
        yield
    else:
        with commit_lock(location):
            yield


def move_branch(
    repo: icechunk.Repository,
    branch: str,
    snapshot_id: str,
    *,
    expected: str,
    location: str | None = None,
) -> None:
    """Point ``branch`` at ``snapshot_id`` if, and only if, it still points at ``expected``.

    A compare-and-set (Icechunk's ``reset_branch(..., from_snapshot_id=expected)``): when
    another writer moved the branch meanwhile nothing changes. Pass the repository
    ``location`` for local repositories, whose ref updates icepipe serialises with its commit
    lock.

    Raises
    ------
    ConflictError
        The branch no longer points at ``expected``.
    StorageError
        The ref cannot be written.
    """
    try:
        with _lock(location):
            repo.reset_branch(branch, snapshot_id, from_snapshot_id=expected)
    except icechunk.ConflictError as exc:
        try:
            now = repo.lookup_branch(branch)
        except icechunk.IcechunkError:
            now = "?"
        raise ConflictError(
            f"branch {branch!r} moved (expected {expected}, now at {now}) and was left as is; "
            "re-run to ingest against the new tip",
            conflicts=[f"{branch}: expected {expected}, found {now}"],
        ) from exc
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot move branch {branch!r}") from exc


@dataclass(frozen=True)
class RepoDiff:
    """What changed between two snapshots (``from_id`` must be an ancestor of ``to_id``)."""

    from_id: str
    to_id: str
    new_groups: list[str]
    new_arrays: list[str]
    deleted_groups: list[str]
    deleted_arrays: list[str]
    updated_groups: list[str]
    updated_arrays: list[str]
    #: Array path -> number of chunks written (new or replaced).
    updated_chunks: dict[str, int]
    #: The commits between the two (newest first), with icepipe's provenance.
    commits: list[CommitInfo] = field(default_factory=list)
    #: Source files ingested by those commits.
    files: list[str] = field(default_factory=list)


def diff_refs(repo: icechunk.Repository, a: str, b: str) -> RepoDiff:
    """The changes from ref ``a`` to ref ``b`` (see :func:`resolve_ref` for ref syntax).

    Raises
    ------
    ConfigError
        A ref does not exist, or ``a`` is not an ancestor of ``b`` (the message names their
        common ancestor to diff against instead).
    StorageError
        The history cannot be read.
    """
    from_id, to_id = resolve_ref(repo, a), resolve_ref(repo, b)
    if from_id == to_id:
        # Icechunk's diff refuses a snapshot against itself: there is simply nothing to show.
        return RepoDiff(from_id=from_id, to_id=to_id, **_NO_CHANGES)
    try:
        between: list[Any] = []
        found = from_id == to_id
        for snap in repo.ancestry(snapshot_id=to_id):
            if snap.id == from_id:
                found = True
                break
            between.append(snap)
        if not found:
            base = _common_ancestor(repo, from_id, to_id)
            hint = f"; their common ancestor is {base}" if base else ""
            raise ConfigError(
                f"{a!r} ({from_id}) is not an ancestor of {b!r} ({to_id}){hint}: diff from an "
                f"ancestor (e.g. `icepipe diff REPO {base or b} {b}`), or swap them"
            )
        d = repo.diff(from_snapshot_id=from_id, to_snapshot_id=to_id)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot diff {a!r} and {b!r}") from exc
    commits, files = [], []
    for snap in between:
        record = read_record(snap.metadata, snapshot_id=snap.id)
        commits.append(CommitInfo.of(snap, record))
        files += [f.url for f in (record.files if record else None) or ()]
    return RepoDiff(
        from_id=from_id,
        to_id=to_id,
        new_groups=sorted(d.new_groups),
        new_arrays=sorted(d.new_arrays),
        deleted_groups=sorted(d.deleted_groups),
        deleted_arrays=sorted(d.deleted_arrays),
        updated_groups=sorted(d.updated_groups),
        updated_arrays=sorted(d.updated_arrays),
        updated_chunks={k: len(v) for k, v in sorted(d.updated_chunks.items())},
        commits=commits,
        files=files,
    )


_NO_CHANGES: dict[str, Any] = {
    "new_groups": [],
    "new_arrays": [],
    "deleted_groups": [],
    "deleted_arrays": [],
    "updated_groups": [],
    "updated_arrays": [],
    "updated_chunks": {},
}


def _common_ancestor(repo: icechunk.Repository, a: str, b: str) -> str | None:
    seen = {s.id for s in repo.ancestry(snapshot_id=a)}
    return next((s.id for s in repo.ancestry(snapshot_id=b) if s.id in seen), None)


@dataclass(frozen=True)
class ArrayInfo:
    """One node of a snapshot's tree (a group when ``shape`` is ``None``).

    Chunk counts are stored objects: with sharding one object holds a whole shard.
    ``native``/``inline``/``virtual`` count written chunks by where their bytes live;
    ``empty`` is the rest of the grid (never written: reads give the fill value).

    ``chunks`` holds one chunk length per dimension; along a dimension of a rectilinear grid
    (chunks of different lengths, e.g. one per source file) it is the longest, and ``edges``
    holds every chunk's length there (``None`` along regular dimensions, and ``edges`` itself
    is ``None`` for regular grids).
    """

    path: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    dims: tuple[str, ...] = ()
    chunks: tuple[int, ...] | None = None
    edges: tuple[tuple[int, ...] | None, ...] | None = None
    shards: tuple[int, ...] | None = None
    grid: int = 0
    native: int = 0
    inline: int = 0
    virtual: int = 0

    @property
    def is_group(self) -> bool:
        return self.shape is None

    @property
    def empty(self) -> int:
        return max(0, self.grid - self.native - self.inline - self.virtual)


def tree_info(
    repo: icechunk.Repository, snapshot_id: str, *, exact: bool = False
) -> list[ArrayInfo]:
    """Every group and array of a snapshot, in path order, with chunk counts by kind.

    Counts come from the manifests' own statistics (a few milliseconds per manifest, however
    many chunks it holds). ``exact=True``, or an Icechunk whose inspection API changed, asks
    each written chunk its type instead (about 13 ms per 1,000 chunks, measured).

    Raises
    ------
    StorageError
        The snapshot or its manifests cannot be read.
    """
    try:
        session = repo.readonly_session(snapshot_id=snapshot_id)
        with rectilinear_enabled():  # arrays with rectilinear grids are listed too
            return _tree(repo, session, snapshot_id, exact=exact)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot read snapshot {snapshot_id}") from exc


def _tree(
    repo: icechunk.Repository, session: icechunk.Session, snapshot_id: str, *, exact: bool
) -> list[ArrayInfo]:
    try:
        root = zarr.open_group(session.store, mode="r")
    except zarr.errors.GroupNotFoundError:
        return []  # a new repository: nothing written yet, not even the root group
    nodes: list[tuple[str, Any]] = [("/", root)]
    nodes += sorted(("/" + name, node) for name, node in root.members(max_depth=None))
    counts = None if exact else _manifest_counts(repo, snapshot_id)
    out: list[ArrayInfo] = []
    for path, node in nodes:
        if isinstance(node, zarr.Group):
            out.append(ArrayInfo(path=path))
            continue
        c = counts.get(path) if counts is not None else None
        if c is None:
            c = _chunk_type_counts(session, path)
        shards = node.shards
        chunks, edges, grid = _grid_of(node)
        names = node.metadata.dimension_names if node.metadata.zarr_format == 3 else None
        out.append(
            ArrayInfo(
                path=path,
                shape=tuple(int(n) for n in node.shape),
                dtype=str(node.dtype),
                dims=tuple(str(d) for d in names or ()),
                chunks=chunks,
                edges=edges,
                shards=tuple(int(n) for n in shards) if shards else None,
                grid=grid,
                native=c.get("native", 0),
                inline=c.get("inline", 0),
                virtual=c.get("virtual", 0),
            )
        )
    return out


def _grid_of(
    node: zarr.Array[Any],
) -> tuple[tuple[int, ...], tuple[tuple[int, ...] | None, ...] | None, int]:
    """An array's chunk length per dimension (the longest along rectilinear dimensions), its
    edges along rectilinear dimensions (``None`` for a regular grid), and how many storage
    objects (chunks, or shards) its grid has."""
    if node.metadata.zarr_format == 2 or isinstance(
        node.metadata.chunk_grid, RegularChunkGridMetadata
    ):
        storage_chunks = node.shards if node.shards is not None else node.chunks
        grid = 1
        for n, k in zip(node.shape, storage_chunks, strict=True):
            grid *= -(-n // k) if k else 1
        return tuple(int(n) for n in node.chunks), None, grid
    sizes = node.read_chunk_sizes
    chunks = tuple(max((int(e) for e in dim), default=0) for dim in sizes)
    edges = tuple(tuple(int(e) for e in dim) if len(set(dim)) > 1 else None for dim in sizes)
    grid = 1
    for dim in node.write_chunk_sizes:
        grid *= len(dim)
    return chunks, edges if any(e is not None for e in edges) else None, grid


def _manifest_counts(repo: icechunk.Repository, snapshot_id: str) -> dict[str, Counter[str]] | None:
    """Array path -> chunk counts by kind, from manifest statistics (``None`` if unavailable).

    ``inspect_snapshot``/``inspect_manifest`` are documented as debugging utilities whose
    output may change: anything unexpected falls back to asking chunk by chunk.
    """
    try:
        return counts_by_path(*inspect_manifests(repo, snapshot_id))
    except (AttributeError, KeyError, TypeError, ValueError, icechunk.IcechunkError):
        return None


def counts_by_path(snap: Any, manifests: list[Any]) -> dict[str, Counter[str]]:
    """Array path -> chunk counts by kind, from :func:`inspect_manifests`' descriptions.

    Raises
    ------
    KeyError, TypeError, ValueError
        The descriptions are not shaped as Icechunk 2.3 writes them.
    """
    path_of = {n["id"]: n["path"] for n in snap["nodes"] if n.get("node_type") == "array"}
    out: dict[str, Counter[str]] = {p: Counter() for p in path_of.values()}
    for manifest in manifests:
        for a in manifest["arrays"]:
            path = path_of.get(a["node_id"])
            if path is not None:
                for kind in ("native", "inline", "virtual"):
                    out[path][kind] += int(a[f"num_{kind}"])
    return out


def inspect_manifests(
    repo: icechunk.Repository, snapshot_id: str, *, path: str | None = None
) -> tuple[Any, list[Any]]:
    """A snapshot's and its manifests' descriptions (only the manifests of the node at
    ``path`` when given), read through Icechunk's async API.

    The sync ``inspect_*`` calls hold the GIL while they wait for storage (Icechunk 2.3): every
    other thread of the process stalls meanwhile, and an S3 server in the same process (moto
    in tests) can never answer them. The async ones wait without it. Inside a running event
    loop (a notebook) the sync calls are used.

    Raises
    ------
    icechunk.IcechunkError
        The snapshot or a manifest cannot be read.
    """

    def manifest_ids(snap: Any) -> list[str]:
        nodes = [n for n in snap["nodes"] if path is None or n.get("path") == path]
        return sorted({m["id"] for n in nodes for m in n.get("manifest_refs") or []})

    async def read() -> tuple[Any, list[Any]]:
        snap = await repo.inspect_snapshot_async(snapshot_id)
        ids = manifest_ids(snap)
        return snap, list(await asyncio.gather(*(repo.inspect_manifest_async(i) for i in ids)))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(read())
    snap = repo.inspect_snapshot(snapshot_id)
    return snap, [repo.inspect_manifest(i) for i in manifest_ids(snap)]


def chunk_counts(repo: icechunk.Repository, snapshot_id: str) -> dict[str, int]:
    """How many chunks of a snapshot are ``native``, ``inline`` and ``virtual``, summed over
    its arrays (what :func:`tree_info` counts per array).

    From the manifests' statistics alone (well under a millisecond per manifest, measured);
    when Icechunk cannot give them, from :func:`tree_info`.

    Raises
    ------
    StorageError
        The snapshot or its manifests cannot be read.
    """
    counts = _manifest_counts(repo, snapshot_id)
    total: Counter[str] = Counter()
    if counts is not None:
        for c in counts.values():
            total.update(c)
    else:
        for n in tree_info(repo, snapshot_id):
            total.update({"native": n.native, "inline": n.inline, "virtual": n.virtual})
    return {k: int(total[k]) for k in ("native", "inline", "virtual")}


@dataclass(frozen=True)
class StorageStats:
    """Bytes of chunks reachable from any branch or tag, by where they live: ``native`` in the
    repository's chunk objects, ``inline`` in its manifests, ``virtual`` in the source files
    references point into."""

    native: int
    inline: int
    virtual: int


def storage_stats(repo: icechunk.Repository) -> StorageStats:
    """The bytes of every chunk reachable from a branch or tag (Icechunk's
    ``chunk_storage_stats``: it reads every reachable snapshot's manifests once).

    Raises
    ------
    StorageError
        A snapshot or manifest cannot be read.
    """
    try:
        s = repo.chunk_storage_stats()
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, "cannot read the chunk statistics") from exc
    return StorageStats(
        native=int(s.native_bytes), inline=int(s.inlined_bytes), virtual=int(s.virtual_bytes)
    )


def _chunk_type_counts(session: icechunk.Session, path: str) -> Counter[str]:
    async def coords() -> list[tuple[int, ...]]:
        return [c async for c in session.chunk_coordinates(path)]

    counts: Counter[str] = Counter()
    for c in asyncio.run(coords()):
        counts[str(session.chunk_type(path, list(c))).rsplit(".", 1)[-1]] += 1
    return counts


#: What Icechunk's local storage keeps in a repository folder; anything else is the user's.
_REPO_ENTRIES = frozenset(
    {
        "repo",
        "config.yaml",
        "refs",
        "snapshots",
        "manifests",
        "transactions",
        "chunks",
        "overwritten",
    }
)


def delete_local_repo(location: str) -> bool:
    """Delete a local repository folder and its lock file, under the commit lock; return
    whether there was a repository to delete.

    Raises
    ------
    ConfigError
        ``location`` is not local, or the folder holds files but no Icechunk repository, or
        files besides the repository's own (it is left alone).
    """
    if not is_local(location):
        raise ConfigError(
            f"deleting object-store repositories is not supported yet ({location!r}): delete "
            "the prefix with your storage tools (e.g. `aws s3 rm --recursive`), then --forget"
        )
    path = _local_path(location)
    if not path.exists():
        return False
    if not icechunk.Repository.exists(icechunk.local_filesystem_storage(str(path))):
        raise ConfigError(f"{location!r} holds no Icechunk repository; nothing deleted")
    with commit_lock(location):
        foreign = sorted(p.name for p in path.iterdir() if p.name not in _REPO_ENTRIES)
        if foreign:
            shown = ", ".join(foreign[:5]) + (
                f" and {len(foreign) - 5} more" if foreign[5:] else ""
            )
            raise ConfigError(
                f"{location!r} also holds files that are not part of the repository ({shown}); "
                "nothing deleted. Move them out of the folder, then delete again"
            )
        shutil.rmtree(path)
    (path.parent / f".{path.name}.icepipe.lock").unlink(missing_ok=True)
    return True


def discard_unused_repo(location: str) -> bool:
    """Delete the local repository at ``location`` if nothing was ever committed to it (one
    branch, ``main``, at the initial snapshot; no tags); return whether it was deleted.

    A run creates its repository just before writing, so a first run failing while writing
    would otherwise leave an empty repository behind. Under the commit lock: a run that
    committed meanwhile moved ``main`` (then nothing is deleted), and a run committing later
    finds the repository gone and re-plans (see :func:`icepipe.repository.commit`). Repositories
    in object stores are left alone (icepipe does not delete object-store prefixes).
    """
    if not is_local(location):
        return False
    path = _local_path(location)
    storage = icechunk.local_filesystem_storage(str(path))
    with commit_lock(location):
        try:
            if not icechunk.Repository.exists(storage):
                return False
            repo = icechunk.Repository.open(storage)
            if set(repo.list_branches()) != {"main"} or repo.list_tags():
                return False
            if len(list(repo.ancestry(branch="main"))) != 1:
                return False
        except icechunk.IcechunkError:
            return False  # cannot tell: keep it
        if any(p.name not in _REPO_ENTRIES for p in path.iterdir()):
            return False
        shutil.rmtree(path, ignore_errors=True)
    return True


def container_urls(repo: icechunk.Repository) -> list[str]:
    """The URL prefixes of the repository's virtual chunk containers (sorted)."""
    containers = repo.config.virtual_chunk_containers or {}
    return sorted(c.url_prefix for c in containers.values())
