"""netCDF4/HDF5 files that look laid out like the others but are not, through both scan routes
(VirtualiZarr's parser, and ``sources/quick.py`` + ``hdf5_index`` for files of a known layout).

HDF5 may store a chunk without some of its dataset's filters: an optional filter that failed
on it is skipped, and direct chunk writes (``H5Dwrite_chunk``) choose per chunk, recording
the skipped filters in the chunk's *filter mask*. A virtual reference decodes every chunk of
an array with the array's one codec pipeline, so such a chunk reads back as garbage (here:
unshuffled bytes shuffled back, plausible-looking wrong numbers) or not at all.
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources.formats import hdf5_index, netcdf4
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import ScannedFile, scan_file
from tests.sources.routes import assert_same_scan, local_source, route, usual_scan

pytestmark = pytest.mark.usefixtures("fresh_templates")


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
        results = [scan_file(local_source(p), options) for p in paths[:2]]
        assert all(isinstance(r, ScannedFile) for r in results)
        if indexed:  # the second file took the template: the third would too
            assert isinstance(results[1].content, PackedDataset)  # type: ignore[union-attr]
        with pytest.raises(SourceError, match="filter") as info:
            scan_file(local_source(paths[2]), options)
    finally:
        netcdf4.INDEXED_SCANS = True
    message = str(info.value)
    assert str(paths[2]) in message and "tas" in message and "mode: native" in message
    assert list(info.value.urls) == [f"file://{paths[2]}"]
    assert str(pickle.loads(pickle.dumps(info.value))) == message
    masked = hdf5_index.MaskedChunkError((1, 0), 1)
    assert pickle.loads(pickle.dumps(masked)).chunk == (1, 0)


def _variant(path: Path, index: int, change: str) -> Path:
    """A file of a small series (3 steps of 4 values, zlib, a chunk per step), differing
    from the others in ``change``."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.title = f"fichier é {index}" if change == "unicode title" else f"file {index}"
        nc.version = np.float64(np.nan if change == "NaN global number" else index)
        if change == "int global number":
            nc.version = np.int32(index)
        g = nc.createGroup("g") if change == "group" else nc
        g.createDimension("time", 4 if change == "steps" else 3)
        g.createDimension("x", 4)
        n = g.dimensions["time"].size
        time = g.createVariable("time", "f8", ("time",))
        per_file_epoch = change == "time units"  # every file counts from its own start
        time.units = f"hours since 2000-01-{index + 1:02d}" if per_file_epoch else "days since 2000"
        time.calendar = "noleap" if change == "calendar" else "standard"
        time[:] = np.arange(n) + (0 if per_file_epoch else n * index)
        g.createVariable("x", "f4", ("x",))[:] = np.arange(4.0)
        tas = g.createVariable(
            "tax" if change == "renamed" else "tas",
            np.dtype(">f4" if change == "big-endian" else "f4"),
            ("time", "x"),
            zlib=True,
            complevel=5 if change == "compression level" else 1,
            shuffle=False,
            chunksizes=(1, 4),
            endian="big" if change == "big-endian" else "native",
            fill_value=np.float32(-9),
        )
        tas.long_name = f"temperature {index}" if change == "long_name" else "temperature"
        tas.setncattr("weight", np.float32(2.0 if change == "float attribute" else 1.0))
        tas[:] = np.arange(n * 4, dtype="f4").reshape(n, 4) + index
    return path


# What the third file does: "template" (built from the first file's) or "usual". The layout
# key tells apart what would change the result; values read per file take the template.
VARIANTS = {
    "unicode title": "usual",  # a string of another HDF5 type (variable-length, not fixed)
    "NaN global number": "usual",
    "int global number": "usual",
    "calendar": "usual",
    "steps": "usual",
    "renamed": "usual",  # same length, same bytes elsewhere
    "big-endian": "usual",
    "compression level": "usual",
    "float attribute": "usual",
    "long_name": "template",
    "time units": "template",
    "group": "template",
}


@pytest.mark.parametrize("change", list(VARIANTS))
def test_files_laid_out_almost_alike_scan_as_the_parser_scans_them(
    tmp_path: Path, change: str
) -> None:
    """Files 0 and 1 are alike (1 takes 0's template), file 2 differs in ``change`` (for
    "time units" and "group", every file does): each scan equals VirtualiZarr's route."""
    every = change in ("time units", "group")
    options = ScanOptions(format="netcdf4", group="g" if change == "group" else None)
    paths = [_variant(tmp_path / f"{i}.nc", i, change if every or i == 2 else "") for i in range(3)]
    results = [scan_file(local_source(p), options) for p in paths]
    routes = [route(r) for r in results]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf4))
    assert routes == ["usual", "template", VARIANTS[change]]


def test_a_chunk_stored_without_its_filters_in_a_bucket_is_refused_by_name(
    tmp_path: Path, s3: Any
) -> None:
    """Object-store files take the parser's route: the chunk index is read there too."""
    from icepipe.storage import StorageOptions

    paths = [_write(tmp_path / f"{i}.nc", i, masked=i == 1) for i in range(2)]
    bucket = s3.bucket()
    urls = s3.upload(paths, bucket, "nc")
    options = ScanOptions(format="netcdf4", storage=StorageOptions(**s3.options()))
    sources = [SourceFile(u, p.stat().st_size, "0") for u, p in zip(urls, paths, strict=True)]
    assert isinstance(scan_file(sources[0], options), ScannedFile)
    with pytest.raises(SourceError, match="filter") as info:
        scan_file(sources[1], options)
    message = str(info.value)
    assert urls[1] in message and "'tas'" in message and "(1, 0)" in message
    assert "mode: native" in message
    assert list(info.value.urls) == [urls[1]]
