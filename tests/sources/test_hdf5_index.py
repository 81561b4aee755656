"""The chunk-index route of netCDF4/HDF5 scans gives the datasets of VirtualiZarr's route.

Every real HDF5 file of ``data/`` and Hypothesis-generated small files are scanned both ways: a
file laid out like the one before it is rebuilt from that file's template, and must be identical
(same variables in the same order, dims, attributes, encodings, loaded values, ManifestArray
metadata and references) to its own slow scan.
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icepipe.model import SourceFile
from icepipe.sources.formats import hdf5_index, netcdf4
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.scan import scan_file
from tests.conftest import write_series

MAGIC = b"\x89HDF\r\n\x1a\n"


def _hdf5_files(data: Path) -> list[Path]:
    out = []
    for path in sorted(data.rglob("*")):
        if path.is_file() and path.stat().st_size < 200_000_000:
            with path.open("rb") as f:
                if f.read(8) == MAGIC:
                    out.append(path)
    return out


pytestmark = pytest.mark.usefixtures("fresh_templates")


def _slow(path: Path, options: ScanOptions) -> xr.Dataset | None:
    try:
        return netcdf4.scan_parsed(f"file://{path}", options)
    except Exception:
        return None  # the slow route refuses it: so must the fast one (checked below)


def _fast_after(template: Path, path: Path, options: ScanOptions) -> tuple[str, Any]:
    """Prime with ``template``'s slow scan, then scan ``path`` by the index: ('hit', ds),
    ('miss', None) when the layouts differ or the template is unusable, or ('refused', None)."""
    hdf5_index.forget_templates()
    url = f"file://{template}"
    first = _slow(template, options)
    layout = hdf5_index.layout_of(str(template), options.group, options.order_by)
    if layout is None:
        return "refused", None
    if first is None:
        hdf5_index.discard(layout)
        return "refused", None
    hdf5_index.remember(layout, first, url, url)
    ds, again = hdf5_index.scan_indexed(
        str(path), f"file://{path}", f"file://{path}", options.group, options.order_by
    )
    if again is not None:
        hdf5_index.discard(again)
    if ds is not None and options.group is None:
        # What the scan asks next: the variables the parser leaves out, as the file says.
        known = hdf5_index.empty_datasets(f"file://{path}")
        assert known == netcdf4._empty_datasets(f"file://{path}", None)
    return ("hit", ds) if ds is not None else ("miss", None)


def test_every_real_hdf5_file_scans_identically_both_ways(sample_data: Path) -> None:
    files = _hdf5_files(sample_data)
    assert len(files) >= 20
    options = ScanOptions(format="netcdf4")
    outcome: dict[str, int] = {}
    # Each file after itself (its own rebuild), and after the file before it (a series).
    for template, path in [(f, f) for f in files] + list(itertools.pairwise(files)):
        kind, ds = _fast_after(template, path, options)
        outcome[kind] = outcome.get(kind, 0) + 1
        if kind == "hit":
            slow = _slow(path, options)
            assert slow is not None, f"{path}: fast route read a file the slow route refuses"
            assert hdf5_index.same_dataset(ds, slow), f"{path} after {template}"
    print(f"\n{len(files)} files: {outcome}")
    assert outcome.get("hit", 0) >= 10  # the nemo and iris series share layouts


def test_the_reader_gives_the_same_scans_with_and_without_the_index(tmp_path: Path) -> None:
    paths = write_series(tmp_path, 3, variables=("tas", "pr"), steps=[2, 2, 3])
    options = ScanOptions(format="netcdf4")
    sources = [SourceFile(f"file://{p}", p.stat().st_size, "0") for p in paths]
    fast = [scan_file(s, options) for s in sources]
    netcdf4.INDEXED_SCANS = False
    try:
        slow = [scan_file(s, options) for s in sources]
    finally:
        netcdf4.INDEXED_SCANS = True
    # Two layouts (2 and 3 steps), each with a usable template.
    templates = hdf5_index._templates.values()
    assert len(templates) == 2
    assert all(t is not None for t in templates)
    for a, b in zip(fast, slow, strict=True):
        assert hdf5_index.same_dataset(a.dataset, b.dataset)  # type: ignore[union-attr]
        assert a.schema == b.schema  # type: ignore[union-attr]
        pickle.loads(pickle.dumps(a))


@st.composite
def _layouts(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "dtype": draw(st.sampled_from(["f4", "f8", "i2", "i4"])),
        "contiguous": draw(st.booleans()),
        "zlib": draw(st.booleans()),
        "shuffle": draw(st.booleans()),
        "fletcher32": draw(st.booleans()),
        "fill": draw(st.sampled_from(["none", "default", "value"])),
        "coord_fill": draw(st.booleans()),
        "group": draw(st.sampled_from([None, "g"])),
        "steps": draw(st.integers(1, 3)),
        "partial": draw(st.booleans()),
        "same_units": draw(st.booleans()),
        "scalar": draw(st.booleans()),
    }


def _write(path: Path, spec: dict[str, Any], index: int) -> None:
    rng = np.random.default_rng(index)
    n = spec["steps"]
    dtype = np.dtype(spec["dtype"])
    values = (rng.random((n, 3, 4)) * 100).astype(dtype)
    if spec["partial"]:
        values = values.astype("f8")
        values[-1] = np.nan  # written as the fill value, or NaN
    lat = np.linspace(-10, 10, 3) + index * 0.5
    if spec["coord_fill"] and index:
        lat[0] = -999.0
    ds = xr.Dataset(
        {"v": (("time", "lat", "lon"), values)},
        coords={"time": np.arange(n) + index * n, "lat": lat, "lon": np.arange(4.0)},
        attrs={"title": f"file {index}", "number": index},
    )
    ds["v"].attrs["long_name"] = f"v of file {index}"  # per file, on a virtual variable
    if spec["scalar"]:
        ds["height"] = ((), 2.0 + index)
    ds["time"].attrs["units"] = (
        "days since 2000-01-01" if spec["same_units"] else f"days since 20{index:02d}-01-01"
    )
    enc: dict[str, Any] = {"dtype": dtype, "zlib": spec["zlib"] and not spec["contiguous"]}
    if not spec["contiguous"]:
        enc |= {
            "chunksizes": (1, 3, 2),
            "shuffle": spec["shuffle"],
            "fletcher32": spec["fletcher32"],
        }
    else:
        enc |= {"contiguous": True, "shuffle": False}
    if spec["fill"] == "none":
        enc["_FillValue"] = None
    elif spec["fill"] == "value":
        enc["_FillValue"] = dtype.type(-99)
    encoding = {"v": enc}
    if spec["coord_fill"]:
        encoding["lat"] = {"_FillValue": -999.0}
    ds.to_netcdf(path, engine="netcdf4", group=spec["group"], encoding=encoding, mode="w")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_layouts())
def test_generated_files_scan_identically_both_ways(tmp_path: Path, spec: dict[str, Any]) -> None:
    first, second = tmp_path / "a.nc", tmp_path / "b.nc"
    _write(first, spec, 0)
    _write(second, spec, 1)
    options = ScanOptions(format="netcdf4", group=spec["group"])
    kind, ds = _fast_after(first, second, options)
    if kind == "hit":
        slow = _slow(second, options)
        assert slow is not None
        assert hdf5_index.same_dataset(ds, slow)
        # The references point at the second file.
        for var in ds.variables.values():
            if hasattr(var.data, "manifest"):
                paths = set(np.unique(var.data.manifest._paths)) - {""}
                assert paths <= {f"file://{second}"}
    # A layout that differs only in values (time units included) always hits unless a loaded
    # coordinate must be decoded (a fill value in lat).
    if not spec["coord_fill"]:
        assert kind == "hit", spec


@pytest.mark.parametrize("units", ["days", "days since 2001-01-01", "K"])
def test_units_that_change_between_files_scan_identically(tmp_path: Path, units: str) -> None:
    """Time units may differ per file (read per file); other units are part of the layout:
    xarray may decode a variable whose units are a duration ("days") as timedeltas."""
    paths = []
    for i, u in enumerate(["days since 2000-01-01", units]):
        ds = xr.Dataset(
            {"v": (("time",), np.arange(3.0) + i), "w": (("time",), np.arange(3.0))},
            coords={"time": np.arange(3) + 3 * i},
        )
        ds["time"].attrs["units"] = u
        ds["w"].attrs["units"] = u
        paths.append(tmp_path / f"{i}.nc")
        ds.to_netcdf(paths[-1], engine="netcdf4")
    options = ScanOptions(format="netcdf4")
    kind, fast = _fast_after(paths[0], paths[1], options)
    assert kind == ("hit" if " since " in units else "miss")
    if kind == "hit":
        slow = _slow(paths[1], options)
        assert slow is not None
        assert hdf5_index.same_dataset(fast, slow)


def test_changing_a_scanned_dataset_in_place_leaves_the_next_scans_alone(tmp_path: Path) -> None:
    """A preprocess hook may change attributes and encodings in place: the template the next
    files are rebuilt from must not see it."""
    paths = write_series(tmp_path, 4)
    reader = netcdf4.NetCDF4Reader()
    options = ScanOptions(format="netcdf4")
    for path in paths[:3]:
        (opened,) = reader.scan_virtual(SourceFile(f"file://{path}", 0, "0"), options)
        ds = opened.dataset
        ds["lat"].attrs["changed"] = "yes"
        ds["lat"].encoding["preferred_chunks"]["lat"] = 1
        ds["tas"].attrs["changed"] = "yes"
        ds.attrs["changed"] = "yes"
    (opened,) = reader.scan_virtual(SourceFile(f"file://{paths[3]}", 0, "0"), options)
    slow = netcdf4.scan_parsed(f"file://{paths[3]}", options)
    assert hdf5_index.same_dataset(opened.dataset, slow)
