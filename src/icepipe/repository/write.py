"""Open writable sessions on a branch and write virtual references into them.

Native chunks are written by :mod:`icepipe.repository.native`; every commit goes through
:func:`icepipe.repository.commits.commit`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import icechunk

from icepipe.errors import IcepipeError, SchemaMismatchError
from icepipe.faults import storage_failure
from icepipe.repository.grids import rectilinear_enabled

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["without_attrs", "writable_session", "write_virtual"]


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
    # The group may hold arrays on rectilinear grids (files of uneven length), which zarr
    # parses only with its flag on.
    with rectilinear_enabled(), warnings.catch_warnings():
        # See sources/scan.py: netCDF char arrays have no Zarr v3 dtype spec yet.
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        # Only loaded variables left: the virtual ones are on rectilinear grids, written by
        # icepipe.repository.write_rectilinear.
        warnings.filterwarnings("ignore", message="Attempting to write an entirely non-virtual")
        try:
            with storage_errors(f"the references of {_names(urls)} into {group or '/'!r}"):
                if region is not None:
                    ds.vz.to_icechunk(session.store, group=group, region=region)
                elif append_dim is None:
                    ds.vz.to_icechunk(session.store, group=group, mode="w-")
                else:
                    ds.vz.to_icechunk(session.store, group=group, append_dim=append_dim)
        except IcepipeError:
            raise  # storage_errors' (a ConfigError is a ValueError too)
        except (NotImplementedError, ValueError) as exc:
            if append_dim is None and region is None:
                raise
            raise SchemaMismatchError(
                f"{_names(urls)}: cannot be stored as virtual references into the existing "
                f"arrays of {group or '/'!r}: {str(exc).split('. See')[0]}. The stored arrays "
                "were written with other codecs or layout (e.g. by a native ingest, or from "
                "files compressed differently): ingest these files with mode: native, or into "
                "a new group",
                urls=list(urls),
            ) from exc


def _names(urls: Sequence[str]) -> str:
    return ", ".join(urls[:3]) + (f" and {len(urls) - 3} more" if len(urls) > 3 else "")


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Icechunk's storage failures while a pipeline writes ``what`` as icepipe's errors: a
    read-only or permission-less repository is a ``ConfigError`` naming ``target.repo`` (a
    retry cannot pass), a network failure a ``StorageError`` (retry). Chunks too large to be
    inlined (a concat coordinate's 64 KiB chunks) are written during the write, not the commit.
    """
    try:
        yield
    except icechunk.StorageError as exc:
        raise storage_failure(exc, f"cannot write {what}", where="target.repo") from exc


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
