"""netCDF3 scans through the header route (``formats/netcdf3_header.py`` under
``sources/quick.py``) give what VirtualiZarr's netCDF3 parser route gives, file by file and
through a run into a repository; every way a file may differ from its template either reuses
the template correctly or goes the usual way; bad headers are refused naming the file.

Each case scans a first file (the template), a second of the same layout, then a variant, and
compares each result with the parser route (``netcdf3.INDEXED_SCANS`` off): same schema, same
dataset (``hdf5_index.same_dataset``: variables, attributes with their types, encodings, loaded
values, chunk metadata and references).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import icepipe
from icepipe.errors import SourceError
from icepipe.sources import quick
from icepipe.sources.formats import netcdf3
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.formats.netcdf3_header import HeaderError, parse_header, read_header
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import ScannedFile, scan_file, scan_files
from icepipe.spec import pipeline_from_dict
from tests.sources.routes import assert_same_scan, local_source, route, usual_scan
from tests.sources.test_packed import _repo_content

OPTIONS = ScanOptions(format="netcdf3")


pytestmark = pytest.mark.usefixtures("fresh_templates")


def _write(
    path: Path, index: int, change: str = "", *, fmt: str = "NETCDF3_CLASSIC", records: int = 3
) -> Path:
    """A small netCDF3 file of a series: record variables ``time``, ``tas`` (float, fill value)
    and ``pr`` (packed shorts), fixed-size ``lat``, ``lon``, ``orog``, a char variable and
    global attributes of every type; ``change`` makes it differ in one respect."""
    import netCDF4

    n = records + (1 if change == "records" else 0)
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("time", None if change != "fixed time" else n)
        nc.createDimension("lat", 2)
        nc.createDimension("lon", 4 if change == "dim length" else 3)
        nc.createDimension("strlen", 4)
        nc.title = index if change == "title type" else f"file {index}"
        nc.institution = "icepipe tests"
        nc.version = np.int32(index)
        for code, dtype in enumerate(["i1", "i2", "i4", "f4", "f8"]):
            nc.setncattr(f"a{code}", np.arange(2, dtype=dtype))
        if fmt == "NETCDF3_64BIT_DATA":
            for code, dtype in enumerate(["u1", "u2", "u4", "i8", "u8"]):
                nc.setncattr(f"b{code}", np.arange(3, dtype=dtype))
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2001-01-01" if change == "time units" else "days since 2000-01-01"
        lat = nc.createVariable("lat", "f4", ("lat",))
        lat[:] = [-1.0, 1.0 + (0.5 if change == "coordinate" else 0.0)]
        nc.createVariable("lon", "f4", ("lon",))[:] = np.arange(len(nc.dimensions["lon"]))
        fill = -1.0 if change == "fill value" else -9.0
        tas = nc.createVariable("tas", "f4", ("time", "lat", "lon"), fill_value=fill)
        tas.units = "degC" if change == "units" else "degK"
        tas.long_name = f"temperature {index}" if change == "long name" else "temperature"
        # Its attributes are the same either way: only its type tells the files apart.
        pr = nc.createVariable(
            "pr", "i4" if change == "variable type" else "i2", ("time", "lat", "lon")
        )
        pr.scale_factor = np.float32(0.5 if change == "scale factor" else 0.25)
        pr.add_offset = np.float32(1.0)
        station = nc.createVariable("station", "S1", ("lat", "strlen"))
        station[:] = netCDF4.stringtochar(np.array([f"ab{index % 10}", "cd"], dtype="S4"))
        orog = nc.createVariable("orog", "f8", ("lat", "lon"))
        orog[:] = np.ones((2, len(nc.dimensions["lon"])))
        if change in ("extra variable", "extra coordinates"):
            extra = nc.createVariable("extra", "f4", ("time",))
            extra[:] = np.arange(n)
            if change == "extra coordinates":  # makes orog a coordinate, kept with tas
                extra.coordinates = "orog"
        time[:] = np.arange(n) + 10 * index
        shape = (n, 2, len(nc.dimensions["lon"]))
        tas[:] = np.arange(np.prod(shape)).reshape(shape) + index
        pr[:] = np.arange(np.prod(shape)).reshape(shape) * 0.25 + 1
    return path


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"])
def test_a_series_takes_the_template_and_equals_the_parser_route(tmp_path: Path, fmt: str) -> None:
    paths = [_write(tmp_path / f"{i}.nc", i, fmt=fmt) for i in range(3)]
    results = [scan_file(local_source(p), OPTIONS) for p in paths]
    assert [route(r) for r in results] == ["usual", "template", "template"]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, OPTIONS, netcdf3))
        pickle.loads(pickle.dumps(result))
    tas = results[2].dataset["tas"].data  # type: ignore[union-attr]
    assert tas.metadata.chunks == (1, 2, 3)  # one chunk per record
    header = read_header(str(paths[2]))
    offsets = tas.manifest._offsets.ravel()
    assert (np.diff(offsets) == header.recsize).all()  # records interleaved
    assert header.recsize == sum(v.vsize for v in header.variables if v.record)


# What each variant does after a first and a second file: "template" or "usual".
CASES = {
    "": "template",
    "records": "template",  # another record count along the concat dimension
    "time units": "template",  # read per file
    "long name": "template",
    "title type": "usual",
    "units": "usual",  # not time units: part of the key
    "scale factor": "usual",
    "fill value": "usual",
    "variable type": "usual",
    "dim length": "usual",
    "extra variable": "usual",
    "coordinate": "usual",
    "fixed time": "usual",
}


@pytest.mark.parametrize("change", list(CASES))
def test_a_file_that_differs_reuses_the_template_correctly_or_goes_the_usual_way(
    tmp_path: Path, change: str
) -> None:
    paths = [_write(tmp_path / "a.nc", 0), _write(tmp_path / "b.nc", 1)]
    paths.append(_write(tmp_path / "c.nc", 2, change))
    results = [scan_file(local_source(p), OPTIONS) for p in paths]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, OPTIONS, netcdf3))
    assert [route(r) for r in results] == ["usual", "template", CASES[change]], change


# A selection leaving out what differs: the files share the first one's template.
SELECTIONS = {
    "variables": ScanOptions(format="netcdf3", variables=("time", "tas", "pr")),
    "drop_variables": ScanOptions(format="netcdf3", drop_variables=("extra", "station")),
}
# What the third file does under each selection ("template" or "usual").
SELECTED_CASES = {
    "extra variable": "template",  # left out by both selections
    "extra coordinates": "usual",  # a left-out variable naming coordinates: its own key
    "long name": "template",
    "units": "usual",  # a kept variable's attribute
}


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize("change", list(SELECTED_CASES))
def test_the_layout_key_covers_only_what_the_selection_keeps(
    tmp_path: Path, selection: str, change: str
) -> None:
    options = SELECTIONS[selection]
    paths = [_write(tmp_path / "a.nc", 0), _write(tmp_path / "b.nc", 1)]
    paths.append(_write(tmp_path / "c.nc", 2, change))
    results = [scan_file(local_source(p), options) for p in paths]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf3))
    assert "extra" not in results[2].dataset.variables  # type: ignore[union-attr]
    assert [route(r) for r in results] == ["usual", "template", SELECTED_CASES[change]], change


def test_a_left_out_variable_of_the_first_file_does_not_hide_a_template(tmp_path: Path) -> None:
    """The first file has a variable the others lack, all of them left out: one template."""
    paths = [_write(tmp_path / "a.nc", 0, "extra variable")]
    paths += [_write(tmp_path / f"{i}.nc", i) for i in range(1, 3)]
    options = SELECTIONS["variables"]
    results = [scan_file(local_source(p), options) for p in paths]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf3))
    assert [route(r) for r in results] == ["usual", "template", "template"]


def _single_record_variable(path: Path, index: int, dtype: str) -> Path:
    """A file whose one record variable has 3 values of ``dtype`` per record: unpadded
    records (3 or 6 bytes) written back to back."""
    import netCDF4

    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        nc.createVariable("x", "f4", ("x",))[:] = [0.0, 1.0, 2.0]
        flag = nc.createVariable("flag", dtype, ("time", "x"))
        flag[:] = (np.arange(15).reshape(5, 3) + index) % 100
        nc.comment = f"file {index}"
    return path


@pytest.mark.parametrize("dtype", ["i1", "S1", "i2"])
def test_a_single_record_variable_has_unpadded_records(tmp_path: Path, dtype: str) -> None:
    if dtype == "S1":
        import netCDF4

        path = tmp_path / "chars.nc"
        with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
            nc.createDimension("time", None)
            nc.createDimension("x", 3)
            nc.createVariable("flag", "S1", ("time", "x"))[:] = netCDF4.stringtochar(
                np.array([b"abc", b"def"], dtype="S3")
            )
        paths = [path, path]
    else:
        paths = [_single_record_variable(tmp_path / f"{i}.nc", i, dtype) for i in range(2)]
    header = read_header(str(paths[0]))
    (var,) = [v for v in header.variables if v.record]
    assert header.recsize == var.nbytes < var.vsize or var.nbytes % 4 == 0
    results = [scan_file(local_source(p), OPTIONS) for p in paths]
    assert [route(r) for r in results] == ["usual", "template"]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, OPTIONS, netcdf3))
    values = xr.open_dataset(paths[-1], engine="netcdf4", decode_cf=False)["flag"].values
    offsets = results[-1].dataset["flag"].data.manifest._offsets.ravel()  # type: ignore[union-attr]
    raw = paths[-1].read_bytes()
    step = var.nbytes
    assert [raw[o : o + step] for o in offsets.tolist()] == [
        r.astype(var.dtype).tobytes() for r in values
    ]


def test_streaming_record_count_is_counted_from_the_file_size(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"{i}.nc", i) for i in range(3)]
    for path in paths[1:]:
        data = bytearray(path.read_bytes())
        data[4:8] = b"\xff\xff\xff\xff"  # numrecs never written
        path.write_bytes(bytes(data))
    header = read_header(str(paths[2]))
    assert header.streaming and header.numrecs == 3
    results = [scan_file(local_source(p), OPTIONS) for p in paths]
    assert [route(r) for r in results] == ["usual", "template", "template"]
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, OPTIONS, netcdf3))


def test_no_records_gives_what_the_parser_route_gives(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.nc", 0)
    empty = _write(tmp_path / "empty.nc", 2, records=0)
    assert read_header(str(empty)).numrecs == 0
    results = [scan_file(local_source(p), OPTIONS) for p in (first, empty)]
    assert [route(r) for r in results] == [
        "usual",
        "usual",
    ]  # no chunk to point at: the parser's way
    assert_same_scan(results[1], usual_scan(empty, OPTIONS, netcdf3))
    assert results[1].schema.dims["time"] == 0  # type: ignore[union-attr]


def test_a_truncated_file_of_a_known_layout_is_refused(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"{i}.nc", i) for i in range(2)]
    scan_file(local_source(paths[0]), OPTIONS)
    short = local_source(paths[1], paths[1].stat().st_size - 10)  # as if cut in the last record
    with pytest.raises(SourceError, match=r"1\.nc: is truncated"):
        scan_file(short, OPTIONS)


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_a_file_truncated_inside_a_left_out_variable_is_refused_on_both_routes(
    tmp_path: Path, selection: str
) -> None:
    """The usual route checks every reference before selecting: so does the template's. Here
    the left-out record variable ``extra`` comes last in each record: the cut leaves every
    kept variable whole."""
    options = SELECTIONS[selection]
    paths = [_write(tmp_path / f"{i}.nc", i, "extra variable") for i in range(3)]
    results = [scan_file(local_source(p), options) for p in paths[:2]]
    assert [route(r) for r in results] == ["usual", "template"]
    header = read_header(str(paths[2]))
    assert [v.name for v in header.variables if v.record][-1] == "extra"
    short = local_source(paths[2], paths[2].stat().st_size - 2)
    for indexed in (True, False):
        netcdf3.INDEXED_SCANS = indexed
        try:
            with pytest.raises(SourceError, match=r"2\.nc: is truncated"):
                scan_file(short, options)
        finally:
            netcdf3.INDEXED_SCANS = True


@pytest.mark.parametrize("where", ["magic", "version", "numrecs", "dim tag", "in attributes"])
def test_corrupt_or_truncated_headers_are_refused_naming_the_file(
    tmp_path: Path, where: str
) -> None:
    paths = [_write(tmp_path / f"{i}.nc", i) for i in range(2)]
    data = bytearray(paths[1].read_bytes())
    bad = tmp_path / "bad.nc"
    cut = {"magic": 2, "numrecs": 6, "in attributes": 120}
    if where in cut:
        bad.write_bytes(bytes(data[: cut[where]]))
    else:
        at = {"version": 3, "dim tag": 11}[where]
        data[at] = 0x63
        bad.write_bytes(bytes(data))
    with pytest.raises(HeaderError):
        read_header(str(bad))
    for indexed in (True, False):
        quick.forget()
        netcdf3.INDEXED_SCANS = indexed
        scan_file(local_source(paths[0]), OPTIONS)  # a template, for the header route
        with pytest.raises(SourceError, match=r"bad\.nc"):
            scan_file(local_source(bad), OPTIONS)


def test_every_prefix_of_a_header_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.nc", 0, fmt="NETCDF3_64BIT_DATA")
    data = path.read_bytes()
    header_end = min(v.begin for v in read_header(str(path)).variables)
    for k in range(header_end - 8):  # the last bytes may be padding before the data
        with pytest.raises(HeaderError):
            parse_header(data[:k], k)


def test_a_batch_packs_template_scans_into_columns(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"{i}.nc", i, records=3 + i % 2) for i in range(4)]
    batch = scan_files([local_source(p) for p in paths], OPTIONS)
    for path, result in zip(paths, batch, strict=True):
        assert isinstance(result, ScannedFile) and isinstance(result.content, PackedDataset)
        assert_same_scan(result, usual_scan(path, OPTIONS, netcdf3))


def test_real_station_series_equals_the_parser_route(tmp_path: Path) -> None:
    """The libncarg hourly station reports: one record per report, a record count per file."""
    folder = Path(__file__).resolve().parents[2] / "data" / "ncarg" / "cdf"
    paths = sorted(folder.glob("9503180[0-5]_sao.cdf"))
    if len(paths) < 6:
        pytest.skip("libncarg sample data not fetched")
    options = ScanOptions(format="netcdf3", concat_dim="report")
    results = [scan_file(local_source(p), options) for p in paths]
    assert [route(r) for r in results].count("template") >= 3
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf3))


def test_real_station_series_with_the_pipelines_selection_shares_one_template() -> None:
    """pipelines/sao-stations.yaml keeps the variables every hour reports: the synoptic hours'
    extra variables are left out, so every file after the first takes the one template."""
    folder = Path(__file__).resolve().parents[2] / "data" / "ncarg" / "cdf"
    paths = sorted(folder.glob("9503180[0-5]_sao.cdf"))
    if len(paths) < 6:
        pytest.skip("libncarg sample data not fetched")
    pipeline = icepipe.load_pipeline(Path(__file__).parents[2] / "pipelines" / "sao-stations.yaml")
    options = ScanOptions.from_source(pipeline.source, pipeline.mode)
    assert len({len(read_header(str(p)).variables) for p in paths}) > 1  # several layouts
    results = [scan_file(local_source(p), options) for p in paths]
    assert [route(r) for r in results] == ["usual"] + ["template"] * 5
    for path, result in zip(paths, results, strict=True):
        assert_same_scan(result, usual_scan(path, options, netcdf3))


def test_runs_store_what_the_parser_route_stores(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    paths = [_write(folder / f"{i:02d}.nc", i, records=2 + i % 3) for i in range(5)]
    stored = {}
    for indexed in (True, False):
        netcdf3.INDEXED_SCANS = indexed
        quick.forget()
        repo = tmp_path / f"repo-{indexed}"
        for upto in (3, 5):  # a run that creates, one that appends
            pipeline = pipeline_from_dict(
                {
                    "name": "nc3",
                    "source": {"urls": [str(p) for p in paths[:upto]], "concat_dim": "time"},
                    "target": {"repo": str(repo)},
                },
                base_dir=tmp_path,
            )
            assert icepipe.run(pipeline).status == "committed"
        stored[indexed] = _repo_content(repo, folder)
    xr.testing.assert_identical(stored[True][0], stored[False][0])
    assert stored[True][1] == stored[False][1]
    assert len(stored[True][1]["tas"]) == sum(2 + i % 3 for i in range(5))


_NAMES = st.text("abcdefgh_", min_size=1, max_size=6)
_ATTR = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=9),
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=3).map(
        lambda v: np.array(v, "i4")
    ),
    st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=3).map(
        lambda v: np.array(v, "f4")
    ),
    st.integers(-128, 127).map(np.int8),
    st.floats(allow_nan=False).map(np.float64),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]),
    records=st.integers(0, 3),
    dims=st.lists(st.integers(1, 3), max_size=2),
    variables=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["i1", "S1", "i2", "i4", "f4", "f8"])),
        max_size=4,
    ),
    attrs=st.dictionaries(_NAMES, _ATTR, max_size=4),
)
def test_headers_read_as_virtualizarr_reads_them(
    tmp_path: Path,
    fmt: str,
    records: int,
    dims: list[int],
    variables: list[tuple[bool, str]],
    attrs: dict[str, Any],
) -> None:
    import netCDF4
    from virtualizarr.parsers.netcdf3 import _parse_header

    path = tmp_path / "h.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("rec", None)
        names = [f"d{i}" for i in range(len(dims))]
        for name, n in zip(names, dims, strict=True):
            nc.createDimension(name, n)
        nc.setncatts(attrs)
        for k, (record, dtype) in enumerate(variables):
            var = nc.createVariable(f"v{k}", dtype, (("rec",) if record else ()) + tuple(names))
            var.setncatts(attrs)
            if record and records:
                var[:records] = np.zeros((records, *dims), dtype)
    with open(path, "rb") as f:
        theirs = _parse_header(f)
    mine = read_header(str(path))
    assert mine.numrecs == theirs.numrecs and mine.recsize == theirs.recsize
    assert {a.name: a.value for a in mine.attrs} == theirs.attributes
    for a, b in zip(mine.variables, theirs.variables, strict=True):
        assert (a.name, a.dims, a.dtype, a.vsize, a.begin) == (
            b.name,
            b.dimensions,
            b.dtype,
            b.vsize,
            b.begin,
        )
        assert {x.name: x.value for x in a.attrs} == b.attributes
