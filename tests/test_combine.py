"""Combining files: merge (variables in separate files), two combine dims, preprocess hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import icepipe
from icepipe.errors import ConfigError, SchemaMismatchError, SourceError
from tests.conftest import write_pipeline


def _field(var: str, t0: int, n: int, *, member: int | None = None, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    times = pd.date_range("2020-01-01", periods=t0 + n, freq="D")[t0:]
    dims: tuple[str, ...] = ("time", "lat")
    shape: tuple[int, ...] = (n, 3)
    coords: dict[str, Any] = {"time": times, "lat": np.array([-10.0, 0.0, 10.0])}
    if member is not None:
        dims, shape = ("member", *dims), (1, *shape)
        coords["member"] = [member]
    ds = xr.Dataset({var: (dims, rng.random(shape).astype("f4"))}, coords=coords)
    ds.attrs["title"] = "combine test"
    return ds


def _save(ds: xr.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = {"time": {"units": "days since 2000-01-01", "dtype": "i8"}}
    enc.update({v: {"chunksizes": ds[v].shape, "zlib": True} for v in ds.data_vars})
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_merge_variables_from_separate_files(tmp_path: Path, client: Any, mode: str) -> None:
    parts = []
    for i in range(3):
        for j, var in enumerate(("tas", "pr")):
            ds = _field(var, 4 * i, 4, seed=10 * i + j)
            _save(ds, tmp_path / "src" / f"{var}_{i}.nc")
            parts.append(ds)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    spec.write_text(
        spec.read_text().replace("  concat_dim: time\n", "  concat_dim: time\n  merge: true\n")
    )
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert len(result.files_new) == 6
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    expected = xr.combine_by_coords(parts, combine_attrs="override")
    xr.testing.assert_equal(stored, expected)
    assert stored.sizes["time"] == 12 and set(stored.data_vars) == {"tas", "pr"}

    # The next period arrives: both of its files are appended as one step.
    for j, var in enumerate(("tas", "pr")):
        ds = _field(var, 12, 4, seed=99 + j)
        _save(ds, tmp_path / "src" / f"{var}_3.nc")
        parts.append(ds)
    again = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert len(again.files_new) == 2
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, xr.combine_by_coords(parts, combine_attrs="override"))


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_two_combine_dims_time_and_member(tmp_path: Path, client: Any, mode: str) -> None:
    parts = []
    for i in range(2):
        for m in (0, 1, 2):
            ds = _field("tas", 4 * i, 4, member=m, seed=7 * i + m)
            _save(ds, tmp_path / "src" / f"m{m}_t{i}.nc")
            parts.append(ds)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    spec.write_text(
        spec.read_text().replace("  concat_dim: time\n", "  concat_dims: [time, member]\n")
    )
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert len(result.files_new) == 6
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, xr.combine_by_coords(parts, combine_attrs="override"))
    assert dict(stored["tas"].sizes) == {"member": 3, "time": 8, "lat": 3}


def test_preprocess_hook_runs_on_workers(tmp_path: Path, client: Any) -> None:
    for i in range(2):
        _save(_field("tas", 4 * i, 4, seed=i), tmp_path / "src" / f"f{i}.nc")
    (tmp_path / "fixes.py").write_text(
        "def to_celsius(ds):\n"
        "    ds = ds.rename({'tas': 'temperature'})\n"
        "    ds['temperature'].attrs['note'] = 'renamed by preprocess'\n"
        "    return ds\n"
    )
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    spec.write_text(
        spec.read_text().replace(
            "  concat_dim: time\n", "  concat_dim: time\n  preprocess: fixes:to_celsius\n"
        )
    )
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g")
    assert "temperature" in stored and "tas" not in stored
    assert stored["temperature"].attrs["note"] == "renamed by preprocess"


def test_preprocess_errors(tmp_path: Path, client: Any) -> None:
    _save(_field("tas", 0, 4), tmp_path / "src" / "f0.nc")
    (tmp_path / "broken.py").write_text("def hook(ds):\n    raise RuntimeError('boom')\n")
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    text = spec.read_text()
    spec.write_text(
        text.replace("  concat_dim: time\n", "  concat_dim: time\n  preprocess: broken:hook\n")
    )
    with pytest.raises(
        SourceError, match=r"f0\.nc: preprocess hook 'broken:hook' raised RuntimeError"
    ):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    spec.write_text(
        text.replace("  concat_dim: time\n", "  concat_dim: time\n  preprocess: nope:hook\n")
    )
    with pytest.raises(ConfigError, match="cannot import module 'nope'"):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    spec.write_text(
        text.replace("  concat_dim: time\n", "  concat_dim: time\n  preprocess: no-colon\n")
    )
    with pytest.raises(ConfigError, match="module:function"):
        icepipe.load_pipeline(spec)


# --- time encodings that drift between files ----------------------------------------------


def _series_file(
    path: Path, t0: str, n: int, *, units: str, dtype: str, bounds: bool
) -> xr.Dataset:
    times = pd.date_range(t0, periods=n, freq="D")
    ds = xr.Dataset(
        {"tas": (("time", "lat"), np.arange(n * 3, dtype="f4").reshape(n, 3))},
        coords={"time": times, "lat": np.array([-10.0, 0.0, 10.0])},
    )
    enc: dict[str, Any] = {"time": {"units": units, "dtype": dtype}}
    if bounds:
        ds["time_bnds"] = (("time", "nb"), np.stack([times, times + pd.Timedelta("1D")], axis=1))
        ds["time"].attrs["bounds"] = "time_bnds"
        enc["time_bnds"] = {"units": units, "dtype": dtype}
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)
    return ds


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_time_units_and_dtype_drift_is_normalised(tmp_path: Path, client: Any, mode: str) -> None:
    _series_file(
        tmp_path / "src" / "a.nc",
        "2020-01-01",
        4,
        units="days since 2000-01-01",
        dtype="i8",
        bounds=False,
    )
    _series_file(
        tmp_path / "src" / "b.nc",
        "2020-01-05",
        4,
        units="hours since 1990-01-01",
        dtype="i4",
        bounds=False,
    )
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    assert stored["time"].encoding["units"] == "days since 2000-01-01"
    expected = pd.date_range("2020-01-01", periods=8, freq="D")
    np.testing.assert_array_equal(stored["time"].values, expected.values)
    # A third file in minutes is appended into the stored encoding too.
    _series_file(
        tmp_path / "src" / "c.nc",
        "2020-01-09",
        4,
        units="minutes since 2020-01-01",
        dtype="i8",
        bounds=False,
    )
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    np.testing.assert_array_equal(
        stored["time"].values, pd.date_range("2020-01-01", periods=12, freq="D").values
    )


def test_time_drift_that_is_not_exact_is_refused(tmp_path: Path, client: Any) -> None:
    _series_file(
        tmp_path / "src" / "a.nc",
        "2020-01-01",
        4,
        units="days since 2000-01-01",
        dtype="i8",
        bounds=False,
    )
    # 12:00 steps cannot be stored as whole days.
    ds = _series_file(
        tmp_path / "tmp" / "b.nc",
        "2020-01-05",
        4,
        units="hours since 2000-01-01",
        dtype="i8",
        bounds=False,
    )
    ds = ds.assign_coords(time=ds["time"] + pd.Timedelta("12h"))
    ds.to_netcdf(
        tmp_path / "src" / "b.nc",
        encoding={"time": {"units": "hours since 2000-01-01", "dtype": "i8"}},
    )
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    with pytest.raises(
        SchemaMismatchError, match=r"b\.nc: 'time' values .* cannot be stored exactly"
    ):
        icepipe.run(icepipe.load_pipeline(spec), client=client)


def test_time_bounds_in_other_units_are_converted_virtual_and_native(
    tmp_path: Path, client: Any
) -> None:
    _series_file(
        tmp_path / "src" / "a.nc",
        "2020-01-01",
        4,
        units="days since 2000-01-01",
        dtype="i8",
        bounds=True,
    )
    _series_file(
        tmp_path / "src" / "b.nc",
        "2020-01-05",
        4,
        units="hours since 2000-01-01",
        dtype="i8",
        bounds=True,
    )
    # The bounds of the time coordinate are read by virtual scans too (a few numbers per
    # step), so both modes convert them with their coordinate.
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    native = write_pipeline(
        tmp_path, name="nat", urls="src/*.nc", repo="repo2", extra="mode: native\n"
    )
    icepipe.run(icepipe.load_pipeline(native), client=client)
    virtual = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    stored = icepipe.open_dataset(str(tmp_path / "repo2"), group="g").load()
    ref = xr.open_mfdataset(
        sorted((tmp_path / "src").glob("*.nc")),
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
    ).load()
    np.testing.assert_array_equal(stored["time_bnds"].values, ref["time_bnds"].values)
    np.testing.assert_array_equal(virtual["time_bnds"].values, ref["time_bnds"].values)


def test_calendar_drift_is_refused(tmp_path: Path, client: Any) -> None:
    _series_file(
        tmp_path / "src" / "a.nc",
        "2020-01-01",
        4,
        units="days since 2000-01-01",
        dtype="i8",
        bounds=False,
    )
    b = tmp_path / "src" / "b.nc"
    xr.Dataset(
        {"tas": (("time", "lat"), np.zeros((2, 3), "f4"))},
        coords={
            "time": (
                "time",
                np.array([7309, 7310]),
                {"units": "days since 2000-01-01", "calendar": "noleap"},
            ),
            "lat": np.array([-10.0, 0.0, 10.0]),
        },
    ).to_netcdf(b)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    with pytest.raises(SchemaMismatchError, match="different calendars"):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
