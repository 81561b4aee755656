"""History and layout edits of one branch: roll it back to an earlier snapshot (a
compare-and-set), move or rename a group or array, delete one. Each layout edit is one commit.

The ledger follows the branch: it is read from the commit metadata of the branch's ancestry
(:mod:`icepipe.repository.history`), so the files of the commits a rollback undoes are no
longer recorded as ingested and the next run ingests them again.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import icechunk
import zarr

from icepipe.errors import ConfigError
from icepipe.faults import storage_failure
from icepipe.repository.commits import commit
from icepipe.repository.history import CommitInfo
from icepipe.repository.ledger import read_record
from icepipe.repository.refs import move_branch, resolve_ref
from icepipe.repository.repo import location_of

__all__ = ["Rollback", "move_node", "remove_node", "rollback_branch"]


@dataclass(frozen=True)
class Rollback:
    """What :func:`rollback_branch` did: the branch moved from ``from_id`` to ``to_id``,
    undoing ``commits`` (newest first), whose ingested ``files`` the next run ingests again."""

    branch: str
    from_id: str
    to_id: str
    commits: list[CommitInfo] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def rollback_branch(
    repo: icechunk.Repository, branch: str, to: str, *, expected: str | None = None
) -> Rollback:
    """Point ``branch`` back at ``to`` (a ref: tag, snapshot id, ``main~2``, ...), one of its
    ancestors, with a compare-and-set: if another writer commits to the branch meanwhile (or
    the branch is not at ``expected``), nothing changes.

    The undone snapshots stay readable by id until ``icepipe gc`` expires them.

    Raises
    ------
    ConfigError
        No such branch or ref, or ``to`` is not an ancestor of the branch's tip.
    ConflictError
        The branch moved (or is not at ``expected``); it was left as is.
    StorageError
        The history or the ref cannot be read or written.
    """
    if branch not in repo.list_branches():
        raise ConfigError(
            f"no branch named {branch!r}; branches: {', '.join(sorted(repo.list_branches()))}"
        )
    tip = resolve_ref(repo, f"branch:{branch}")
    target = resolve_ref(repo, to)
    undone: list[CommitInfo] = []
    files: list[str] = []
    try:
        for snap in repo.ancestry(snapshot_id=tip):
            if snap.id == target:
                break
            record = read_record(snap.metadata, snapshot_id=snap.id)
            undone.append(CommitInfo.of(snap, record))
            files.extend(f.url for f in ((record.files or ()) if record else ()))
        else:
            raise ConfigError(
                f"{to!r} ({target}) is not an ancestor of branch {branch!r} ({tip}); roll back "
                f"to one of its commits (`icepipe log REPO --branch {branch}`), or create a "
                "branch there (`icepipe branch REPO create NAME REF`)"
            )
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot read the history of {branch!r}") from exc
    move_branch(repo, branch, target, expected=expected or tip, location=location_of(repo))
    return Rollback(branch=branch, from_id=tip, to_id=target, commits=undone, files=files)


def _node_path(path: str) -> str:
    clean = posixpath.normpath("/" + path.strip().lstrip("/"))
    if clean == "/" or ".." in clean.split("/"):
        raise ConfigError(f"expected the path of a group or array below the root; got {path!r}")
    return clean


def _pipeline_groups(repo: icechunk.Repository, tip: str) -> set[str]:
    """The groups icepipe pipelines ingest into on this branch (``/`` for the root)."""
    out: set[str] = set()
    for snap in repo.ancestry(snapshot_id=tip):
        record = read_record(snap.metadata, snapshot_id=snap.id)
        if record is not None and record.pipeline:
            out.add("/" + (record.group or "").strip("/"))
    return out


def _check_not_ingested(repo: icechunk.Repository, tip: str, path: str, verb: str) -> None:
    """Refuse to move or delete a pipeline's target group (or what holds it, or what it
    holds): its ledger records name the group, so the next run would re-ingest everything
    elsewhere, or find its files ingested into arrays that are gone."""
    for group in sorted(_pipeline_groups(repo, tip)):
        inside = group == path or group.startswith(path + "/") or path.startswith(group + "/")
        if inside or group == "/":
            raise ConfigError(
                f"cannot {verb} {path!r}: a pipeline ingests into {group!r}, and its ingest "
                "ledger names that group (the next run would ingest its files again, or "
                "believe them ingested into arrays that are gone); pass --force if that is "
                "what you mean"
            )


def _session_commit(
    repo: icechunk.Repository, session: icechunk.Session, message: str, verb: str
) -> str:
    return commit(
        session,
        message=message,
        metadata={"icepipe_operation": verb},  # not the ledger key: lists no files
        lock=location_of(repo),
    )


def move_node(
    repo: icechunk.Repository, branch: str, source: str, dest: str, *, force: bool = False
) -> str:
    """Move (rename) the group or array ``source`` to ``dest`` on ``branch`` in one commit;
    return its snapshot id. Metadata only: native and virtual chunks stay where they are.

    Raises
    ------
    ConfigError
        ``source`` does not exist, ``dest`` exists, or a pipeline ingests there (unless
        ``force``).
    ConflictError
        Another writer changed the branch in a conflicting way meanwhile.
    StorageError
        The repository cannot be read or written.
    """
    src, dst = _node_path(source), _node_path(dest)
    if dst.startswith(src + "/"):
        raise ConfigError(f"cannot move {src!r} into itself ({dst!r})")
    try:
        tip = resolve_ref(repo, f"branch:{branch}")
        root = zarr.open_group(repo.readonly_session(snapshot_id=tip).store, mode="r")
        _must_exist(root, src)
        if not force:
            _check_not_ingested(repo, tip, src, "move")
        if _exists(root, dst):
            raise ConfigError(f"{dst!r} exists already; remove it first or choose another name")
        if not _exists(root, posixpath.dirname(dst)):
            raise ConfigError(f"the parent group of {dst!r} does not exist; create it first")
        session = repo.rearrange_session(branch)
        session.move(src, dst)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot move {src!r} to {dst!r}") from exc
    return _session_commit(repo, session, f"icepipe mv {src} {dst}", "mv")


def remove_node(repo: icechunk.Repository, branch: str, path: str, *, force: bool = False) -> str:
    """Delete the group (with everything in it) or array ``path`` from ``branch`` in one
    commit; return its snapshot id. Earlier snapshots keep it (``icepipe rollback``).

    Raises
    ------
    ConfigError
        ``path`` does not exist, or a pipeline ingests there (unless ``force``).
    ConflictError
        Another writer changed the branch in a conflicting way meanwhile.
    StorageError
        The repository cannot be read or written.
    """
    node = _node_path(path)
    try:
        tip = resolve_ref(repo, f"branch:{branch}")
        session = repo.writable_session(branch)
        root = zarr.open_group(session.store, mode="r+")
        _must_exist(root, node)
        if not force:
            _check_not_ingested(repo, tip, node, "remove")
        parent = root if posixpath.dirname(node) == "/" else root[posixpath.dirname(node)[1:]]
        if isinstance(parent, zarr.Group):  # always: _must_exist found a node inside it
            del parent[posixpath.basename(node)]
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot remove {node!r}") from exc
    return _session_commit(repo, session, f"icepipe rm {node}", "rm")


def _exists(root: zarr.Group, path: str) -> bool:
    if path in ("", "/"):
        return True
    try:
        root[path.lstrip("/")]
    except KeyError:
        return False
    return True


def _must_exist(root: zarr.Group, path: str) -> None:
    if not _exists(root, path):
        raise ConfigError(f"no group or array at {path!r}; see `icepipe info REPO` for the tree")
