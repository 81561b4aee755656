"""Generated series of files whose lengths along ``time`` differ (issue 13), for the cases the
real sample data lacks: daily data in yearly files across a leap year (365/366 steps), in
monthly files (28-31), forecast files with different numbers of hourly steps, and HDF5 files
chunked along time so that the last chunk of each file is partial (HDF5 stores it padded to
the full chunk length: a rectilinear Zarr grid cannot express such a chunk anywhere but at the
array's end, zarr-specs #394).

Written with netCDF4-python so that the storage layout is exactly as asked: ``contiguous``
variables (one HDF5 dataset extent per file, a single chunk along every dimension), or HDF5
chunks of ``chunk`` steps; netCDF3 files are always contiguous (no record dimension unless
``unlimited``). Values say where they belong: ``tas[t, y, x] = day + (y * nx + x) / 100`` with
``day`` the number of days (or hours, for forecasts) since the series' epoch, so a step stored
in the wrong place, or a padded value read as data, never compares equal.

Used by the tests of the rectilinear readers, writers and the benchmark; the other slices of
issue 13 may import it too (``from tests.uneven_series import write_yearly_daily``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import netCDF4
import numpy as np

__all__ = [
    "EPOCH",
    "Layout",
    "file_lengths",
    "monthly_periods",
    "write_daily_files",
    "write_forecast_series",
    "write_monthly_daily",
    "write_yearly_daily",
    "yearly_periods",
]

#: Time coordinates count from here (``days since 2000-01-01``); leap years 2000, 2004, ...
EPOCH = date(2000, 1, 1)


@dataclass(frozen=True)
class Layout:
    """How the files store their variables.

    ``fmt``: a netCDF4-python format (``NETCDF4``, ``NETCDF4_CLASSIC``, ``NETCDF3_CLASSIC``,
    ``NETCDF3_64BIT_OFFSET``). ``chunk``: HDF5 chunk length along time (``None``: contiguous;
    netCDF4 formats only; other dimensions are not cut). ``unlimited``: make time the record
    dimension (netCDF4 then always chunks; netCDF3 stores one record per step).
    ``zlib``: compress the data variable (needs ``chunk``).
    """

    fmt: str = "NETCDF4"
    chunk: int | None = None
    unlimited: bool = False
    zlib: bool = False

    def __post_init__(self) -> None:
        netcdf3 = self.fmt.startswith("NETCDF3")
        if netcdf3 and (self.chunk is not None or self.zlib):
            raise ValueError(f"{self.fmt} files cannot be chunked or compressed")
        if self.zlib and self.chunk is None:
            raise ValueError("zlib needs chunk=")
        if self.unlimited and not netcdf3 and self.chunk is None:
            raise ValueError("an unlimited netCDF4 dimension is always chunked: give chunk=")


def yearly_periods(years: Sequence[int]) -> list[tuple[date, date]]:
    """One (first day, day after the last) per calendar year."""
    return [(date(y, 1, 1), date(y + 1, 1, 1)) for y in years]


def monthly_periods(year: int, months: Sequence[int]) -> list[tuple[date, date]]:
    """One (first day, day after the last) per calendar month of ``year``."""
    out = []
    for m in months:
        end = date(year + 1, 1, 1) if m == 12 else date(year, m + 1, 1)
        out.append((date(year, m, 1), end))
    return out


def write_daily_files(
    folder: Path,
    periods: Sequence[tuple[date, date]],
    *,
    layout: Layout | None = None,
    name: str = "tas_day",
    ny: int = 2,
    nx: int = 3,
) -> list[Path]:
    """One file of daily ``tas(time, lat, lon)`` per period, ``<name>_<first>-<last>.nc``
    (dates as ``YYYYMMDD``). Return the paths, in time order."""
    layout = layout or Layout()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for first, end in periods:
        days = np.arange((first - EPOCH).days, (end - EPOCH).days, dtype="f8")
        last = end - timedelta(days=1)
        path = folder / f"{name}_{first:%Y%m%d}-{last:%Y%m%d}.nc"
        _write_file(path, days, "days since 2000-01-01 00:00:00", layout, ny, nx)
        paths.append(path)
    return paths


def write_yearly_daily(
    folder: Path,
    years: Sequence[int] = (2019, 2020, 2021),
    *,
    layout: Layout | None = None,
    ny: int = 2,
    nx: int = 3,
) -> list[Path]:
    """Daily data in one file per calendar year (the default spans the leap year 2020:
    365, 366 and 365 steps)."""
    return write_daily_files(folder, yearly_periods(years), layout=layout, ny=ny, nx=nx)


def write_monthly_daily(
    folder: Path,
    year: int = 2021,
    months: Sequence[int] = (1, 2, 3, 4),
    *,
    layout: Layout | None = None,
    ny: int = 2,
    nx: int = 3,
) -> list[Path]:
    """Daily data in one file per calendar month (the default: 31, 28, 31 and 30 steps; a
    leap ``year`` gives February 29 days)."""
    return write_daily_files(folder, monthly_periods(year, months), layout=layout, ny=ny, nx=nx)


def write_forecast_series(
    folder: Path,
    steps: Sequence[int] = (6, 12, 3, 9),
    *,
    start: datetime = datetime(2024, 2, 28, 0),
    layout: Layout | None = None,
    ny: int = 2,
    nx: int = 3,
) -> list[Path]:
    """Forecast files along valid time: file ``i`` holds ``steps[i]`` hourly steps starting
    where the previous one ended (``fc_<init YYYYMMDDHH>_<n>h.nc``, a ``forecast_reference_time``
    global attribute), so consecutive files tile the axis with different lengths."""
    layout = layout or Layout()
    folder.mkdir(parents=True, exist_ok=True)
    epoch = datetime(EPOCH.year, EPOCH.month, EPOCH.day)
    hour = int((start - epoch).total_seconds() // 3600)
    paths = []
    for n in steps:
        init = epoch + timedelta(hours=hour)
        path = folder / f"fc_{init:%Y%m%d%H}_{n:03d}h.nc"
        hours = np.arange(hour, hour + n, dtype="f8")
        _write_file(path, hours, "hours since 2000-01-01 00:00:00", layout, ny, nx)
        with netCDF4.Dataset(path, "a") as nc:
            nc.forecast_reference_time = f"{init:%Y-%m-%dT%H:%M:%SZ}"
        paths.append(path)
        hour += n
    return paths


def _write_file(
    path: Path, times: np.ndarray, units: str, layout: Layout, ny: int, nx: int
) -> None:
    n = len(times)
    with netCDF4.Dataset(path, "w", format=layout.fmt) as nc:
        nc.Conventions = "CF-1.8"
        nc.title = "icepipe test series of uneven file lengths (tests/uneven_series.py)"
        nc.createDimension("time", None if layout.unlimited else n)
        nc.createDimension("lat", ny)
        nc.createDimension("lon", nx)
        storage = _storage(layout, (n, ny, nx))
        t = nc.createVariable("time", "f8", ("time",), **_storage(layout, (n,)))
        t.units = units
        t.calendar = "standard"
        t.standard_name = "time"
        t.axis = "T"
        t[:] = times
        for axis, size, lo, hi, unit in (
            ("lat", ny, -45.0, 45.0, "degrees_north"),
            ("lon", nx, 0.0, 300.0, "degrees_east"),
        ):
            c = nc.createVariable(axis, "f8", (axis,))
            c.units = unit
            c[:] = np.linspace(lo, hi, size)
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), fill_value=1e20, **storage)
        v.units = "K"
        v.standard_name = "air_temperature"
        v[:] = values(times, ny, nx)


def _storage(layout: Layout, shape: tuple[int, ...]) -> dict[str, object]:
    """createVariable arguments for a variable of ``shape`` (time first)."""
    if layout.fmt.startswith("NETCDF3"):
        return {}
    if layout.chunk is None:
        return {"contiguous": True}
    chunks = (layout.chunk, *shape[1:])
    return {"chunksizes": chunks, "zlib": layout.zlib}


def values(times: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """The ``tas`` values stored for time coordinates ``times`` (see the module docstring)."""
    cells = (np.arange(ny * nx, dtype="f8") / 100).reshape(ny, nx)
    return (np.asarray(times, dtype="f8")[:, None, None] + cells).astype("f4")


def file_lengths(paths: Sequence[Path], dim: str = "time") -> list[int]:
    """The length of ``dim`` in each file."""
    out = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            out.append(len(nc.dimensions[dim]))
    return out
