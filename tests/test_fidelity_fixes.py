"""Real-data fidelity defects found by the conformance matrix, each reproduced on a small file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import scipy.io
import xarray as xr

import icepipe
from tests.conftest import write_pipeline


def _masked_char_file(path: Path) -> Path:
    # The trait of scipy's example_3_maskedvals.nc: a |S1 variable along an ordinary dimension
    # (not a string dimension) with a _FillValue.
    path.parent.mkdir(parents=True, exist_ok=True)
    with scipy.io.netcdf_file(path, "w") as f:
        f.createDimension("time", 3)
        t = f.createVariable("time", "f8", ("time",))
        t[:] = [0.0, 1.0, 2.0]
        t.units = "days since 2000-01-01"
        c = f.createVariable("flag", "c", ("time",))
        c[:] = np.array([b"a", b"b", b"c"])
        c._FillValue = b"b"
    return path


def test_char_fill_value_is_refused_before_commit(tmp_path: Path, client: Any) -> None:
    _masked_char_file(tmp_path / "src" / "a.nc")
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    with pytest.raises(icepipe.SourceError, match=r"'flag'.*drop_variables: \[flag\]") as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert "a.nc" in str(info.value)
    # Nothing unreadable was committed (the repository is created with the first commit).
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    assert not icechunk.Repository.exists(storage) or (
        len(list(icechunk.Repository.open(storage).ancestry(branch="main"))) == 1
    )


def _time_series(folder: Path, parts: list[list[float]], attrs: dict[str, Any], **enc: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, values in enumerate(parts):
        ds = xr.Dataset(
            {"v": (("time", "x"), np.arange(len(values) * 2, dtype="f4").reshape(-1, 2) + i)},
            coords={"time": ("time", np.array(values), attrs)},
        )
        ds.to_netcdf(folder / f"p{i}.nc", format="NETCDF3_CLASSIC", encoding={"time": dict(enc)})


def _ingest_in_runs(tmp_path: Path, client: Any, mode: str, parts: int) -> xr.Dataset:
    src = tmp_path / "src"
    later = sorted(src.glob("*.nc"))[1:]
    for f in later:
        f.rename(f.with_suffix(".later"))
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    pipeline = icepipe.load_pipeline(spec)
    assert icepipe.run(pipeline, client=client).status == "committed"
    for f in later:
        f.with_suffix(".later").rename(f)
        assert icepipe.run(pipeline, client=client).status == "committed"
    from icepipe import repository

    # As tests/conformance.py reads undecodable times: icepipe's repository, decode_times off.
    store = (
        repository.open_repo(str(tmp_path / "repo"), create=False).readonly_session("main").store
    )
    return xr.open_zarr(store, group="g", consolidated=False, decode_times=False).load()


@pytest.mark.parametrize("mode", ["native", "virtual"])
def test_year_zero_time_units_append_across_runs(tmp_path: Path, client: Any, mode: str) -> None:
    # Ferret's climatologies: 'hour since 0000-01-01', which xarray cannot decode; its append
    # decoded the stored coordinate and failed ("unable to decode time units").
    attrs = {"units": "hour since 0000-01-01 00:00:00", "axis": "T"}
    _time_series(tmp_path / "src", [[366.0, 1096.5], [1827.0, 2557.5], [3288.0, 4018.5]], attrs)
    stored = _ingest_in_runs(tmp_path, client, mode, 3)
    np.testing.assert_array_equal(stored["time"].values, [366, 1096.5, 1827, 2557.5, 3288, 4018.5])
    assert stored["time"].attrs["units"] == attrs["units"]
    assert stored["v"].shape == (6, 2)


def test_int_time_with_fill_value_appends_across_runs(tmp_path: Path, client: Any) -> None:
    # hgt.nc / chi200_ud_smooth.nc: an int32 time with a _FillValue (read as float64) and
    # 'months since': the first run stored int32, every later file was refused as float64.
    attrs = {"units": "months since 1958-1-1 00:00:00"}
    _time_series(
        tmp_path / "src", [[0.0, 1.0], [13.0, 25.0]], attrs, dtype="int32", _FillValue=-999
    )
    stored = _ingest_in_runs(tmp_path, client, "native", 2)
    np.testing.assert_array_equal(stored["time"].values, [0, 1, 13, 25])
    assert stored["time"].encoding["dtype"] == np.dtype("int32")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_stores_append_virtually_across_runs(
    tmp_path: Path, client: Any, zarr_format: int
) -> None:
    # iris nemo as Zarr: the references kept the store's '.' chunk keys, the arrays the first
    # run created had '/': every later run was refused ("different chunk_key_encoding").
    src = tmp_path / "src"
    for i in range(2):
        ds = xr.Dataset(
            {
                "tos": (("time", "y"), np.arange(6, dtype="f4").reshape(2, 3) + i),
                "bounds_lat": (("y", "nv"), np.arange(6, dtype="f8").reshape(3, 2)),
            },
            coords={"time": ("time", [2.0 * i, 2.0 * i + 1], {"units": "days since 2015-01-01"})},
        )
        kwargs: dict[str, Any] = {"zarr_format": zarr_format, "consolidated": False}
        if zarr_format == 3:
            kwargs["encoding"] = {
                n: {"chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}}}
                for n in ("tos", "bounds_lat")
            }
        ds.to_zarr(src / f"p{i}.zarr", **kwargs)
    (src / "p1.zarr").rename(src / "p1.later")
    spec = write_pipeline(tmp_path, urls="src/*.zarr", extra="mode: virtual\n")
    pipeline = icepipe.load_pipeline(spec)
    assert icepipe.run(pipeline, client=client).status == "committed"
    (src / "p1.later").rename(src / "p1.zarr")
    assert icepipe.run(pipeline, client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    assert stored["tos"].shape == (4, 3)
    np.testing.assert_array_equal(stored["tos"].values[2:], np.arange(6).reshape(2, 3) + 1)


def test_char_array_on_a_shared_dimension_appends_natively(tmp_path: Path, client: Any) -> None:
    # libncarg's sao reports: 'CC' is |S1 along ('report', 'layers'), and 'layers' is also a
    # dimension of numeric variables, so xarray leaves it undecoded and the first run stored it
    # so; the scan of a later file saw it joined (|S4 along 'report') and refused the file.
    src = tmp_path / "src"
    src.mkdir()
    for i, n in enumerate((3, 2)):
        with scipy.io.netcdf_file(src / f"p{i}.nc", "w") as f:
            f.createDimension("report", None)
            f.createDimension("layers", 4)
            cc = f.createVariable("CC", "c", ("report", "layers"))
            cc[:] = np.array([list("ab c")] * n, dtype="S1")
            h = f.createVariable("height", "f4", ("report", "layers"))
            h[:] = np.arange(n * 4, dtype="f4").reshape(n, 4) + i
    (src / "p1.nc").rename(src / "p1.later")
    spec = write_pipeline(tmp_path, urls="src/*.nc", concat_dim="report", extra="mode: native\n")
    pipeline = icepipe.load_pipeline(spec)
    assert icepipe.run(pipeline, client=client).status == "committed"
    (src / "p1.later").rename(src / "p1.nc")
    assert icepipe.run(pipeline, client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    reference = xr.open_mfdataset(
        sorted(src.glob("*.nc")), combine="nested", concat_dim="report", decode_times=False
    ).load()
    np.testing.assert_array_equal(stored["CC"].values, reference["CC"].values)
    np.testing.assert_array_equal(stored["height"].values, reference["height"].values)


def test_nan_missing_value_is_stored_natively(tmp_path: Path, client: Any) -> None:
    # stars' test_stageiv_xyt.nc: float32 data with _FillValue and missing_value both NaN; the
    # NaN missing_value reached the Zarr metadata, which Icechunk refused as invalid JSON
    # (reported as a ConfigError, blaming the pipeline).
    src = tmp_path / "src"
    src.mkdir()
    data = np.array([[1.0, np.nan], [3.0, 4.0]], dtype="f4")
    ds = xr.Dataset(
        {"precip": (("time", "x"), data)},
        coords={"time": ("time", [0.0, 1.0], {"units": "hours since 2000-01-01"})},
    )
    encoding = {"precip": {"_FillValue": np.float32("nan"), "missing_value": np.float32("nan")}}
    ds.to_netcdf(src / "a.nc", format="NETCDF3_CLASSIC", encoding=encoding)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    np.testing.assert_array_equal(stored["precip"].values, data)
