"""A representative subset of the conformance matrix (``make conformance`` runs all of it).

Real series from the sample data and one generated CMIP6-style series: one run over all files
equals the same files ingested by several runs in arrival order, equals
``xarray.open_mfdataset``, in virtual and native mode, and re-running changes nothing; a series
icepipe cannot store is refused with a typed error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conformance import Series, check, discover


@pytest.fixture(scope="module")
def corpus(sample_data: Path) -> dict[str, Series]:
    if not (sample_data / "corpus-splits").is_dir():
        pytest.fail(f"the conformance corpus is missing under {sample_data}: run `make data`")
    return {f"{s.source}/{s.name}": s for s in discover(sample_data)}


def _equal(series: Series, mode: str, cuts: list[int], work: Path, client: Any,
           known: str = "") -> None:  # fmt: skip
    outcome = check(series, mode, cuts, work, client)
    if known and outcome.status != "equal" and known not in outcome.message:
        pytest.fail(f"not the known defect ({known!r}): {outcome.message}")
    assert outcome.status == "equal", outcome.message
    assert outcome.runs == [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_real_series_two_runs(corpus: dict[str, Series], mode: str, tmp_path: Path,
                              client: Any) -> None:  # fmt: skip
    """A CMIP5-style model run continued by a scenario (netCDF3, time_bnds with the time)."""
    _equal(corpus["libncarg-data/mod1 hist+rcp45"], mode, [1, 2], tmp_path, client)


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_real_file_split_at_random_points(corpus: dict[str, Series], tmp_path_factory: Any,
                                          client: Any, data: st.DataObject) -> None:  # fmt: skip
    """Ferret's monthly Navy winds (netCDF3, 132 months) split in 4 files, ingested by 2-4
    runs cut where Hypothesis says."""
    series = corpus["ferret-datasets/monthly_navy_winds.cdf / 4 parts"]
    mode = data.draw(st.sampled_from(["virtual", "native"]))
    cuts = sorted(data.draw(st.sets(st.integers(1, 3), min_size=1, max_size=3)))
    _equal(series, mode, [*cuts, 4], tmp_path_factory.mktemp("split"), client)


def test_refusal_names_the_file_and_the_fix(corpus: dict[str, Series], tmp_path: Path,
                                            client: Any) -> None:  # fmt: skip
    """NCL's seam.nc split in 4 parts: its time values are all the fill value, so the parts
    overlap; both modes refuse the series, naming the files, and store nothing."""
    series = corpus["libncarg-data/seam.nc / 4 parts"]
    for mode in ("virtual", "native"):
        (tmp_path / mode).mkdir()
        outcome = check(series, mode, [3, 4], tmp_path / mode, client)
        assert outcome.status == "refused", outcome.message
        assert outcome.message.startswith("SourceError: file://"), outcome.message
        assert "seam-p01.nc" in outcome.message and "overlap along 'time'" in outcome.message


@pytest.mark.parametrize(
    ("name", "cuts"),
    [
        # Daily velocity potential Dec 1950 - May 1951, netCDF3, one file per month.
        ("libncarg-data/chi200_ud_smooth.nc by month (31/31/28/31/30/31)", [2, 3, 6]),
        # Daily tasmax on a 360_day calendar, one file per year (30, 360 x 4, 330 days).
        ("cf-python/test_file2.nc by year (30/360/360/360/360/330)", [1, 4, 6]),
    ],
)
def test_real_daily_files_in_calendar_periods(corpus: dict[str, Series], name: str,
                                              cuts: list[int], tmp_path: Path,
                                              client: Any) -> None:  # fmt: skip
    """Real daily files cut at month or year boundaries (``make data``): one chunk per file
    along time, a rectilinear grid, stored virtually over several runs."""
    _equal(corpus[name], "virtual", cuts, tmp_path, client)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_parts_of_different_lengths(corpus: dict[str, Series], mode: str, tmp_path: Path,
                                    client: Any) -> None:  # fmt: skip
    """stars' sub.nc split in parts of different lengths: every part is one netCDF3 chunk of
    its own length, stored virtually on a rectilinear grid (refused before), or natively."""
    _equal(corpus["r-cran-stars/sub.nc / 4 parts"], mode, [1, 2, 4], tmp_path, client)


def test_grib_series(corpus: dict[str, Series], tmp_path: Path, client: Any) -> None:
    """ERA5 GRIB1 files, one per analysis time: 1 run vs 2, equal to cfgrib's cubes."""
    _equal(corpus["cfgrib/era5-series"], "virtual", [2, 4], tmp_path, client)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_real_nemo_bounds_across_runs(corpus: dict[str, Series], mode: str, tmp_path: Path,
                                      client: Any) -> None:  # fmt: skip
    """NEMO's time_centered_bounds has no units of its own (CF: those of time_centered): the
    issue's nightly-ingest failure on real data."""
    series = corpus["iris-sample-data/nemo"]
    _equal(series, mode, [1, 3], tmp_path, client)


@pytest.mark.parametrize(
    ("name", "mode", "cuts"),
    [
        # 'hour since 0000-01-01': xarray cannot decode year 0, its append failed.
        ("ferret-datasets/ocean_atlas_subset.nc / 4 parts", "native", [1, 2, 4]),
        # Zarr v2 stores: '.' chunk keys in the references, '/' in the stored arrays.
        ("iris-sample-data/nemo-zarr-v2", "virtual", [1, 3]),
    ],
)
def test_real_series_the_matrix_found_failing(corpus: dict[str, Series], name: str, mode: str,
                                             cuts: list[int], tmp_path: Path,
                                             client: Any) -> None:  # fmt: skip
    _equal(corpus[name], mode, cuts, tmp_path, client)


def write_cmip6_like(folder: Path, years: int = 4) -> list[Path]:
    """One netCDF4 file per year of monthly means, as CMIP6 publishes them: float64 ``time``
    in days since 1850-01-01 (noleap) with ``bounds: time_bnds``, and ``time_bnds`` without
    units or calendar of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(6)
    month = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype="f8")
    paths = []
    for y in range(years):
        edges = 365.0 * (165 + y) + np.concatenate([[0.0], np.cumsum(month)])
        bnds = np.stack([edges[:-1], edges[1:]], axis=1)
        ds = xr.Dataset(
            {
                "tas": (("time", "lat", "lon"), rng.random((12, 3, 4)).astype("f4") + 270),
                "time_bnds": (("time", "bnds"), bnds),
            },
            coords={
                "time": ("time", bnds.mean(axis=1)),
                "lat": ("lat", [-45.0, 0.0, 45.0]),
                "lon": ("lon", [0.0, 90.0, 180.0, 270.0]),
            },
            attrs={"mip_era": "CMIP6", "frequency": "mon", "tracking_id": f"hdl:{y}"},
        )
        ds["time"].attrs = {
            "units": "days since 1850-01-01",
            "calendar": "noleap",
            "bounds": "time_bnds",
            "standard_name": "time",
        }
        ds["tas"].attrs = {"units": "K", "standard_name": "air_temperature"}
        path = folder / f"tas_Amon_model_historical_r1i1p1f1_gn_{2015 + y}01-{2015 + y}12.nc"
        encoding = {
            "time": {"dtype": "f8", "_FillValue": None},
            "time_bnds": {"dtype": "f8", "_FillValue": None},
            "tas": {"zlib": True, "complevel": 1, "chunksizes": (1, 3, 4), "_FillValue": 1e20},
        }
        ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding,
                     unlimited_dims=["time"])  # fmt: skip
        paths.append(path)
    return paths


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_cmip6_style_series_split_across_runs(mode: str, tmp_path: Path, client: Any) -> None:
    files = write_cmip6_like(tmp_path / "src")
    series = Series("generated", "cmip6-like", tuple(files), "time", "generated")
    _equal(series, mode, [2, 4], tmp_path, client)


def test_cmip6_style_series_in_one_run(tmp_path: Path, client: Any) -> None:
    """The first night of the issue's report: one run over the files works."""
    files = write_cmip6_like(tmp_path / "src")
    series = Series("generated", "cmip6-like", tuple(files), "time", "generated")
    _equal(series, "virtual", [4], tmp_path, client)
