"""Virtual references of files of uneven length: arrays on a rectilinear chunk grid.

VirtualiZarr concatenates only arrays of one chunk shape, so files whose chunks differ along
the concat dimension (365- and 366-day years, months of 28 to 31 days) are written here, one
file at a time: the array is created as VirtualiZarr creates it (codecs, dtype, fill value,
dimension names, attributes and CF encoding from the first file), its grid is set to the files'
chunks in order (:func:`icepipe.repository.grids.set_chunk_grid`), and each file's manifest is
written at its chunk offset. Appends extend the grid; a region (a late file, a re-ingested one)
must coincide with whole stored chunks. Everything else of a dataset (loaded coordinates,
variables on one regular grid) keeps going through :func:`icepipe.repository.write_virtual`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any, cast

import icechunk
import xarray as xr
import zarr

from icepipe.errors import SchemaMismatchError
from icepipe.repository.grids import (
    ChunkGrid,
    read_chunk_grid,
    rectilinear_enabled,
    set_chunk_grid,
)
from icepipe.repository.write import storage_errors

__all__ = ["file_edges", "write_rectilinear"]


def file_edges(var: xr.Variable, axis: int) -> tuple[int, ...]:
    """The chunk lengths of one file's virtual variable along ``axis``, in order, as its
    format stores them (a partial last chunk is padded to the full length)."""
    chunk = int(var.data.metadata.chunks[axis])
    n = int(var.shape[axis])
    return (chunk,) * max(1, -(-n // chunk))


def write_rectilinear(
    session: icechunk.Session,
    files: Sequence[tuple[str, xr.Dataset]],
    names: Sequence[str],
    *,
    group: str | None,
    dim: str,
    start: int | None = None,
    coords: Sequence[str] = (),
) -> None:
    """Write the virtual variables ``names`` of ``files`` (URL and virtual dataset, in concat
    order) along ``dim`` on a rectilinear grid.

    Without ``start`` the files are appended (the arrays are created when new); with
    ``start`` (a single file) they replace the stored chunks from that position on. The group
    must exist (write the rest of the dataset first). ``coords`` lists those of ``names`` that
    are coordinates: the group's ``coordinates`` attribute keeps naming them, as VirtualiZarr's
    writer does.

    Raises
    ------
    SchemaMismatchError
        The references cannot join the stored arrays (other dtype, codecs, encoding), or a
        region does not coincide with whole stored chunks; the message names the files.
    """
    if not names or not files:
        return
    what = f"the references of {files[0][0]} and the rest into {group or '/'!r}"
    with rectilinear_enabled(), warnings.catch_warnings(), storage_errors(what):
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        root = zarr.open_group(session.store, path=group or "", mode="r+")
        for name in names:
            items = [(url, ds.variables[name]) for url, ds in files]
            try:
                if start is not None:
                    _write_region(session.store, root, name, items, dim, start)
                else:
                    _append(session.store, root, name, items, dim)
            except (NotImplementedError, ValueError) as exc:
                urls = [u for u, _ in items]
                more = f" and {len(urls) - 3} more" if len(urls) > 3 else ""
                shown = ", ".join(urls[:3]) + more
                raise SchemaMismatchError(
                    f"{shown}: variable {name!r} cannot be stored as virtual references into "
                    f"{group or '/'!r}: {str(exc).split('. See')[0]}. Ingest these files with "
                    "mode: native, or into a new group",
                    urls=urls,
                ) from exc
        _keep_coordinates(root, [n for n in names if n in coords])


def _path(root: zarr.Group, name: str) -> str:
    return f"{root.path}/{name}" if root.path else name


def _grid_edges(store: Any, path: str, shape: Sequence[int], axis: int) -> tuple[int, ...]:
    grid = read_chunk_grid(store, path)
    if grid is None:
        raise ValueError(f"no Zarr v3 array at {path!r}")
    g = grid[axis]
    if isinstance(g, int):
        return (g,) * max(1, -(-int(shape[axis]) // g)) if shape[axis] else ()
    return tuple(g)


def _check_joins(var: xr.Variable, arr: zarr.Array[Any], axis: int) -> None:
    """The checks VirtualiZarr's append makes, except that chunk lengths along ``axis`` may
    differ (the grid takes them)."""
    from virtualizarr.codecs import get_codecs
    from virtualizarr.manifests.utils import (
        check_compatible_encodings,
        check_same_codecs,
        check_same_dtypes,
        check_same_ndims,
    )

    ma = var.data
    check_same_dtypes([ma.dtype, arr.dtype])
    check_same_codecs([get_codecs(ma), get_codecs(cast(Any, arr))])
    check_same_ndims([ma.ndim, arr.ndim])
    for i, (a, b) in enumerate(zip(ma.shape, arr.shape, strict=True)):
        if i != axis and a != b:
            raise ValueError(f"shape {ma.shape} does not match the stored {arr.shape}")
    check_compatible_encodings(var.encoding, arr.attrs)  # type: ignore[no-untyped-call]


def _grid(var: xr.Variable, axis: int, edges: tuple[int, ...]) -> ChunkGrid:
    chunks = var.data.metadata.chunks
    return tuple(edges if i == axis else int(c) for i, c in enumerate(chunks))


def _append(
    store: Any, root: zarr.Group, name: str, items: list[tuple[str, xr.Variable]], dim: str
) -> None:
    from virtualizarr.writers.icechunk import (
        write_virtual_variable_to_icechunk,
    )

    first = items[0][1]
    axis = first.dims.index(dim)
    path = _path(root, name)
    if name not in root:
        # Created exactly as VirtualiZarr creates it (first file's metadata, attributes and
        # encoding), with the first file's references.
        write_virtual_variable_to_icechunk(store=store, group=root, name=name, var=first)
        stored, shape, rest = file_edges(first, axis), list(first.shape), items[1:]
    else:
        arr = cast(zarr.Array[Any], root[name])
        for _, var in items:
            _check_joins(var, arr, axis)
        stored = _grid_edges(store, path, arr.shape, axis)
        if sum(stored) != arr.shape[axis]:
            raise ValueError(
                f"the stored array ends with a padded chunk ({arr.shape[axis]} steps in chunks "
                f"{stored[-3:]}): nothing can follow it virtually"
            )
        shape, rest = list(arr.shape), items
    for url, var in items[:-1]:
        if sum(file_edges(var, axis)) != var.shape[axis]:
            raise ValueError(
                f"{url} ends with a padded chunk ({var.shape[axis]} steps in chunks of "
                f"{var.data.metadata.chunks[axis]}), which cannot be followed by more data"
            )
    edges = list(stored)
    offsets = []
    for _, var in rest:
        offsets.append(len(edges))
        edges.extend(file_edges(var, axis))
        shape[axis] += int(var.shape[axis])
    set_chunk_grid(store, path, shape=shape, grid=_grid(first, axis, tuple(edges)))
    for (_, var), k in zip(rest, offsets, strict=True):
        _write_refs(store, root, name, var, axis, k)


def _write_region(
    store: Any,
    root: zarr.Group,
    name: str,
    items: list[tuple[str, xr.Variable]],
    dim: str,
    start: int,
) -> None:

    arr = cast(zarr.Array[Any], root[name])
    for url, var in items:
        axis = var.dims.index(dim)
        _check_joins(var, arr, axis)
        stored = _grid_edges(store, _path(root, name), arr.shape, axis)
        bounds = list(itertools.accumulate(stored, initial=0))
        mine = file_edges(var, axis)
        k = bounds.index(start) if start in bounds else -1
        if k < 0 or tuple(stored[k : k + len(mine)]) != mine:
            raise ValueError(
                f"{url} belongs at position {start} of {dim!r}, where the stored chunks are "
                f"not its chunks {mine[:4]}"
            )
        _write_refs(store, root, name, var, axis, k)
        start += int(var.shape[axis])


def _keep_coordinates(root: zarr.Group, names: Sequence[str]) -> None:
    if not names:
        return
    listed = str(root.attrs.get("coordinates", "")).split()
    missing = [n for n in names if n not in listed]
    if missing:
        root.update_attributes({"coordinates": " ".join([*listed, *missing])})


def _write_refs(
    store: Any, root: zarr.Group, name: str, var: xr.Variable, axis: int, k: int
) -> None:
    """Write one file's references with its first chunk at index ``k`` along ``axis``."""
    from virtualizarr.writers.icechunk import write_manifest_to_icechunk

    write_manifest_to_icechunk(
        store=store,
        group=root,
        arr_name=name,
        manifest=var.data.manifest,
        chunk_index_offsets=tuple(k if i == axis else 0 for i in range(var.ndim)),
    )
