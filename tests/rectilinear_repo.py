"""Build repositories holding rectilinear arrays of virtual references, file by file, without
icepipe's virtual writer: what the readers' tests and the rectilinear benchmark read.

Each file becomes one commit (as one nightly run would make): the first is written by
VirtualiZarr (``vds.vz.to_icechunk``), every later one grows each array along ``time`` by the
file's length (:func:`icepipe.repository.grids.set_chunk_grid`: the data variable gets one
chunk edge per file, a rectilinear grid) and writes the file's manifest at its chunk offset
(VirtualiZarr's ``write_manifest_to_icechunk``), with the loaded coordinates written natively.
Every commit carries an icepipe ledger record naming the file and its place, as a pipeline run
would, so ``icepipe validate`` and ``status`` find them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from icepipe import __version__, repository, sources
from icepipe.repository.grids import read_chunk_grid, rectilinear_enabled, set_chunk_grid

__all__ = ["open_virtual", "write_virtual_rectilinear"]

LOADED = ("time", "lat", "lon")


def open_virtual(path: Path) -> Any:
    """The file as a VirtualiZarr dataset (HDF5 or netCDF3), coordinates loaded."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser, NetCDF3Parser

    with path.open("rb") as f:
        netcdf3 = f.read(3) == b"CDF"
    parser = NetCDF3Parser() if netcdf3 else HDFParser()
    registry = ObjectStoreRegistry({f"file://{path.parent}/": LocalStore(str(path.parent))})
    return open_virtual_dataset(
        f"file://{path}",
        registry=registry,
        parser=parser,
        loadable_variables=list(LOADED),
        decode_times=False,
    )


def write_virtual_rectilinear(
    location: Path,
    paths: Sequence[Path],
    *,
    group: str = "g",
    pipeline: str = "rect",
    concat_dim: str = "time",
) -> list[str]:
    """Ingest ``paths`` (in order, one commit each) into a new repository at ``location``;
    return the snapshot ids."""
    folders = sorted({f"file://{p.parent}/" for p in paths})
    repo = repository.open_repo(str(location), create=True, containers=folders)
    snapshots: list[str] = []
    start = 0
    for path in paths:
        vds = open_virtual(path)
        length = int(vds.sizes[concat_dim])
        session = repo.writable_session("main")
        if start == 0:
            vds.vz.to_icechunk(session.store, group=group)
        else:
            with rectilinear_enabled():  # the arrays become rectilinear with the second file
                _append(session.store, group, vds, concat_dim, start, length)
        record = repository.CommitRecord(
            version=__version__,
            mode="virtual",
            group=group,
            pipeline=pipeline,
            concat_dim=concat_dim,
            run_id=f"test-{len(snapshots)}",
            started_at=datetime.now(UTC).isoformat(),
            files=(_file_record(path, start, length),),
        )
        snapshots.append(
            session.commit(
                f"{pipeline}: {path.name}", metadata={repository.METADATA_KEY: record.to_metadata()}
            )
        )
        start += length
    return snapshots


def _file_record(path: Path, start: int, length: int) -> repository.FileRecord:
    """The ledger record a pipeline run would write (identity as icepipe lists it)."""
    (listed,) = sources.list_sources([f"file://{path}"], is_glob=False)
    return repository.FileRecord.of(listed, start=start, length=length)


def _append(store: Any, group: str, vds: Any, dim: str, start: int, length: int) -> None:
    """Grow every array along ``dim`` by ``length`` and write ``vds`` there."""
    from virtualizarr.manifests import ManifestArray
    from virtualizarr.writers.icechunk import write_manifest_to_icechunk

    root = zarr.open_group(store, path=group, mode="r+")
    for name, var in vds.variables.items():
        if dim not in var.dims:
            continue
        axis = var.dims.index(dim)
        path = f"{group}/{name}"
        grid = read_chunk_grid(store, path)
        assert grid is not None
        arr = root[name]
        old = grid[axis]
        edges = old if isinstance(old, tuple) else _edges(arr.shape[axis], old)
        data = var.data
        if isinstance(data, ManifestArray):
            # One chunk edge per chunk of the file along dim (its own chunk length).
            file_chunk = int(data.metadata.chunk_grid.chunk_shape[axis])
            more = _edges(length, file_chunk)
        else:
            more = (length,)
        new_grid = list(grid)
        new_grid[axis] = (*edges, *more)
        shape = list(arr.shape)
        shape[axis] += length
        set_chunk_grid(store, path, shape=shape, grid=tuple(new_grid))
        offsets = tuple(len(edges) if i == axis else 0 for i in range(var.ndim))
        if isinstance(data, ManifestArray):
            write_manifest_to_icechunk(store, root, name, data.manifest, offsets)
        else:
            out = zarr.open_array(store, path=path, mode="r+")
            region = tuple(
                slice(start, start + length) if i == axis else slice(None) for i in range(var.ndim)
            )
            out[region] = np.asarray(var.values)


def _edges(n: int, chunk: int) -> tuple[int, ...]:
    full, rest = divmod(n, chunk)
    return (chunk,) * full + ((rest,) if rest else ())
