"""xarray-facing API: write Datasets into Icechunk repositories, read ingested data back."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import xarray as xr

from icepipe import __version__, target
from icepipe.errors import ConfigError

if TYPE_CHECKING:
    import icechunk

    from icepipe.target.native import Region, WriteMode

__all__ = ["open_dataset", "to_icechunk"]


def to_icechunk(
    ds: xr.Dataset,
    repo: str | os.PathLike[str] | icechunk.Repository | icechunk.Session,
    *,
    branch: str = "main",
    group: str | None = None,
    mode: WriteMode | None = None,
    append_dim: str | None = None,
    region: Region | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    message: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    max_attempts: int = 5,
) -> str | None:
    """Write an xarray Dataset into an Icechunk repository and commit it.

    Dask variables are written in parallel on the active Dask scheduler (the default
    ``distributed.Client`` when there is one) through forks of one Icechunk session, every task
    owning whole target chunks (or shards): Dask chunks that straddle target chunks are
    rechunked first, so nothing is silently lost in the merge. Numpy variables are written by
    the calling process. Virtual datasets (VirtualiZarr) are written as references.

    When another writer commits to the branch meanwhile, disjoint changes are rebased; appends
    (which resize arrays) are redone on the new branch tip; a write of the same chunks raises
    :class:`~icepipe.ConflictError` and commits nothing.

    Parameters
    ----------
    ds
        The data: numpy- or Dask-backed, or a virtual dataset.
    repo
        Where to write: a repository path (created when the write creates data and no
        repository exists; virtual chunk containers are added for virtual references), an
        ``icechunk.Repository``, or a writable ``icechunk.Session``. A session is only
        written to: nothing is committed, ``None`` is returned, and ``branch``, ``message``,
        ``metadata`` and ``max_attempts`` do not apply.
    branch
        The branch to commit to; created from ``main`` when it does not exist.
    group
        The group to write into; the root group when ``None``.
    mode
        As :meth:`xarray.Dataset.to_zarr`: ``"w-"`` create, failing if the group exists (the
        default), ``"w"`` replace, ``"a"`` add or overwrite variables (the default with
        ``append_dim``), ``"a-"`` append only the variables that have ``append_dim``, ``"r+"``
        change values of existing arrays only (the default with ``region``).
    append_dim
        Append along this existing dimension.
    region
        Overwrite this part of the existing arrays: ``{"time": slice(0, 24)}``, or ``"auto"``
        (per dimension too) to locate it by coordinate values. Regions must start and end on
        chunk (shard) boundaries, or end at the array's end.
    encoding
        Zarr encoding of new variables, e.g. ``{"t2m": {"chunks": (24, 90, 180)}}``; add
        ``"shards"`` to store several chunks per object.
    message
        The commit message; a summary of the write by default.
    metadata
        Extra commit metadata (JSON). icepipe adds its provenance under ``"icepipe"``
        (``version``, ``mode``: ``native``/``virtual``, ``api``, ``group``).
    max_attempts
        How many times to write when the branch keeps moving under appends.

    Returns
    -------
    str or None
        The snapshot id of the commit, or ``None`` when ``repo`` is a session.

    Raises
    ------
    ConfigError
        Bad arguments, with the fix in the message: unknown mode, a region cutting through
        chunks, an ``append_dim`` the target lacks, a group that already exists (``"w-"``) or
        does not (appends, regions, ``"r+"``), a missing repository for such writes.
    ConflictError
        Another writer wrote the same chunks meanwhile (the message names the arrays and
        chunks; nothing was committed), or the branch kept moving for ``max_attempts``.
    StorageError
        Storage failed, or Dask workers died.

    Examples
    --------
    >>> snapshot = icepipe.to_icechunk(ds, "repos/era5", group="t2m")  # doctest: +SKIP
    >>> icepipe.to_icechunk(day2, "repos/era5", group="t2m", append_dim="time")  # doctest: +SKIP
    """
    write: dict[str, Any] = {
        "group": group,
        "mode": mode,
        "append_dim": append_dim,
        "region": region,
        "encoding": encoding,
    }
    if target.is_session(repo):
        target.write_dataset(repo, ds, **write)
        return None
    virtual = target.is_virtual(ds) if isinstance(ds, xr.Dataset) else False
    record = {
        "version": __version__,
        "mode": "virtual" if virtual else "native",
        "api": "to_icechunk",
        "group": group or "",
    }
    commit_metadata = {**(metadata or {}), target.METADATA_KEY: record}
    # Before a repository is created for the write.
    target.check_write_args(ds, mode=mode, metadata=commit_metadata, max_attempts=max_attempts)
    if isinstance(repo, str | os.PathLike):
        path = os.fspath(repo)
        # Appends and region writes need existing data: never create an empty repository
        # for them.
        creates = append_dim is None and region is None and mode != "r+"
        try:
            opened = target.open_repo(
                path,
                create=creates,
                containers=target.virtual_locations(ds) if virtual else (),
            )
        except target.RepoNotFoundError as exc:
            raise target.RepoNotFoundError(
                f"no Icechunk repository at {path!r} to "
                f"{'append to' if append_dim is not None else 'write into'}; create it first "
                f"with icepipe.to_icechunk(ds, {path!r}) (mode 'w-')"
            ) from exc
    elif target.is_repository(repo):
        opened = repo
    else:
        raise ConfigError(
            "expected a repository path, an icechunk.Repository or a writable "
            f"icechunk.Session; got {type(repo).__name__}",
            field="repo",
        )
    return target.write_and_commit(
        opened,
        ds,
        branch=branch,
        message=message or _default_message(ds, group, append_dim=append_dim, region=region),
        metadata=commit_metadata,
        max_attempts=max_attempts,
        **write,
    )


def _default_message(
    ds: xr.Dataset, group: str | None, *, append_dim: str | None, region: Any
) -> str:
    names = sorted(str(n) for n in ds.data_vars) if isinstance(ds, xr.Dataset) else []
    shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    where = group or "/"
    if append_dim is not None:
        return f"icepipe.to_icechunk: append {shown} to {where} along {append_dim}"
    if region is not None:
        return f"icepipe.to_icechunk: write {shown} into a region of {where}"
    return f"icepipe.to_icechunk: write {shown} into {where}"


def open_dataset(
    repo: str,
    *,
    branch: str = "main",
    group: str | None = None,
    snapshot_id: str | None = None,
    chunks: Any = None,
) -> xr.Dataset:
    """Open an ingested group as an xarray Dataset (lazily, backed by Dask).

    Virtual chunk access is authorized for every container the repository's config lists, so
    virtual references resolve exactly like native chunks.

    Parameters
    ----------
    repo
        The repository location.
    branch, snapshot_id
        What to read (``snapshot_id`` wins over ``branch``).
    group
        The group to open; the root group when ``None``.
    chunks
        Passed to :func:`xarray.open_zarr`: ``None`` (default) opens lazily without Dask, like
        :func:`xarray.open_dataset`; ``{}`` gives one Dask chunk per stored chunk.

    Raises
    ------
    RepoNotFoundError
        No repository at ``repo``.
    ConfigError
        The branch or group does not exist.
    """
    from icepipe.errors import ConfigError

    r = target.open_repo(repo, create=False)
    try:
        session = (
            r.readonly_session(snapshot_id=snapshot_id)
            if snapshot_id
            else r.readonly_session(branch=branch)
        )
    except Exception as exc:
        raise ConfigError(
            f"cannot read {'snapshot ' + snapshot_id if snapshot_id else 'branch ' + branch!r} "
            f"of {repo!r}: {exc}"
        ) from exc
    try:
        ds: xr.Dataset = xr.open_zarr(
            session.store,
            group=group,
            consolidated=False,
            chunks=chunks,
            zarr_format=3,
        )
        return ds
    except (FileNotFoundError, KeyError) as exc:
        raise ConfigError(
            f"no group {group or '/'!r} on {branch!r} of {repo!r}; check target.group"
        ) from exc
