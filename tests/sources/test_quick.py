"""Finished scans from a template (``sources/quick.py``, over ``hdf5_index``'s layout keys) give
what the usual route gives, file by file; and every way a file may differ from the file before
it either reuses the template correctly or goes the usual way.

Each case scans, through :func:`scan_file`, a first file (the template), a second file of the
same layout (other time values and title: built from the template), then a variant that differs
in one respect; each result must equal VirtualiZarr's route (``INDEXED_SCANS`` off): same schema,
same dataset (``hdf5_index.same_dataset``: variables, attributes with their types, encodings,
values, chunk metadata and references). Removing any one of the checks that send a variant the
usual way (its part of the layout key, the loaded-values comparison) makes its case fail.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources.formats import netcdf4
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import ScannedFile, scan_file, scan_files
from tests.sources.routes import assert_same_scan, local_source, usual_scan

pytestmark = pytest.mark.usefixtures("fresh_templates")


def _write(path: Path, index: int, change: str = "") -> Path:
    """A small netCDF4 file of a series (3 steps of 3x3, zlib, one chunk per step); ``change``
    makes it differ from the others in one respect."""
    n = 3
    values = np.arange(n * 9, dtype="f4").reshape(n, 3, 3) + index
    dims = ("time", "lon", "lat") if change == "dims" else ("time", "lat", "lon")
    lat = np.array([-1.0, 0.0, 1.0]) + (0.5 if change == "coordinate" else 0.0)
    ds = xr.Dataset(
        {"tas": (dims, values)},
        coords={"time": np.arange(n) + n * index, "lat": lat, "lon": np.array([0.0, 1.0, 2.0])},
        attrs={"title": f"file {index}", "institution": "icepipe tests"},
    )
    ds["time"].attrs["units"] = "days since 2000-01-01"
    ds["tas"].attrs["units"] = "degC" if change == "attribute value" else "degK"  # one length
    # The same four bytes either way: only the attribute's type tells them apart.
    ds["tas"].attrs["valid_min"] = np.int32(0) if change == "attribute type" else np.float32(0)
    if change == "group attribute type":
        ds.attrs["institution"] = np.int32(7)
    if change == "extra variable":
        ds["pr"] = (("time", "lat", "lon"), values * 2)
    enc: dict[str, Any] = {
        "zlib": True,
        "complevel": 1,
        "shuffle": change == "filters",
        "chunksizes": (2 if change == "chunking" else 1, 3, 3),
        "_FillValue": np.float32(-1.0 if change == "fill value" else -9.0),
    }
    encoding = {"tas": enc, **({"pr": enc} if change == "extra variable" else {})}
    ds.to_netcdf(path, engine="netcdf4", encoding=encoding)
    return path


def _write_plain(path: Path, index: int, fill: float) -> Path:
    """A plain HDF5 file (no netCDF attributes, no dimension scales) whose datasets differ
    from the others' only in their HDF5 fill value when ``fill`` does."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset(
            "v", data=np.arange(6.0).reshape(3, 2) + index, chunks=(1, 2), fillvalue=fill
        )
        f.attrs["title"] = f"file {index}"
    return path


# What each variant does: "template" (built from the first file's template) or "usual".
CASES = {
    "title and time values": "template",
    "attribute value": "usual",
    "attribute type": "usual",
    "group attribute type": "usual",  # (its value is read per file: reused, it would be right)
    "filters": "usual",
    "fill value": "usual",
    "chunking": "usual",
    "dims": "usual",
    "extra variable": "usual",
    "coordinate": "usual",
}


@pytest.mark.parametrize("change", list(CASES))
def test_a_file_that_differs_reuses_the_template_correctly_or_goes_the_usual_way(
    tmp_path: Path, change: str
) -> None:
    options = ScanOptions(format="netcdf4")
    first = _write(tmp_path / "a.nc", 0)
    second = _write(tmp_path / "b.nc", 1)
    variant = _write(tmp_path / "c.nc", 2, "" if change == "title and time values" else change)
    results = [scan_file(local_source(p), options) for p in (first, second, variant)]
    assert all(isinstance(r, ScannedFile) for r in results)
    routes = [
        "template" if isinstance(r.content, PackedDataset) else "usual"  # type: ignore[union-attr]
        for r in results
    ]
    for path, result in zip((first, second, variant), results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf4))  # type: ignore[arg-type]
        pickle.loads(pickle.dumps(result))
    assert routes[:2] == ["usual", "template"]  # the first file makes the template
    assert routes[2] == CASES[change], change


def test_a_plain_hdf5_file_with_another_fill_value_goes_the_usual_way(tmp_path: Path) -> None:
    """The HDF5 fill value (Zarr's fill value of the virtual array) is part of the layout even
    where no attribute says it."""
    options = ScanOptions(format="netcdf4", concat_dim="phony_dim_0")
    paths = [
        _write_plain(tmp_path / "a.h5", 0, -9.0),
        _write_plain(tmp_path / "b.h5", 1, -9.0),
        _write_plain(tmp_path / "c.h5", 2, -1.0),
    ]
    results = [scan_file(local_source(p), options) for p in paths]
    routes = [isinstance(r.content, PackedDataset) for r in results]  # type: ignore[union-attr]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf4))  # type: ignore[arg-type]
    assert routes == [False, True, False]


def test_a_file_with_a_chunk_never_written_goes_the_usual_way(tmp_path: Path) -> None:
    import netCDF4

    options = ScanOptions(format="netcdf4")
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", 2)
            nc.createDimension("x", 2)
            nc.createVariable("time", "i4", ("time",))[:] = np.arange(2) + 2 * i
            tas = nc.createVariable("tas", "f4", ("time", "x"), chunksizes=(1, 2), zlib=True)
            tas[0] = [1.0, 2.0]
            if i < 2:  # the last file's second step is never written: no chunk
                tas[1] = [3.0, 4.0]
        paths.append(path)
    results = [scan_file(local_source(p), options) for p in paths]
    routes = [isinstance(r.content, PackedDataset) for r in results]  # type: ignore[union-attr]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf4))  # type: ignore[arg-type]
    assert routes == [False, True, False]


def test_selection_and_order_by_are_part_of_the_template(tmp_path: Path) -> None:
    """Files scanned with other options do not take a template made with different ones."""
    paths = [_write(tmp_path / f"{i}.nc", i, "extra variable") for i in range(3)]
    both = ScanOptions(format="netcdf4")
    one = ScanOptions(format="netcdf4", drop_variables=("pr",))
    results = [
        scan_file(local_source(paths[0]), both),
        scan_file(local_source(paths[1]), one),
        scan_file(local_source(paths[2]), one),
        scan_file(local_source(paths[2]), both),
    ]
    routes = [isinstance(r.content, PackedDataset) for r in results]  # type: ignore[union-attr]
    assert routes == [False, False, True, True]
    for (path, opts), result in zip(
        [(paths[0], both), (paths[1], one), (paths[2], one), (paths[2], both)],
        results,
        strict=True,
    ):
        assert_same_scan(result, usual_scan(path, opts, netcdf4))  # type: ignore[arg-type]


def test_a_truncated_file_of_a_known_layout_is_refused(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.nc", 0)
    second = _write(tmp_path / "b.nc", 1)
    options = ScanOptions(format="netcdf4")
    scan_file(local_source(first), options)
    short = SourceFile(f"file://{second}", 100, "0")  # as if cut after 100 bytes
    with pytest.raises(SourceError, match="truncated"):
        scan_file(short, options)


def test_a_batch_packs_template_scans_into_columns(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"{i}.nc", i) for i in range(4)]
    options = ScanOptions(format="netcdf4")
    batch = scan_files([local_source(p) for p in paths], options)
    contents = [r.content for r in batch]  # type: ignore[union-attr]
    assert all(isinstance(c, PackedDataset) and c.columns is not None for c in contents)
    for path, result in zip(paths, batch, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf4))  # type: ignore[arg-type]
