"""Rectilinear chunk grids: arrays whose chunks differ in length along one dimension.

Zarr 3.4 reads and writes rectilinear grids (``chunk_grid: {"name": "rectilinear"}``) behind
an experimental flag, and Icechunk commits them, but xarray cannot write them and VirtualiZarr
cannot concatenate them. icepipe writes them itself: it creates or extends an array's grid by
rewriting the array's ``zarr.json`` in the session (Icechunk keeps the array's chunks when its
metadata is updated), then writes the chunks (virtual references or native data) by index.

Every reader of such an array needs the flag: :func:`rectilinear_enabled` sets it for a block,
:func:`enable_rectilinear` for the process (and, through the environment, for the Dask workers
it spawns afterwards).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ChunkGrid",
    "chunk_edges",
    "enable_rectilinear",
    "extend_edges",
    "read_chunk_grid",
    "rectilinear_enabled",
    "set_chunk_grid",
    "stored_chunks",
]

#: One entry per dimension: an ``int`` for a regular dimension (its chunk length), a tuple of
#: chunk lengths (edges) for a rectilinear one.
type ChunkGrid = tuple[int | tuple[int, ...], ...]

_FLAG = "array.rectilinear_chunks"
_ENV = "ZARR_ARRAY__RECTILINEAR_CHUNKS"


def enable_rectilinear() -> None:
    """Let zarr read and write rectilinear grids in this process and in the processes it
    starts from now on (zarr reads ``ZARR_ARRAY__RECTILINEAR_CHUNKS`` when it is imported)."""
    import zarr

    os.environ[_ENV] = "True"
    zarr.config.set({_FLAG: True})


@contextmanager
def rectilinear_enabled() -> Iterator[None]:
    """Let zarr read and write rectilinear grids inside the block."""
    import zarr

    with zarr.config.set({_FLAG: True}):
        yield


def stored_chunks(arr: Any) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """The chunk lengths of an opened Zarr array, regular or rectilinear (where zarr's
    ``Array.chunks`` raises ``NotImplementedError``): its longest chunk per dimension, and its
    edges per dimension for a rectilinear grid (``()`` for a regular one)."""
    grid = getattr(arr.metadata, "chunk_grid", None)
    shapes = getattr(grid, "chunk_shapes", None)
    if shapes is None:
        return tuple(int(c) for c in arr.chunks), ()
    edges: list[tuple[int, ...]] = []
    for n, dim in zip(arr.shape, shapes, strict=True):
        if isinstance(dim, int):
            edges.append((int(dim),) * max(1, -(-int(n) // int(dim))))
        else:
            edges.append(tuple(int(e) for e in dim))
    return tuple(max(e) if e else 0 for e in edges), tuple(edges)


def chunk_edges(length: int, chunk: int) -> tuple[int, ...]:
    """The edges of ``length`` steps cut into chunks of ``chunk`` (the last one short)."""
    if length <= 0:
        return ()
    full, rest = divmod(length, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


def extend_edges(edges: Sequence[int], more: Sequence[int]) -> tuple[int, ...]:
    """Edges after appending chunks of lengths ``more`` (pure; no padding is inferred)."""
    return (*(int(e) for e in edges), *(int(m) for m in more))


def _get_json(store: Any, key: str) -> dict[str, Any] | None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else json.loads(buf.to_bytes())


def _key(path: str) -> str:
    path = path.strip("/")
    return f"{path}/zarr.json" if path else "zarr.json"


def read_chunk_grid(store: Any, path: str) -> ChunkGrid | None:
    """The chunk grid of the Zarr v3 array at ``path`` in ``store`` (``None`` when there is
    no such array, or it is a Zarr v2 array). A dimension of a rectilinear grid whose chunks
    are all as long (the last one may reach past the end) is reported as regular."""
    meta = _get_json(store, _key(path))
    if meta is None or meta.get("node_type") != "array":
        return None
    grid = meta["chunk_grid"]
    conf = grid.get("configuration", {})
    if grid.get("name") == "regular":
        return tuple(int(c) for c in conf["chunk_shape"])
    out: list[int | tuple[int, ...]] = []
    for dim in conf["chunk_shapes"]:
        if isinstance(dim, int):
            out.append(dim)
            continue
        edges: list[int] = []
        for item in dim:  # run-length encoded entries are [length, count]
            if isinstance(item, list):
                edges.extend([int(item[0])] * int(item[1]))
            else:
                edges.append(int(item))
        n = int(meta["shape"][len(out)])
        if edges and len(set(edges)) == 1 and len(edges) == max(1, -(-n // edges[0])):
            out.append(edges[0])  # regular: every chunk as long, the last one padded
        else:
            out.append(tuple(edges))
    return tuple(out)


def set_chunk_grid(store: Any, path: str, *, shape: Sequence[int], grid: ChunkGrid) -> None:
    """Give the existing array at ``path`` the ``shape`` and chunk ``grid`` (rectilinear when
    any dimension has edges), keeping its chunks, codecs and attributes.

    The edges of a rectilinear dimension must cover its length; the last edge may reach past
    it (a padded last chunk). Call this in the coordinator before forking: two forks changing
    one array's metadata cannot be merged.

    Raises
    ------
    ValueError
        No array at ``path``, or the grid does not fit ``shape``.
    """
    from zarr.core.buffer.cpu import Buffer
    from zarr.core.sync import sync

    key = _key(path)
    meta = _get_json(store, key)
    if meta is None or meta.get("node_type") != "array":
        raise ValueError(f"no Zarr v3 array at {path!r}")
    if len(shape) != len(grid) or len(shape) != len(meta["shape"]):
        raise ValueError(f"{path!r}: shape {tuple(shape)} and grid {grid} do not match")
    dims: list[int | list[int]] = []
    for n, g in zip(shape, grid, strict=True):
        if isinstance(g, int):
            dims.append(int(g))
            continue
        g = tuple(int(e) for e in g)
        total = sum(g)
        if total < n or (g and total - g[-1] >= n and n > 0):
            raise ValueError(f"{path!r}: edges {g} (sum {total}) do not cover {n} steps")
        dims.append([int(e) for e in g])
    meta["shape"] = [int(n) for n in shape]
    if all(isinstance(d, int) for d in dims):
        meta["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": dims}}
    else:
        # Icechunk 2.3 parses only explicit edge lists: a regular dimension is written as its
        # chunks, the last one padded past the end as a regular grid stores it.
        explicit = [
            [d] * max(1, -(-int(n) // d)) if isinstance(d, int) else d
            for n, d in zip(shape, dims, strict=True)
        ]
        meta["chunk_grid"] = {
            "name": "rectilinear",
            "configuration": {"kind": "inline", "chunk_shapes": explicit},
        }
    sync(store.set(key, Buffer.from_bytes(json.dumps(meta).encode())))
