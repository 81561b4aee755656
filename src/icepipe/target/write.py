"""Write into sessions and commit: the only place where icepipe changes a repository."""

from __future__ import annotations

import warnings
from typing import Any

import icechunk
import xarray as xr

from icepipe.errors import ConflictError, StorageError
from icepipe.target.repo import commit_lock

__all__ = ["commit", "describe_conflicts", "writable_session", "write_virtual"]


def writable_session(repo: icechunk.Repository, branch: str) -> icechunk.Session:
    """A writable session on ``branch``, creating the branch from ``main`` when it is new."""
    if branch not in repo.list_branches():
        repo.create_branch(branch, repo.lookup_branch("main"))
    return repo.writable_session(branch)


def write_virtual(
    session: icechunk.Session, ds: xr.Dataset, *, group: str | None, append_dim: str | None
) -> None:
    """Write a virtual dataset's references (and its loaded coordinates) into ``session``.

    A new group is created; with ``append_dim`` the dataset is appended to the existing arrays,
    keeping their attributes: an incremental run stores exactly what one run over all the
    files would have stored (attributes of the first file, like ``xarray.open_mfdataset``).
    """
    if append_dim is not None:
        ds = ds.copy()
        ds.attrs = {}
        for var in ds.variables.values():
            var.attrs = {}
    with warnings.catch_warnings():
        # See sources/scan.py: netCDF char arrays have no Zarr v3 dtype spec yet.
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        if append_dim is None:
            ds.vz.to_icechunk(session.store, group=group, mode="w-")
        else:
            ds.vz.to_icechunk(session.store, group=group, append_dim=append_dim)


def describe_conflicts(exc: BaseException) -> list[str]:
    """Readable lines from an icechunk ``RebaseFailedError`` (empty for other errors)."""
    out = []
    for c in getattr(exc, "conflicts", None) or []:
        chunks = getattr(c, "conflicted_chunks", None)
        where = f", chunks {list(chunks)[:10]}" if chunks else ""
        out.append(f"{c.path}: {c.conflict_type}{where}")
    return out


def commit(session: icechunk.Session, repo: str, *, message: str, metadata: dict[str, Any]) -> str:
    """Commit ``session`` under the repository's commit lock; return the snapshot id.

    No rebase is attempted: when the branch moved since the session started this raises
    :class:`ConflictError` and the caller re-plans against the new tip (which is how icepipe
    keeps "each file exactly once" when two runs race).

    Raises
    ------
    ConflictError
        The branch moved since the session started.
    StorageError
        Storage failed while committing.
    """
    try:
        with commit_lock(repo):
            return session.commit(message, metadata=metadata)
    except icechunk.ConflictError as exc:
        raise ConflictError(
            f"branch {session.branch!r} of {repo!r} moved while this run was writing; "
            "re-run to ingest against the new tip",
            conflicts=describe_conflicts(exc),
        ) from exc
    except icechunk.IcechunkError as exc:
        raise StorageError(f"commit to {repo!r} failed: {exc}; retry") from exc
