"""xarray-facing API: read ingested data back."""

from __future__ import annotations

from typing import Any

import xarray as xr

from icepipe import target

__all__ = ["open_dataset"]


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
