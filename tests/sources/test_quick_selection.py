"""netCDF4 finished scans from a template (``sources/quick.py``) under ``source.variables`` /
``drop_variables``: files differing only in variables the selection leaves out share one
template (``hdf5_index.Layout.selected_key``), and every file equals VirtualiZarr's route
(``INDEXED_SCANS`` off) file by file: schema, dataset, references and values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icepipe.errors import SourceError
from icepipe.sources.formats import hdf5_index, netcdf4
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.scan import ScannedFile, scan_file
from tests.sources.routes import assert_same_scan, local_source, route, usual_scan

pytestmark = pytest.mark.usefixtures("fresh_templates")


def _write(path: Path, index: int, change: str = "") -> Path:
    """A small netCDF4 file of a series (2 steps of 2x3, zlib); ``change`` adds or alters
    something a selection may leave out or keep."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 2)
        nc.createDimension("lat", 2)
        nc.createDimension("lon", 3)
        time = nc.createVariable("time", "i4", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(2) + 2 * index
        nc.createVariable("lat", "f4", ("lat",))[:] = [0.0, 1.0]
        nc.createVariable("lon", "f4", ("lon",))[:] = [0.0, 1.0, 2.0]
        nc.createVariable("height", "f4", ())[:] = 2.0  # a variable, unless a coordinate
        tas = nc.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True)
        tas.units = "K" if change != "units" else "C"
        tas[:] = np.arange(12, dtype="f4").reshape(2, 2, 3) + index
        nc.title = f"file {index}"
        if change == "extra variable":
            diag = nc.createVariable("diag", "f4", ("time", "lat", "lon"), zlib=True)
            diag.actual_range = np.array([0, index], "f4")  # differs per file: in the key
            diag[:] = index
        if change == "extra dimension":  # a diagnostic of its own (per-file) length
            nc.createDimension("obs", index + 1)
            nc.createVariable("diag", "f8", ("obs",))[:] = np.arange(index + 1)
        if change == "extra coordinates":  # makes "height" a coordinate
            diag = nc.createVariable("diag", "f4", ("time",))
            diag.coordinates = "height"
            diag[:] = 1.0
    return path


def _check(paths: list[Path], options: ScanOptions) -> list[str]:
    """Scan ``paths`` in order; each result equals the usual route's; the route of each."""
    routes = []
    for path in paths:
        result = scan_file(local_source(path), options)
        assert isinstance(result, ScannedFile)
        assert_same_scan(result, usual_scan(path, options, netcdf4))
        assert "diag" not in result.dataset.variables
        routes.append(route(result))
    return routes


SELECTIONS = {
    "variables": ScanOptions(format="netcdf4", variables=("tas",)),
    "drop_variables": ScanOptions(format="netcdf4", drop_variables=("diag",)),
}
# What the third file does under each selection.
CASES = {
    "extra variable": "template",  # left out by both selections
    "extra dimension": "template",  # and the dimension only it uses
    "extra coordinates": "usual",  # a left-out variable naming a kept one as a coordinate
    "units": "usual",  # a kept variable's attribute
}


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize("change", list(CASES))
def test_the_key_covers_only_what_the_selection_keeps(
    tmp_path: Path, selection: str, change: str
) -> None:
    paths = [_write(tmp_path / "a.nc", 0), _write(tmp_path / "b.nc", 1)]
    paths.append(_write(tmp_path / "c.nc", 2, change))
    assert _check(paths, SELECTIONS[selection]) == ["usual", "template", CASES[change]]


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_a_series_whose_left_out_variable_differs_per_file_shares_one_template(
    tmp_path: Path, selection: str
) -> None:
    """The first file has a diagnostic the second lacks; each later one has its own."""
    changes = ["extra variable", "", "extra dimension", "extra variable", "extra dimension"]
    paths = [_write(tmp_path / f"{i}.nc", i, c) for i, c in enumerate(changes)]
    assert _check(paths, SELECTIONS[selection]) == ["usual"] + ["template"] * 4


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_a_left_out_variable_the_parser_cannot_read_fails_the_file_on_both_routes(
    tmp_path: Path, selection: str
) -> None:
    """VirtualiZarr's parser fails a whole file on a filter it maps to no Zarr codec (bzip2:
    its numcodecs name has no Zarr 3 implementation; zstd too without hdf5plugin), kept or
    not: a file whose left-out variable has one is not built from the template of files
    without (it would be ingested or refused depending on which file a worker scanned
    first)."""
    import netCDF4

    options = SELECTIONS[selection]
    paths = [_write(tmp_path / "a.nc", 0), _write(tmp_path / "b.nc", 1)]
    assert _check(paths, options) == ["usual", "template"]
    odd = _write(tmp_path / "c.nc", 2)
    with netCDF4.Dataset(odd, "a") as nc:
        compression = next((c for c in ("bzip2", "zstd") if getattr(nc, f"has_{c}_filter")()), None)
        if compression is None:
            pytest.skip("netCDF-C has neither the zstd nor the bzip2 filter here")
        diag = nc.createVariable("diag", "f4", ("time",), compression=compression)
        diag[:] = [1.0, 2.0]
    try:
        usual_scan(odd, options, netcdf4)
    except SourceError as exc:
        refused = str(exc)
    else:
        pytest.skip(f"VirtualiZarr's parser reads {compression} here")
    with pytest.raises(SourceError) as caught:
        scan_file(local_source(odd), options)
    assert str(caught.value) == refused


def _write_unlimited(path: Path, index: int, ahead: bool) -> Path:
    """A file along an unlimited ``time`` whose diagnostic ``diag`` holds one step more than
    the rest when ``ahead`` (a file still being written: HDF5 keeps one length per dataset)."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 2)
        time = nc.createVariable("time", "i4", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(2) + 2 * index
        nc.createVariable("tas", "f4", ("time", "lat"), zlib=True)[:] = np.ones((2, 2))
        diag = nc.createVariable("diag", "f4", ("time", "lat"), zlib=True)
        diag[:] = np.ones((3 if ahead else 2, 2))
    return path


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_a_left_out_variable_longer_along_a_shared_dimension_fails_on_both_routes(
    tmp_path: Path, selection: str
) -> None:
    """xarray refuses the file on the usual route (conflicting sizes for ``time``): the
    template of files without that conflict must not ingest it."""
    options = SELECTIONS[selection]
    paths = [_write_unlimited(tmp_path / f"{i}.nc", i, ahead=False) for i in range(2)]
    assert _check(paths, options) == ["usual", "template"]
    ahead = _write_unlimited(tmp_path / "2.nc", 2, ahead=True)
    with pytest.raises(SourceError, match="conflicting sizes") as usual:
        usual_scan(ahead, options, netcdf4)
    with pytest.raises(SourceError) as caught:
        scan_file(local_source(ahead), options)
    assert str(caught.value) == str(usual.value)


def test_a_file_truncated_inside_a_left_out_variable_is_refused_on_both_routes(
    tmp_path: Path,
) -> None:
    """The usual route checks every reference before selecting: so does the template's."""
    options = SELECTIONS["drop_variables"]
    paths = [_write(tmp_path / f"{i}.nc", i, "extra variable") for i in range(3)]
    assert _check(paths[:2], options) == ["usual", "template"]
    layout = hdf5_index.layout_of(str(paths[2]), None, None, drop_variables=("diag",))
    assert layout is not None and layout.left_out == {"diag"}
    tables = {
        n: hdf5_index.chunk_table(obj, obj.chunks or obj.shape)
        for n, obj in layout.datasets.items()
    }
    hdf5_index.discard(layout)
    ends = {n: int((t[1] + t[2]).max()) for n, t in tables.items() if t is not None}
    size = ends["diag"] - 1  # cut inside the left-out variable's last chunk
    assert max(v for n, v in ends.items() if n != "diag") <= size  # the rest is whole
    for indexed in (True, False):
        netcdf4.INDEXED_SCANS = indexed
        try:
            with pytest.raises(SourceError, match="truncated"):
                scan_file(local_source(paths[2], size), options)
        finally:
            netcdf4.INDEXED_SCANS = True


def _write_grouped(path: Path, index: int, extra: bool) -> Path:
    """A file whose series lives in group ``g`` (dimension scales named by their paths)."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        g = nc.createGroup("g")
        g.createDimension("time", 2)
        g.createDimension("x", 3)
        time = g.createVariable("time", "i4", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(2) + 2 * index
        g.createVariable("x", "f4", ("x",))[:] = [0.0, 1.0, 2.0]
        g.createVariable("tas", "f4", ("time", "x"), zlib=True)[:] = index
        if extra:
            g.createDimension("obs", index + 1)
            g.createVariable("diag", "f8", ("obs",))[:] = np.arange(index + 1)
    return path


@pytest.mark.parametrize("selection", ["variables", "drop_variables"])
def test_a_group_series_shares_one_template_too(tmp_path: Path, selection: str) -> None:
    options = ScanOptions(
        format="netcdf4",
        group="g",
        **({"variables": ("tas",)} if selection == "variables" else {"drop_variables": ("diag",)}),
    )
    paths = [_write_grouped(tmp_path / f"{i}.nc", i, extra=i != 1) for i in range(4)]
    assert _check(paths, options) == ["usual", "template", "template", "template"]
