"""The generated uneven series (tests/uneven_series.py) are what they claim to be."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from tests.uneven_series import (
    Layout,
    file_lengths,
    values,
    write_forecast_series,
    write_monthly_daily,
    write_yearly_daily,
)


def test_yearly_files_span_the_leap_year(tmp_path: Path) -> None:
    paths = write_yearly_daily(tmp_path)
    assert file_lengths(paths) == [365, 366, 365]
    with netCDF4.Dataset(paths[1]) as nc:
        assert nc["tas"].chunking() == "contiguous"
    ds = xr.open_mfdataset(paths, combine="nested", concat_dim="time")
    assert str(ds.time.values[365 + 59])[:10] == "2020-02-29"
    days = (ds.time.values - np.datetime64("2000-01-01")) / np.timedelta64(1, "D")
    np.testing.assert_array_equal(ds.tas.values, values(days, 2, 3))


def test_monthly_and_forecast_lengths(tmp_path: Path) -> None:
    assert file_lengths(write_monthly_daily(tmp_path / "m")) == [31, 28, 31, 30]
    assert file_lengths(write_monthly_daily(tmp_path / "l", 2020, (2,))) == [29]
    assert file_lengths(write_forecast_series(tmp_path / "f")) == [6, 12, 3, 9]


def test_chunked_layout_has_a_partial_last_chunk(tmp_path: Path) -> None:
    paths = write_yearly_daily(tmp_path, (2020,), layout=Layout(chunk=100, zlib=True))
    with netCDF4.Dataset(paths[0]) as nc:
        assert nc["tas"].chunking() == [100, 2, 3]
        assert nc["tas"].filters()["zlib"]
        assert len(nc.dimensions["time"]) % 100 == 66


def test_bad_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be chunked"):
        Layout(fmt="NETCDF3_CLASSIC", chunk=10)
    with pytest.raises(ValueError, match="zlib needs"):
        Layout(zlib=True)
