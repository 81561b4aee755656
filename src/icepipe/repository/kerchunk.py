"""A group of a virtual repository as a kerchunk reference set: the way back for readers that
still need reference files (``icepipe export kerchunk``).

The group's manifests are read through Icechunk's chunk iterator (VirtualiZarr's
``IcechunkParser``). Virtual chunks become ``[url, offset, length]`` references to the
original files; chunks Icechunk stores itself (the coordinates a virtual ingest loads, small
inline chunks) are copied into the set as inline data, up to ``inline_limit`` bytes per
variable. A variable holding more native data than that, or chunked unevenly along an axis
(rectilinear grids: kerchunk's Zarr v2 metadata has one chunk length per axis), is refused by
name: :class:`~icepipe.errors.NotExportableError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import xarray as xr

from icepipe.errors import ConfigError, NotExportableError
from icepipe.repository.grids import read_chunk_grid

if TYPE_CHECKING:
    import icechunk

__all__ = ["DEFAULT_INLINE_LIMIT", "virtual_dataset_for_export"]

#: Native bytes a variable may hold and still be exported (inline in the reference set).
DEFAULT_INLINE_LIMIT = 1 << 20

# Native chunks are named under this prefix by the parser, then inlined here.
_NATIVE = "icepipe-native://chunks"


def virtual_dataset_for_export(
    repo: icechunk.Repository,
    snapshot_id: str,
    group: str | None = None,
    *,
    inline_limit: int = DEFAULT_INLINE_LIMIT,
) -> xr.Dataset:
    """The group at ``snapshot_id`` as a VirtualiZarr dataset: every variable a
    ``ManifestArray`` whose references are the original files' URLs (as kerchunk writes
    them: literal paths) or inline data. ``vds.vz.to_kerchunk(...)`` writes it.

    Raises
    ------
    NotExportableError
        A variable holds more than ``inline_limit`` bytes of native chunks, or is chunked
        unevenly along an axis.
    ConfigError
        No such group.
    """
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.manifests import ManifestGroup, ManifestStore
    from virtualizarr.parsers import IcechunkParser
    from zarr.errors import GroupNotFoundError

    session = repo.readonly_session(snapshot_id=snapshot_id)
    path = (group or "").strip("/")
    try:
        _check_regular(session.store, path)
        store = IcechunkParser(group=path or None).parse_session(
            session, ObjectStoreRegistry(), native_chunks_prefix=_NATIVE
        )
    except (GroupNotFoundError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(
            f"no group {group or '/'!r} at snapshot {snapshot_id} ({exc}); see `icepipe info`",
            field="--group",
        ) from exc
    parsed = store._group
    arrays = {
        name: _for_export(session.store, path, name, marr, inline_limit)
        for name, marr in parsed.arrays.items()
    }
    manifests = ManifestGroup(arrays=arrays, attributes=parsed.metadata.attributes)
    exported = ManifestStore(group=manifests, registry=ObjectStoreRegistry())
    vds: xr.Dataset = exported.to_virtual_dataset(loadable_variables=[], decode_times=False)
    return vds


def _check_regular(store: Any, group: str) -> None:
    import zarr

    node = zarr.open_group(store, path=group, mode="r")
    for name, _ in node.arrays():
        key = f"{group}/{name}" if group else name
        grid = read_chunk_grid(store, key)
        uneven = [i for i, g in enumerate(grid or ()) if isinstance(g, tuple)]
        if uneven:
            raise NotExportableError(
                f"variable {name!r} is chunked unevenly along its axis {uneven[0]} (source "
                "files of different lengths), which kerchunk references cannot express; "
                "export the groups whose files are even, or re-ingest with chunks: "
                "{<dim>: <n>} in native mode",
                variable=name,
            )


def _for_export(store: Any, group: str, name: str, marr: Any, inline_limit: int) -> Any:
    """``marr`` with its native chunks inlined (read from ``store``) and its URLs literal."""
    import zarr
    from virtualizarr.manifests import ChunkManifest, ManifestArray
    from virtualizarr.manifests.manifest import INLINED_CHUNK_PATH

    manifest = marr.manifest
    paths = np.asarray(manifest._paths).copy()
    offsets = np.asarray(manifest._offsets).copy()
    lengths = np.asarray(manifest._lengths).copy()
    inlined = dict(manifest._inlined or {})
    native = [
        idx
        for idx in np.ndindex(paths.shape)
        if str(paths[idx]).startswith(_NATIVE + "/") or str(paths[idx]) == INLINED_CHUNK_PATH
    ]
    size = sum(int(lengths[i]) for i in native)
    if size > inline_limit:
        raise NotExportableError(
            f"variable {name!r} holds {size} bytes of chunks stored in the repository "
            f"(written natively), not references to files, and more than the {inline_limit} "
            f"bytes a reference set inlines; raise --inline-limit to at least {size} to copy "
            "them into the set, or export a group ingested virtually",
            variable=name,
        )
    array = f"{group}/{name}" if group else name
    # The stored array's own chunk keys (the parsed metadata may name another encoding).
    stored = zarr.open_array(store, path=array, mode="r").metadata if native else None
    for idx in native:
        if idx not in inlined:
            assert stored is not None
            inlined[idx] = _chunk_bytes(store, f"{array}/{stored.encode_chunk_key(idx)}")
        paths[idx] = INLINED_CHUNK_PATH
        offsets[idx] = 0
        lengths[idx] = len(inlined[idx])
    for idx in np.ndindex(paths.shape):
        p = str(paths[idx])
        if p and p != INLINED_CHUNK_PATH and not p.startswith(("http://", "https://")):
            paths[idx] = unquote(p)  # icechunk's references are percent-encoded; kerchunk's not
    out = ChunkManifest.from_arrays(
        paths=paths, offsets=offsets, lengths=lengths, validate_paths=False, inlined=inlined or None
    )
    return ManifestArray(metadata=marr.metadata, chunkmanifest=out)


def _chunk_bytes(store: Any, key: str) -> bytes:
    """A chunk as stored (encoded: compressed), from an Icechunk store."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    if buffer is None:
        raise KeyError(key)
    return bytes(buffer.to_bytes())
