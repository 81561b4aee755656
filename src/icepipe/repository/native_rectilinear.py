"""Native writes into arrays whose chunks along one dimension differ in length.

``chunks: {time: month}`` (or ``year``, ``day``, ``file``) stores a rectilinear chunk grid
along the concat dimension (see :mod:`icepipe.repository.grids`). xarray cannot write such
arrays (``to_zarr``, ``append_dim`` and ``region`` fail on them), so icepipe writes them in
three steps, all in the coordinator except the data:

1. **Metadata.** A new group is created by xarray with ``compute=False`` (arrays, attributes,
   CF encodings; variables held in memory written at once), one chunk along the dimension.
2. **Encodings and stored edges, then the grid.** The stored variables' encodings are read
   back as xarray's own append reads them, so new values encode exactly as the stored ones;
   the stored values of the chunks the write touches only partly (the month the previous run
   ended in) are read raw; then each array gets its new shape and edges
   (:func:`~icepipe.repository.grids.set_chunk_grid`). A chunk cannot grow in place: a chunk
   that gains steps is written again whole, stored part and new part together.
3. **Data.** One Dask task per target chunk (whole chunks only: Icechunk merges forks without
   looking at chunks) writes the CF-encoded values with zarr into a fork of the session, the
   zarr flag for rectilinear grids set inside the task (a worker may be a fresh process);
   the coordinator merges the forks. Nothing is committed here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import icechunk
import numpy as np
import xarray as xr
import zarr
from dask.base import compute, tokenize
from dask.delayed import delayed
from xarray import conventions
from xarray.backends.zarr import ZarrStore
from zarr.core.metadata.v3 import RegularChunkGridMetadata

from icepipe.errors import ConfigError, SchemaMismatchError
from icepipe.repository.grids import (
    ChunkGrid,
    chunk_edges,
    enable_rectilinear,
    read_chunk_grid,
    rectilinear_enabled,
    set_chunk_grid,
)

__all__ = ["create_rectilinear", "stored_edges", "write_native_rectilinear"]


def _path(group: str | None, name: str) -> str:
    g = (group or "").strip("/")
    return f"{g}/{name}" if g else name


def _axis_edges(grid: ChunkGrid, axis: int, length: int) -> tuple[int, ...]:
    g = grid[axis]
    return chunk_edges(length, g) if isinstance(g, int) else tuple(g)


def stored_edges(
    session: icechunk.Session, group: str | None, dim: str
) -> tuple[tuple[int, ...], bool]:
    """The stored edges along ``dim`` of the group's arrays that have it (``()`` for a new
    group), and whether any array stores them as a rectilinear grid.

    Raises
    ------
    SchemaMismatchError
        Arrays of a rectilinear group disagree on their edges along ``dim``.
    """
    with rectilinear_enabled():
        try:
            g = zarr.open_group(session.store, path=(group or "").strip("/"), mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            return (), False
        found: dict[str, tuple[int, ...]] = {}
        rectilinear = False
        for name, arr in g.arrays():
            dims = tuple(getattr(arr.metadata, "dimension_names", None) or ())
            if dim not in dims:
                continue
            grid = read_chunk_grid(session.store, _path(group, name))
            if grid is None:
                continue
            axis = dims.index(dim)
            # Not read_chunk_grid's view: it reports equal edges (files of one length) as
            # regular, but the array's metadata stays rectilinear.
            rectilinear |= not isinstance(arr.metadata.chunk_grid, RegularChunkGridMetadata)
            found[name] = _axis_edges(grid, axis, int(arr.shape[axis]))
    if rectilinear and len(set(found.values())) > 1:
        shown = "; ".join(f"{n}: {e[:6]}..." for n, e in list(found.items())[:3])
        raise SchemaMismatchError(
            f"the arrays of {group or '/'!r} are chunked differently along {dim!r} ({shown}); "
            "ingest into a new group"
        )
    return next(iter(found.values()), ()), rectilinear


def create_rectilinear(
    session: icechunk.Session,
    ds: xr.Dataset,
    *,
    group: str | None,
    dim: str,
    edges: Sequence[int],
    encoding: Mapping[str, Mapping[str, Any]],
) -> None:
    """Create ``group`` (which must not exist) with the variables of ``ds``, chunked ``edges``
    along ``dim`` and as ``encoding`` says elsewhere, and write their data (see the module
    docstring). ``encoding`` is :func:`icepipe.repository.native_encoding`'s."""
    length = int(ds.sizes[dim])
    enc = {
        n: {
            **e,
            "chunks": tuple(
                length if d == dim else int(c)
                for d, c in zip(ds.variables[n].dims, e.get("chunks", ()), strict=True)
            ),
        }
        if dim in ds.variables[n].dims
        else dict(e)
        for n, e in encoding.items()
    }
    with rectilinear_enabled():
        ds.to_zarr(
            session.store,
            group=group,
            mode="w-",
            encoding=enc,
            compute=False,
            consolidated=False,
            zarr_format=3,
            safe_chunks=False,
        )
    # Variables in memory without ``dim`` are written already; the others are written now.
    names = [
        str(n)
        for n, v in ds.variables.items()
        if dim in v.dims or (v.ndim and isinstance(v.data, da.Array))
    ]
    write_native_rectilinear(
        session, ds[names] if names else ds, group=group, dim=dim, start=0, edges=edges
    )


def _encoded(zs: ZarrStore, ds: xr.Dataset, names: Sequence[str]) -> dict[str, xr.Variable]:
    """The variables ``names`` of ``ds`` CF-encoded exactly as the stored ones (xarray's own
    rule for appends: the stored variables' decoded encodings applied to the new values)."""
    existing: dict[str, xr.Variable] = {}
    for n in names:
        stored = {n: zs.open_store_variable(name=n)}
        try:
            existing.update(conventions.decode_cf_variables(stored, {})[0])
        except ValueError:
            # Time units xarray cannot decode (months since, year 0): stored and read raw.
            existing.update(conventions.decode_cf_variables(stored, {}, decode_times=False)[0])
    with_encoding = {}
    for n in names:
        var = ds.variables[n].copy(deep=False)
        if var.dims != existing[n].dims:
            raise SchemaMismatchError(
                f"variable {n!r} has dimensions {var.dims} but {existing[n].dims} in the "
                "repository; fix the source files or ingest into a new group"
            )
        var.encoding = existing[n].encoding
        with_encoding[n] = var
    encoded, _ = zs.encode(with_encoding, {})
    return {str(k): v for k, v in encoded.items()}


def _span(edges: Sequence[int], start: int, stop: int) -> tuple[int, int, int, int]:
    """The chunks ``first..last-1`` that positions ``start..stop-1`` touch, and the positions
    ``lo..hi-1`` those chunks cover."""
    bounds = [0, *itertools.accumulate(edges)]
    first = max(i for i, b in enumerate(bounds[:-1]) if b <= start)
    last = min(i for i, b in enumerate(bounds) if b >= stop)
    return first, last, bounds[first], bounds[last]


def write_native_rectilinear(
    session: icechunk.Session,
    ds: xr.Dataset,
    *,
    group: str | None,
    dim: str,
    start: int,
    edges: Sequence[int],
) -> None:
    """Write ``ds`` (its ``dim`` steps at positions ``start``..) into the existing arrays of
    ``group``, whose grid along ``dim`` becomes ``edges`` (an append extends them; a region
    write keeps them). Chunks the write covers only partly are written again whole, with the
    stored values of the rest. Variables without ``dim`` are written whole.

    Raises
    ------
    ConfigError
        ``edges`` do not cover the array after the write.
    """
    names = [str(n) for n in ds.variables]
    stop = start + int(ds.sizes.get(dim, 0))
    edges = tuple(int(e) for e in edges)
    if sum(edges) < stop:
        raise ConfigError(f"edges {edges[:5]}... cover {sum(edges)} steps, not {stop}")
    first, last, lo, hi = _span(edges, start, stop)
    with rectilinear_enabled():
        zs = ZarrStore.open_group(
            session.store, group=group, mode="r+", consolidated=False, zarr_format=3
        )
        encoded = _encoded(zs, ds, names)
        arrays = {n: zarr.open_array(session.store, path=_path(group, n)) for n in names}
        sources: dict[str, Any] = {}
        grids: dict[str, tuple[tuple[int, ...], ...]] = {}
        offsets: dict[str, tuple[int, ...]] = {}
        for n in names:
            arr, var = arrays[n], encoded[n]
            grid = read_chunk_grid(session.store, _path(group, n))
            assert grid is not None
            data = var.data if isinstance(var.data, da.Array) else da.from_array(var.data)
            if dim not in var.dims:
                grids[n] = tuple(_axis_edges(grid, i, s) for i, s in enumerate(arr.shape))
                sources[n], offsets[n] = data, (0,) * arr.ndim
                continue
            axis = var.dims.index(dim)
            # Stored steps sharing a chunk with the new ones, read raw before the grid changes.
            before = arr[_along(arr.ndim, axis, lo, start)] if lo < start else None
            after = arr[_along(arr.ndim, axis, stop, hi)] if stop < hi else None
            parts = [
                da.from_array(p) if isinstance(p, np.ndarray) else p
                for p in (before, data, after)
                if p is not None
            ]
            sources[n] = da.concatenate(parts, axis=axis) if len(parts) > 1 else data
            shape = tuple(sum(edges) if i == axis else s for i, s in enumerate(arr.shape))
            new_grid = tuple(edges if i == axis else g for i, g in enumerate(grid))
            if shape != tuple(arr.shape) or new_grid != grid:
                set_chunk_grid(session.store, _path(group, n), shape=shape, grid=new_grid)
            grids[n] = tuple(
                edges[first:last] if i == axis else _axis_edges(grid, i, s)
                for i, s in enumerate(shape)
            )
            offsets[n] = tuple(lo if i == axis else 0 for i in range(arr.ndim))
    _write_blocks(session, group, sources, grids, offsets)


def _along(ndim: int, axis: int, a: int, b: int) -> tuple[slice, ...]:
    return tuple(slice(a, b) if i == axis else slice(None) for i in range(ndim))


def _write_blocks(
    session: icechunk.Session,
    group: str | None,
    sources: Mapping[str, Any],
    grids: Mapping[str, tuple[tuple[int, ...], ...]],
    offsets: Mapping[str, tuple[int, ...]],
) -> None:
    """One task per target chunk: write it into a fork; merge the forks into ``session``."""
    fork = session.fork()
    tasks: list[Any] = []
    token = tokenize(session.snapshot_id, sorted(sources), np.random.random())
    for n, src in sources.items():
        if src.size == 0:
            continue
        src = src.rechunk(grids[n])
        blocks = src.to_delayed()
        bounds = [tuple(itertools.accumulate(c, initial=0)) for c in src.chunks]
        for index in np.ndindex(*src.numblocks):
            sel = tuple(
                slice(o + b[i], o + b[i + 1])
                for o, b, i in zip(offsets[n], bounds, index, strict=True)
            )
            tasks.append(
                delayed(_write_block, pure=False)(
                    fork,
                    _path(group, n),
                    sel,
                    blocks[index],
                    dask_key_name=f"icepipe-write-{token}-{len(tasks)}",
                )
            )
    if tasks:
        forks = compute(*tasks)
        session.merge(*forks)


def _write_block(fork: Any, path: str, selection: tuple[slice, ...], block: Any) -> Any:
    """Write one whole chunk (a Dask task: runs on a worker, which may never have seen the
    zarr flag for rectilinear grids).

    The flag is set for the worker process, not for the task: zarr's config is process-wide,
    so a task leaving a ``zarr.config.set`` block would switch it off under the tasks other
    threads of the worker are running.
    """
    enable_rectilinear()
    arr = zarr.open_array(fork.store, path=path, mode="r+")
    arr[selection] = np.asarray(block)
    return fork
