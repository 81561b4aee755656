"""icepipe's xarray engine: ``xr.open_dataset(REPO, engine="icepipe")``.

Registered under the ``xarray.backends`` entry point (``pyproject.toml``), so that any tool
opening data through xarray (intake, xpystac, notebooks) reads icepipe's repositories by
location or catalog name, with the same authorization of virtual chunk containers and the
same source-access checks as :func:`icepipe.open_dataset`::

    ds = xr.open_dataset("repos/nemo", engine="icepipe", group="sst", tag="v1", chunks={})
    old = xr.open_dataset("repos/nemo", engine="icepipe", group="sst", ref="main~1")
    tree = xr.open_datatree("catalog:acme/nemo", engine="icepipe")

Chunking (``chunks=``) and caching are xarray's own; decoding (``decode_times``,
``mask_and_scale``, ``drop_variables``, ...) is xarray's Zarr backend over the repository's
read-only session.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xarray.backends import BackendEntrypoint
from xarray.backends.zarr import ZarrBackendEntrypoint

from icepipe.errors import ConfigError
from icepipe.repository.grids import rectilinear_enabled
from icepipe.storage import StorageOptions
from icepipe.xarray import check_source_access, open_session

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["IcepipeBackendEntrypoint", "is_repository"]

# The objects at the root of a local Icechunk repository (format 2: ``repo``; format 1:
# ``refs/`` beside ``snapshots/``).
_MARKERS = (("repo",), ("refs", "snapshots"))


def is_repository(value: object) -> bool:
    """Whether ``value`` names an icepipe repository without opening it: ``catalog:...``, a
    bare ``org/name`` the catalog holds, or a local folder holding an Icechunk repository.
    Never raises (xarray asks every engine when none is given)."""
    if not isinstance(value, str | os.PathLike):
        return False
    text = os.fspath(value)
    if not isinstance(text, str):
        return False
    if text.startswith("catalog:"):
        return True
    try:
        path = Path(text.removeprefix("file://")).expanduser()
        if path.is_dir() and any(all((path / m).exists() for m in ms) for ms in _MARKERS):
            return True
        from icepipe.catalog import load_catalog

        return text.count("/") == 1 and text in load_catalog().entries
    except (OSError, ValueError):
        return False


class IcepipeBackendEntrypoint(BackendEntrypoint):
    """Open groups of Icechunk repositories: a location (local path, ``s3://...``) or a
    catalog name (``catalog:org/name``, or a bare ``org/name`` the catalog holds).

    Beyond xarray's usual arguments, ``open_dataset`` and ``open_datatree`` take ``group``,
    ``branch`` (default ``main``), ``tag``, ``snapshot_id`` (which wins over ``tag``, which
    wins over ``branch``), or instead of these three ``ref`` (what the commands take:
    ``main~1``, ``tag:v1``, ``branch:NAME``, a snapshot id), ``storage`` (how to reach an
    object-store repository given as a location) and ``source_storage`` (credentials for the
    sources of virtual references).
    """

    description = "Icechunk repositories by location or icepipe catalog name"
    supports_groups = True

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return is_repository(filename_or_obj)

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str],
        *,
        mask_and_scale: bool = True,
        decode_times: Any = True,
        concat_characters: bool = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: bool | None = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        branch: str | None = None,
        tag: str | None = None,
        snapshot_id: str | None = None,
        ref: str | None = None,
        storage: StorageOptions | Mapping[str, Any] | None = None,
        source_storage: StorageOptions | Mapping[str, Any] | None = None,
    ) -> xr.Dataset:
        """One group of the repository (the root when ``group`` is ``None``).

        Raises
        ------
        RepoNotFoundError
            No repository there.
        ConfigError
            Unknown prefix or catalog name, no such branch, tag, snapshot, ref or group,
            ``ref`` given with ``branch``, ``tag`` or ``snapshot_id``, or this reader may not
            read the sources of virtual references.
        SourceError
            A source file virtual references point into no longer exists.
        """
        repo, session, source = open_session(
            _location(filename_or_obj),
            branch=branch,
            tag=tag,
            snapshot_id=snapshot_id,
            storage=storage,
            source_storage=source_storage,
            ref=ref,
        )
        decoders = dict(
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            drop_variables=drop_variables,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
        )
        try:
            with rectilinear_enabled():
                ds = ZarrBackendEntrypoint().open_dataset(
                    session.store,  # type: ignore[arg-type]  # a zarr Store: xarray opens it
                    group=group,
                    consolidated=False,
                    zarr_format=3,
                    **decoders,
                )
        except (FileNotFoundError, KeyError) as exc:
            raise _no_group(filename_or_obj, group) from exc
        check_source_access(repo, session.snapshot_id, group, source)
        return ds

    def open_datatree(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str],
        *,
        mask_and_scale: bool = True,
        decode_times: Any = True,
        concat_characters: bool = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: bool | None = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        branch: str | None = None,
        tag: str | None = None,
        snapshot_id: str | None = None,
        ref: str | None = None,
        storage: StorageOptions | Mapping[str, Any] | None = None,
        source_storage: StorageOptions | Mapping[str, Any] | None = None,
    ) -> xr.DataTree:
        """The tree of groups at ``group`` (the whole repository by default); the sources of
        every group below it are checked.

        Raises
        ------
        RepoNotFoundError, ConfigError, SourceError
            As :meth:`open_dataset`.
        """
        repo, session, source = open_session(
            _location(filename_or_obj),
            branch=branch,
            tag=tag,
            snapshot_id=snapshot_id,
            storage=storage,
            source_storage=source_storage,
            ref=ref,
        )
        try:
            with rectilinear_enabled():
                tree = ZarrBackendEntrypoint().open_datatree(
                    session.store,  # type: ignore[arg-type]  # a zarr Store: xarray opens it
                    group=group,
                    consolidated=False,
                    zarr_format=3,
                    mask_and_scale=mask_and_scale,
                    decode_times=decode_times,
                    concat_characters=concat_characters,
                    decode_coords=decode_coords,
                    drop_variables=drop_variables,
                    use_cftime=use_cftime,
                    decode_timedelta=decode_timedelta,
                )
        except (FileNotFoundError, KeyError) as exc:
            raise _no_group(filename_or_obj, group) from exc
        check_source_access(repo, session.snapshot_id, group, source, subtree=True)
        return tree


def _location(value: object) -> str | os.PathLike[str]:
    if isinstance(value, str | os.PathLike):
        return value
    raise ConfigError(
        "engine='icepipe' opens a repository location (a path, s3://...) or a catalog name "
        f"(catalog:org/name); got {type(value).__name__}. For an icechunk session, use "
        "xr.open_zarr(session.store, consolidated=False)",
        field="filename_or_obj",
    )


def _no_group(value: str | os.PathLike[str], group: str | None) -> ConfigError:
    return ConfigError(
        f"no group {group or '/'!r} in {os.fspath(value)!r}; `icepipe info REPO` lists the groups",
        field="group",
    )
