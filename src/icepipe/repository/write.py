"""Write into sessions and commit: the only place where icepipe changes a repository."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import icechunk
import xarray as xr

from icepipe.errors import ConflictError, SchemaMismatchError
from icepipe.faults import storage_failure
from icepipe.repository.repo import _local_path, commit_lock
from icepipe.storage import is_local

__all__ = ["commit", "describe_conflicts", "without_attrs", "writable_session", "write_virtual"]


def writable_session(repo: icechunk.Repository, branch: str) -> icechunk.Session:
    """A writable session on ``branch``, creating the branch from ``main`` when it is new.

    Two writers may create the same new branch at once: losing that race is fine.

    Raises
    ------
    StorageError
        The branch cannot be created or opened.
    """
    try:
        if branch not in repo.list_branches():
            try:
                repo.create_branch(branch, repo.lookup_branch("main"))
            except icechunk.IcechunkError:
                if branch not in repo.list_branches():  # not just another writer's creation
                    raise
        return repo.writable_session(branch)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot open branch {branch!r} for writing") from exc


def write_virtual(
    session: icechunk.Session,
    ds: xr.Dataset,
    *,
    group: str | None,
    append_dim: str | None = None,
    region: dict[str, slice] | None = None,
    urls: Sequence[str] = (),
) -> None:
    """Write a virtual dataset's references (and its loaded coordinates) into ``session``.

    A new group is created; with ``append_dim`` the dataset is appended to the existing arrays
    and with ``region`` it replaces that region of them, keeping their attributes: an
    incremental run stores exactly what one run over all the files would have stored
    (attributes of the first file, like ``xarray.open_mfdataset``).

    Raises
    ------
    SchemaMismatchError
        The references cannot join the stored arrays (other codecs, dtypes or chunks); the
        message names ``urls``.
    """
    if append_dim is not None or region is not None:
        ds = without_attrs(ds)
    if region is not None:
        # Variables without the region's dimensions (grids, static fields) are already stored.
        ds = ds.drop_vars([n for n, v in ds.variables.items() if not set(region) & set(v.dims)])
    with warnings.catch_warnings():
        # See sources/scan.py: netCDF char arrays have no Zarr v3 dtype spec yet.
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        try:
            if region is not None:
                ds.vz.to_icechunk(session.store, group=group, region=region)
            elif append_dim is None:
                ds.vz.to_icechunk(session.store, group=group, mode="w-")
            else:
                ds.vz.to_icechunk(session.store, group=group, append_dim=append_dim)
        except (NotImplementedError, ValueError) as exc:
            if append_dim is None and region is None:
                raise
            names = ", ".join(urls[:3]) + (f" and {len(urls) - 3} more" if len(urls) > 3 else "")
            raise SchemaMismatchError(
                f"{names}: cannot be stored as virtual references into the existing arrays of "
                f"{group or '/'!r}: {str(exc).split('. See')[0]}. The stored arrays were written "
                "with other codecs or layout (e.g. by a native ingest, or from files compressed "
                "differently): ingest these files with mode: native, or into a new group",
                urls=list(urls),
            ) from exc


def without_attrs(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with no dataset or variable attributes, for appends that keep the stored ones.

    An incremental run must store exactly what one run over all the files would have stored:
    the attributes of the first file, like ``xarray.open_mfdataset``.
    """
    ds = ds.copy()
    ds.attrs = {}
    for var in ds.variables.values():
        var.attrs = {}
    return ds


def describe_conflicts(exc: BaseException) -> list[str]:
    """Readable lines from an icechunk ``RebaseFailedError`` (empty for other errors)."""
    out = []
    for c in getattr(exc, "conflicts", None) or []:
        chunks = getattr(c, "conflicted_chunks", None)
        where = f", chunks {list(chunks)[:10]}" if chunks else ""
        out.append(f"{c.path}: {c.conflict_type}{where}")
    return out


def commit(
    session: icechunk.Session,
    repo: str,
    *,
    message: str,
    metadata: dict[str, Any],
    rebase_tries: int = 5,
) -> str:
    """Commit ``session`` under the repository's commit lock; return the snapshot id.

    When the branch moved since the session started, the change is rebased onto the new tip if
    Icechunk's ``ConflictDetector`` finds nothing in common (other groups, other arrays,
    disjoint chunks). Anything else, such as two runs appending to the same arrays (which
    Icechunk can never rebase), raises :class:`ConflictError`, and the caller re-plans against
    the new tip: that is how "each file exactly once" holds when two runs race, since the same
    file always lands on the same chunks.

    Raises
    ------
    ConflictError
        The branch moved since the session started.
    StorageError
        Storage failed while committing.
    """
    try:
        with commit_lock(repo):
            if is_local(repo) and not (_local_path(repo) / "repo").exists():
                # A failed first run removed the repository it had created (see
                # discard_unused_repo): re-plan, creating it again.
                raise ConflictError(
                    f"the repository {repo!r} was removed while this run was writing; re-run "
                    "to write it again"
                )
            return session.commit(
                message,
                metadata=metadata,
                rebase_with=icechunk.ConflictDetector(),
                rebase_tries=rebase_tries,
            )
    except icechunk.ConflictError as exc:  # RebaseFailedError is a subclass
        raise ConflictError(
            f"branch {session.branch!r} of {repo!r} moved while this run was writing and the "
            "change could not be rebased onto it; re-run to write against the new tip",
            conflicts=describe_conflicts(exc),
        ) from exc
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"commit to {repo!r} failed", where="target.repo") from exc
