"""CF encoding fidelity: what icepipe stores decodes exactly as ``xarray.open_mfdataset``
decodes the same files, whether they arrive in one run or night after night.

Each case is a generated series (``tests/cf_series.py``) with one CF edge case real archives
have; ingested in several runs, in virtual and native mode, and compared with
``open_mfdataset`` (values, attributes, and the CF encoding: ``_FillValue``,
``missing_value``, packing, time units and calendar). Cases that cannot be stored faithfully
are refused, with a message naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

import icepipe
from icepipe import repository
from icepipe.errors import IcepipeError, SchemaMismatchError, SourceError
from tests.cf_series import FileSpec, specs, split_runs, write_cf_series
from tests.conftest import S3Server
from tests.ingest_checks import sources

MODES = ["virtual", "native"]
#: The CF encoding that decides how stored values decode.
ENCODING_KEYS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")


def ingest(
    folder: Path,
    runs: Sequence[Sequence[Path]],
    *,
    client: Any,
    mode: str,
    name: str = "cf",
    source: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Run one pipeline once per entry of ``runs`` (the files listed that night); return what
    the repository holds. ``source``: more keys of the pipeline's ``source`` section."""
    doc: dict[str, Any] = {"name": name, "mode": mode, "target": {"repo": f"repo-{name}"}}
    if mode == "native":
        doc["chunks"] = {"time": 12}
    for files in runs:
        doc["source"] = {"urls": [str(f) for f in files], "concat_dim": "time", **(source or {})}
        spec = folder / f"{name}.yaml"
        spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    return icepipe.open_dataset(str(folder / f"repo-{name}")).load()


def assert_like_mfdataset(stored: xr.Dataset, expected: xr.Dataset) -> None:
    """Same decoded values and attributes, and the same CF encoding, variable by variable."""
    xr.testing.assert_identical(stored, expected)
    for name, var in expected.variables.items():
        want = {k: var.encoding[k] for k in ENCODING_KEYS if k in var.encoding}
        got = {k: stored[name].encoding[k] for k in ENCODING_KEYS if k in stored[name].encoding}
        assert got.keys() == want.keys(), (name, got, want)
        for k, v in want.items():
            np.testing.assert_equal(np.asarray(got[k]), np.asarray(v), err_msg=f"{name}.{k}")
        if var.dtype.kind in "OUT":
            # Variable-length strings: object, StringDType or a fixed width, as engines like.
            assert str(stored[name].dtype.kind) in "OUT", name
        elif var.encoding["dtype"] == np.dtype("S1") and var.dtype != np.dtype("S1"):
            # netCDF char arrays: native ingests store the joined strings (documented).
            assert stored[name].encoding["dtype"] in (np.dtype("S1"), var.dtype), name
        else:
            assert stored[name].encoding["dtype"] == var.encoding["dtype"], name


# ----------------------------------------------------------------------------------------------
# The CMIP6 case of the issue: time_bnds without units, appended night after night
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cmip6_series_appends_night_after_night(tmp_path: Path, client: Any, mode: str) -> None:
    files = write_cf_series(tmp_path / "src", 4)
    # Three nights: 2 files, then 1 more, then the last; and the same files in one run.
    nightly = ingest(tmp_path, split_runs(files, [2, 3]), client=client, mode=mode)
    once = ingest(tmp_path, [files], client=client, mode=mode, name="once")
    expected = sources(files)
    assert_like_mfdataset(nightly, expected)
    assert_like_mfdataset(once, expected)
    # Bounds are stored as the files have them: without units, decoded through time's.
    assert "units" not in nightly.time_bnds.attrs
    assert nightly.time_bnds.dtype.kind == "M"


def _old_layout(folder: Path, files: Sequence[Path], mode: str) -> Path:
    """A repository as icepipe 0.x (before bounds were compared in their parent's encoding)
    stored a first ingest of ``files``, built here without icepipe's writer: bounds without
    units (virtual: as references), coordinates with a NaN ``_FillValue`` the files lack,
    native data without ``missing_value``; the ledger in the commit metadata."""
    from virtualizarr.parsers import HDFParser

    from icepipe.sources.listing import list_sources
    from icepipe.sources.stores import registry_for

    listed = list_sources([f"file://{f}" for f in files], is_glob=False)
    path = folder / "repo-cf"
    repo = repository.open_repo(
        str(path), create=True, containers=repository.container_prefixes(f.url for f in listed)
    )
    session = repo.writable_session("main")
    if mode == "virtual":
        parts = [
            HDFParser()(url=f.url, registry=registry_for(f.url))
            .to_virtual_dataset(decode_times=False)
            .load()
            for f in listed
        ]
        combined = xr.concat(
            parts,
            dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            combine_attrs="override",
            join="override",
        )
        combined.vz.to_icechunk(session.store)
        assert "ManifestArray" in type(parts[0].time_bnds.data).__name__
    else:
        ds = sources(files, decode_times=False)
        for var in ds.variables.values():
            var.encoding = {k: v for k, v in var.encoding.items() if k != "missing_value"}
            var.attrs.pop("missing_value", None)
        encoding = {str(n): {"chunks": v.shape} for n, v in ds.variables.items()}
        ds.to_zarr(session.store, zarr_format=3, consolidated=False, encoding=encoding)
    length = 12
    records = [
        {**f.identity(), "start": i * length, "length": length} for i, f in enumerate(listed)
    ]
    session.commit(
        "first ingest by an older icepipe",
        metadata={repository.METADATA_KEY: {"group": "", "files": records, "mode": mode}},
    )
    return path


@pytest.mark.parametrize("mode", MODES)
def test_append_into_repository_written_before_the_fix(
    tmp_path: Path, client: Any, mode: str
) -> None:
    files = write_cf_series(tmp_path / "src", 4)
    path = _old_layout(tmp_path, files[:2], mode)
    g = zarr.open_group(repository.open_repo(str(path)).readonly_session("main").store, mode="r")
    assert "units" not in g["time_bnds"].attrs  # what made every later append fail
    stored = ingest(tmp_path, [files], client=client, mode=mode)
    expected = sources(files)
    # The same decoded values and attributes; the bounds still inherit time's units.
    xr.testing.assert_identical(stored, expected)
    g = zarr.open_group(repository.open_repo(str(path)).readonly_session("main").store, mode="r")
    assert "units" not in g["time_bnds"].attrs
    assert g["time"].attrs["units"] == "days since 1850-01-01 00:00:00"


# ----------------------------------------------------------------------------------------------
# CF edge cases no real sample file has, generated
# ----------------------------------------------------------------------------------------------

EDGE_CASES = {
    # Bounds with units of their own, 360-day calendar; a scalar coordinate and a static field.
    "360_day-bounds-with-units": FileSpec(
        calendar="360_day", bounds_units=True, extra={"height": "scalar", "orog": "static"}
    ),
    # Climatology bounds, noleap; _FillValue without missing_value.
    "noleap-climatology": FileSpec(calendar="noleap", bounds="climatology", missing_value=None),
    # Calendar given only on the coordinate, bounds with units; missing_value only.
    "calendar-only-on-coordinate": FileSpec(
        calendar="noleap", bounds_units=True, fill_value=None, missing_value=-999.0
    ),
    # Bounds repeating units and calendar; no calendar attribute at all on time.
    "standard-without-calendar": FileSpec(calendar=None, bounds_units=True),
    # A char array along time.
    "char-variable": FileSpec(extra={"label": "char"}),
    # A variable-length string variable along time.
    "string-variable": FileSpec(extra={"label": "string"}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_cf_edge_case_appends_like_open_mfdataset(
    tmp_path: Path, client: Any, case: str, mode: str
) -> None:
    files = write_cf_series(tmp_path / "src", 3, spec=EDGE_CASES[case], months=4)
    stored = ingest(tmp_path, split_runs(files, [2]), client=client, mode=mode)
    assert_like_mfdataset(stored, sources(files))


def raw(path: Path) -> xr.Dataset:
    """A repository's root group undecoded (raw stored values, CF attributes as attributes)."""
    session = repository.open_repo(str(path)).readonly_session("main")
    return xr.open_zarr(session.store, consolidated=False, zarr_format=3, decode_cf=False).load()


@pytest.mark.parametrize("mode", MODES)
def test_packed_int16_keeps_raw_values_and_packing(tmp_path: Path, client: Any, mode: str) -> None:
    spec = FileSpec(packing=(0.01, 250.0), fill_value=-32767, missing_value=-32767)
    files = write_cf_series(tmp_path / "src", 3, spec=spec, months=4)
    stored = ingest(tmp_path, split_runs(files, [2]), client=client, mode=mode)
    expected = sources(files)
    # The packed integers and the packing attributes are stored as the files hold them.
    with xr.open_mfdataset(
        files, combine="nested", concat_dim="time", data_vars="minimal", decode_cf=False
    ) as opened:
        undecoded = opened.load()
    stored_raw = raw(tmp_path / "repo-cf")
    np.testing.assert_array_equal(stored_raw.tas.values, undecoded.tas.values)
    assert stored_raw.tas.dtype == np.int16
    for key in ("scale_factor", "add_offset", "_FillValue", "missing_value"):
        assert float(stored_raw.tas.attrs[key]) == float(undecoded.tas.attrs[key]), key
    # Decoded: the same values, but as float64: Zarr attributes are JSON and do not say that
    # scale_factor was a float32, which is what makes netCDF decode to float32 (documented).
    assert stored.tas.dtype == np.float64 and expected.tas.dtype == np.float32
    np.testing.assert_allclose(stored.tas.values, expected.tas.values, rtol=1e-6)
    xr.testing.assert_identical(stored.drop_vars("tas"), expected.drop_vars("tas"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["char", "char-fill"])
def test_netcdf3_char_array(tmp_path: Path, client: Any, mode: str, kind: str) -> None:
    spec = FileSpec(extra={"label": kind}, missing_value=None)
    files = write_cf_series(tmp_path / "src", 3, spec=spec, months=4, fmt="NETCDF3_CLASSIC")
    runs = split_runs(files, [2])
    if kind == "char-fill" and mode == "virtual":
        # VirtualiZarr's netCDF3 parser cannot describe a char array with a _FillValue.
        with pytest.raises(SourceError, match=f"{files[0].name}.*use mode: native"):
            ingest(tmp_path, runs, client=client, mode=mode)
        assert not (tmp_path / "repo-cf").exists()
        return
    stored = ingest(tmp_path, runs, client=client, mode=mode)
    expected = sources(files)
    if kind == "char-fill":
        # xarray masks the fill character, leaving object strings; stored as |S4 strings.
        assert expected.label.dtype == object and stored.label.dtype == np.dtype("S4")
        np.testing.assert_array_equal(stored.label.values, expected.label.values.astype("S4"))
        stored, expected = stored.drop_vars("label"), expected.drop_vars("label")
    assert_like_mfdataset(stored, expected)
    if "label" in stored:
        assert stored.label.values[0] == b"m00"


# ----------------------------------------------------------------------------------------------
# Encodings that drift between files
# ----------------------------------------------------------------------------------------------

DRIFTS = {
    # The epoch of the time units changes (bounds without units follow their coordinate).
    "epoch": specs(FileSpec(), FileSpec(units="days since 1851-01-01 00:00:00")),
    # int32 times in the first files, float64 in the next (same units).
    "int32-then-float64": specs(
        FileSpec(time_dtype="i4"), FileSpec(time_dtype="i4"), FileSpec(midpoints=False)
    ),
    # Climatology bounds without units, noleap, epoch changing: converted with their coordinate.
    "climatology-epoch": specs(
        FileSpec(calendar="noleap", bounds="climatology"),
        FileSpec(calendar="noleap", bounds="climatology", units="hours since 1851-01-01"),
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(DRIFTS))
def test_time_encoding_drift_is_converted_to_the_stored_one(
    tmp_path: Path, client: Any, case: str, mode: str
) -> None:
    files = write_cf_series(tmp_path / "src", 3, spec=DRIFTS[case], months=4)
    stored = ingest(tmp_path, split_runs(files, [1]), client=client, mode=mode)
    expected = sources(files)
    if case == "climatology-epoch":
        # xarray leaves climatology bounds undecoded, so open_mfdataset mixes two epochs;
        # icepipe converts them with their coordinate (CF): in the first file's units.
        first = xr.load_dataset(files[0], decode_times=False)
        later = xr.load_dataset(files[1], decode_times=False)
        np.testing.assert_array_equal(stored.climatology_bnds.values[:4], first.climatology_bnds)
        np.testing.assert_allclose(
            stored.climatology_bnds.values[4:8], later.climatology_bnds / 24 + 365
        )
        stored, expected = (
            stored.drop_vars("climatology_bnds"),
            expected.drop_vars("climatology_bnds"),
        )
    assert_like_mfdataset(stored, expected)


@pytest.mark.parametrize("mode", MODES)
def test_other_packing_in_a_later_file_is_refused(tmp_path: Path, client: Any, mode: str) -> None:
    first = FileSpec(packing=(0.01, 250.0), fill_value=-32767, missing_value=-32767)
    later = FileSpec(packing=(0.02, 250.0), fill_value=-32767, missing_value=-32767)
    files = write_cf_series(tmp_path / "src", 3, spec=specs(first, first, later), months=4)
    ingest(tmp_path, [files[:2]], client=client, mode=mode)
    with pytest.raises(SchemaMismatchError) as caught:
        ingest(tmp_path, [files], client=client, mode=mode)
    message = str(caught.value)
    assert files[2].name in message and "scale_factor" in message
    assert "source.drop_variables" in message
    # Nothing of that run was stored; the first two files still read back as before.
    stored = icepipe.open_dataset(str(tmp_path / "repo-cf")).load()
    assert stored.sizes["time"] == 8


@pytest.mark.parametrize("mode", MODES)
def test_other_fill_values_in_a_later_file(tmp_path: Path, client: Any, mode: str) -> None:
    later = FileSpec(fill_value=-999.0, missing_value=-999.0)
    files = write_cf_series(tmp_path / "src", 3, spec=specs(FileSpec(), later), months=4)
    runs = split_runs(files, [1])
    if mode == "virtual":
        # References keep the raw -999, which the stored _FillValue 1e20 would not mask.
        with pytest.raises(SchemaMismatchError) as caught:
            ingest(tmp_path, runs, client=client, mode=mode)
        assert files[1].name in str(caught.value) and "mode: native" in str(caught.value)
        return
    stored = ingest(tmp_path, runs, client=client, mode=mode)
    # Masked values of every file are re-encoded with the stored fill value: same decoded data.
    expected = sources(files)
    xr.testing.assert_identical(stored, expected)
    assert float(stored.tas.encoding["_FillValue"]) == np.float32(1e20)


@pytest.mark.parametrize("mode", MODES)
def test_variable_missing_from_some_files(tmp_path: Path, client: Any, mode: str) -> None:
    with_orog = FileSpec(extra={"orog": "static"})
    files = write_cf_series(tmp_path / "src", 3, spec=specs(FileSpec(), with_orog), months=4)
    with pytest.raises(SchemaMismatchError) as caught:
        ingest(tmp_path, [files], client=client, mode=mode)
    message = str(caught.value)
    assert "orog" in message and "source.drop_variables" in message
    assert files[1].name in message or files[2].name in message
    stored = ingest(
        tmp_path, [files], client=client, mode=mode, source={"drop_variables": ["orog"]}
    )
    assert "orog" not in stored.variables
    xr.testing.assert_identical(stored, sources(files).drop_vars("orog"))


# ----------------------------------------------------------------------------------------------
# netCDF4 groups: source.group picks one
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_source_group_picks_a_netcdf4_group(tmp_path: Path, client: Any, mode: str) -> None:
    files = write_cf_series(tmp_path / "src", 3, spec=FileSpec(group="atmos/monthly"), months=4)
    runs = split_runs(files, [2])
    stored = ingest(tmp_path, runs, client=client, mode=mode, source={"group": "atmos/monthly"})
    assert_like_mfdataset(stored, sources(files, group="atmos/monthly"))
    with pytest.raises(SourceError) as caught:
        ingest(tmp_path, [files], client=client, mode=mode, name="bad", source={"group": "ocean"})
    message = str(caught.value)
    assert files[0].name in message and "'ocean'" in message and "atmos/monthly" in message
    assert not (tmp_path / "repo-bad").exists()


# ----------------------------------------------------------------------------------------------
# The CMIP6 case with the files (and the repository) in S3
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cmip6_series_in_s3_appends_night_after_night(
    tmp_path: Path, s3: S3Server, s3_client: Any, mode: str
) -> None:
    files = write_cf_series(tmp_path / "src", 3, months=4)
    bucket = s3.bucket("cmip")
    doc: dict[str, Any] = {
        "name": "cmip",
        "mode": mode,
        "source": {
            "urls": f"s3://{bucket}/ta/*.nc",
            "concat_dim": "time",
            "storage": s3.options(),
        },
        "target": {"repo": f"s3://{s3.bucket('repo')}/cmip", **s3.options()},
    }
    spec = tmp_path / "cmip.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    pipeline = icepipe.load_pipeline(spec)
    for night in (files[:1], files[1:]):  # the next night brings two more
        s3.upload(night, bucket, "ta")
        assert icepipe.run(pipeline, client=s3_client).status == "committed"
    assert icepipe.run(pipeline, client=s3_client).status == "nothing-new"
    stored = icepipe.open_dataset(
        pipeline.target.repo,
        storage=pipeline.target.storage,
        source_storage=pipeline.source.storage,
    ).load()
    assert_like_mfdataset(stored, sources(files))


def test_failed_first_write_leaves_no_repository(tmp_path: Path, client: Any) -> None:
    import h5py

    files = write_cf_series(tmp_path / "src", 2, months=4)
    # A compressed chunk of the data overwritten: the header (and the scan) are fine, reading
    # the data on the workers fails.
    with h5py.File(files[1], "r") as f:
        chunk = f["tas"].id.get_chunk_info(1)
    with open(files[1], "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
    with pytest.raises(IcepipeError):
        ingest(tmp_path, [files], client=client, mode="native")
    assert not (tmp_path / "repo-cf").exists()


@pytest.mark.parametrize("mode", MODES)
def test_inexact_time_conversion_is_refused_naming_the_file(
    tmp_path: Path, client: Any, mode: str
) -> None:
    # int32 whole days first, then float64 mid-month times: not storable as int32 days.
    files = write_cf_series(
        tmp_path / "src", 2, spec=specs(FileSpec(time_dtype="i4"), FileSpec()), months=4
    )
    with pytest.raises(SchemaMismatchError) as caught:
        ingest(tmp_path, split_runs(files, [1]), client=client, mode=mode)
    message = str(caught.value)
    assert files[1].name in message and "int32" in message and "rewrite the file" in message
