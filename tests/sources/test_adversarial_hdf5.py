"""netCDF4/HDF5 files that look laid out like the others but are not, through both scan routes
(VirtualiZarr's parser, and ``sources/quick.py`` + ``hdf5_index`` for files of a known layout).

HDF5 may store a chunk without some of its dataset's filters: an optional filter that failed
on it is skipped, and direct chunk writes (``H5Dwrite_chunk``) choose per chunk, recording
the skipped filters in the chunk's *filter mask*. A virtual reference decodes every chunk of
an array with the array's one codec pipeline, so such a chunk reads back as garbage (here:
unshuffled bytes shuffled back, plausible-looking wrong numbers) or not at all.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources import quick
from icepipe.sources.formats import hdf5_index, netcdf4
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import ScannedFile, scan_file


@pytest.fixture(autouse=True)
def no_templates() -> Iterator[None]:
    hdf5_index.forget_templates()
    quick.forget()
    yield
    hdf5_index.forget_templates()
    quick.forget()


def _write(path: Path, index: int, *, masked: bool) -> Path:
    """Two steps of 4 values (shuffle + zlib, a chunk per step); with ``masked``, the second
    step's chunk is written compressed but not shuffled (filter mask 0x1)."""
    import h5py
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 2)
        nc.createDimension("x", 4)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = [2 * index, 2 * index + 1]
        tas = nc.createVariable("tas", "f4", ("time", "x"), zlib=True, chunksizes=(1, 4))
        tas[:] = np.arange(8, dtype="f4").reshape(2, 4) + 10 * index
    if masked:
        with h5py.File(path, "a") as f:
            raw = np.arange(4, dtype="f4") + 10 * index + 100
            f["tas"].id.write_direct_chunk((1, 0), zlib.compress(raw.tobytes()), filter_mask=1)
    return path


def _source(path: Path) -> SourceFile:
    return SourceFile(f"file://{path}", path.stat().st_size, "0")


@pytest.mark.parametrize("indexed", [True, False])
def test_a_chunk_stored_without_its_filters_is_refused_by_name(
    tmp_path: Path, indexed: bool
) -> None:
    """The first two files make the layout's template; the third, laid out alike, holds a
    chunk stored without the shuffle filter: refused (naming file, variable and fix), not
    referenced as if shuffled, on the template route as on the parser's."""
    options = ScanOptions(format="netcdf4")
    paths = [_write(tmp_path / f"{i}.nc", i, masked=i == 2) for i in range(3)]
    netcdf4.INDEXED_SCANS = indexed
    try:
        results = [scan_file(_source(p), options) for p in paths[:2]]
        assert all(isinstance(r, ScannedFile) for r in results)
        if indexed:  # the second file took the template: the third would too
            assert isinstance(results[1].content, PackedDataset)  # type: ignore[union-attr]
        with pytest.raises(SourceError, match="filter") as info:
            scan_file(_source(paths[2]), options)
    finally:
        netcdf4.INDEXED_SCANS = True
    message = str(info.value)
    assert str(paths[2]) in message and "tas" in message and "mode: native" in message
    assert list(info.value.urls) == [f"file://{paths[2]}"]
