"""Generated CF series for the encoding-fidelity tests: the edge cases real archives have
(CMIP6 ``time_bnds`` without units, calendars, drifting time encodings, packing, fill values,
char variables, groups), written with netCDF4-python so that every attribute is exactly as
given (xarray's writer would add or normalise some)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cftime
import netCDF4
import numpy as np


@dataclass
class FileSpec:
    """How one file of a series is encoded; fields left ``None`` are absent from the file."""

    units: str = "days since 1850-01-01 00:00:00"
    calendar: str | None = "proleptic_gregorian"
    #: Calendar on the bounds variable too (CF allows it only on the coordinate).
    bounds_calendar: bool = False
    time_dtype: str = "f8"
    #: Times at mid-month (else at the start of each month, whole days).
    midpoints: bool = True
    #: ``bounds``: CF cell bounds; ``climatology``: climatology bounds; ``None``: none.
    bounds: str | None = "bounds"
    #: Units on the bounds variable (CMIP6 writes none: they inherit the coordinate's).
    bounds_units: bool = False
    #: Pack the data as int16 with this (scale_factor, add_offset), float32 attributes (give
    #: int16 fill values then).
    packing: tuple[float, float] | None = None
    fill_value: float | None = 1e20
    missing_value: float | None = 1e20
    #: Extra variables: name -> kind (``char`` a char array ``(time, nchar)``, ``char-fill``
    #: the same with a ``_FillValue`` (VirtualiZarr cannot parse that), ``string`` a
    #: vlen string ``(time,)``, ``scalar`` a scalar coordinate ``height``, ``static`` a field
    #: without time).
    extra: dict[str, str] = field(default_factory=dict)
    #: Put everything into this netCDF4 group (the root keeps only a global attribute).
    group: str | None = None


def write_cf_series(
    folder: Path,
    n_files: int,
    *,
    spec: FileSpec | Callable[[int], FileSpec] | None = None,
    months: int = 12,
    first_year: int = 1850,
    ny: int = 2,
    nx: int = 3,
    fmt: str = "NETCDF4",
) -> list[Path]:
    """One file per year of monthly means, CMIP6-like: ``tas(time, lat, lon)`` with
    ``time``, ``time_bnds``, ``lat``/``lat_bnds``, ``lon``/``lon_bnds``. Return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        s = spec(i) if callable(spec) else spec or FileSpec()
        year = first_year + i
        path = folder / f"tas_Amon_MODEL_historical_r1i1p1f1_gn_{year}01-{year}12.nc"
        with netCDF4.Dataset(path, "w", format=fmt) as nc:
            nc.Conventions = "CF-1.7 CMIP-6.2"
            where: Any = nc.createGroup(s.group) if s.group else nc
            _write_year(where, s, year, months, ny, nx, seed=i)
        paths.append(path)
    return paths


def _write_year(nc: Any, s: FileSpec, year: int, months: int, ny: int, nx: int, seed: int) -> None:
    calendar = s.calendar or "standard"
    nc.createDimension("time", None)
    nc.createDimension("bnds", 2)
    nc.createDimension("lat", ny)
    nc.createDimension("lon", nx)
    t = nc.createVariable("time", s.time_dtype, ("time",))
    t.units = s.units
    if s.calendar:
        t.calendar = s.calendar
    t.axis = "T"
    t.standard_name = "time"
    edges = np.array(
        [
            cftime.date2num(
                cftime.datetime(year + m // 12, m % 12 + 1, 1, calendar=calendar),
                s.units,
                calendar,
            )
            for m in range(months + 1)
        ]
    )
    if s.time_dtype.startswith("i") or not s.midpoints:
        t[:] = edges[:-1]
    else:
        t[:] = (edges[:-1] + edges[1:]) / 2
    if s.bounds:
        name = "time_bnds" if s.bounds == "bounds" else "climatology_bnds"
        t.setncattr(s.bounds, name)
        tb = nc.createVariable(name, s.time_dtype, ("time", "bnds"))
        if s.bounds_units:
            tb.units = s.units
        if s.bounds_calendar and s.calendar:
            tb.calendar = s.calendar
        tb[:] = np.stack([edges[:-1], edges[1:]], axis=1)
    for axis, n, lo, hi in (("lat", ny, -60.0, 60.0), ("lon", nx, 0.0, 270.0)):
        c = nc.createVariable(axis, "f8", (axis,))
        c.units = "degrees_north" if axis == "lat" else "degrees_east"
        c.bounds = f"{axis}_bnds"
        c[:] = np.linspace(lo, hi, n)
        b = nc.createVariable(f"{axis}_bnds", "f8", (axis, "bnds"))
        b[:] = np.stack([c[:] - 0.5, c[:] + 0.5], axis=1)
    rng = np.random.default_rng(seed)
    values = (rng.random((months, ny, nx)) * 30 + 250).astype("f4")
    if s.packing:
        scale, offset = s.packing
        dtype = "i2"
        raw = np.round((values - offset) / scale).astype("i2")
    else:
        dtype = "f4"
        raw = values
    fill = None
    if s.fill_value is not None:
        fill = np.array(s.fill_value).astype(dtype)
    v = nc.createVariable(
        "tas", dtype, ("time", "lat", "lon"), fill_value=fill, zlib=True, chunksizes=(1, ny, nx)
    )
    v.set_auto_maskandscale(False)
    if s.missing_value is not None:
        v.missing_value = np.array(s.missing_value).astype(dtype)
    if s.packing:
        v.scale_factor = np.float32(s.packing[0])
        v.add_offset = np.float32(s.packing[1])
    v.units = "K"
    v.cell_methods = "time: mean"
    # One masked value per file (raw _FillValue), one raw missing_value where there is one.
    if fill is not None:
        raw[0, 0, 0] = fill
    if s.missing_value is not None:
        raw[-1, -1, -1] = v.missing_value
    v[:] = raw
    coordinates = []
    for name, kind in s.extra.items():
        if kind in ("char", "char-fill"):
            nc.createDimension("nchar", 4)
            fill_char = b" " if kind == "char-fill" else None
            c = nc.createVariable(name, "S1", ("time", "nchar"), fill_value=fill_char)
            c[:] = netCDF4.stringtochar(np.array([f"m{m:02d}" for m in range(months)], dtype="S4"))
        elif kind == "string":
            c = nc.createVariable(name, str, ("time",))
            for m in range(months):  # longer strings in later files
                c[m] = f"month {m + 1}" + "!" * seed
        elif kind == "scalar":
            c = nc.createVariable(name, "f8", ())
            c.units = "m"
            c.axis = "Z"
            c[...] = 2.0
            coordinates.append(name)
        elif kind == "static":
            c = nc.createVariable(name, "f4", ("lat", "lon"))
            c[:] = np.arange(ny * nx, dtype="f4").reshape(ny, nx)
        else:
            raise ValueError(kind)
    if coordinates:
        v.coordinates = " ".join(coordinates)


def specs(*by_file: FileSpec) -> Callable[[int], FileSpec]:
    """A spec per file (the last one repeated)."""
    return lambda i: by_file[min(i, len(by_file) - 1)]


def split_runs(paths: Sequence[Path], cuts: Sequence[int]) -> list[list[Path]]:
    """The files each run sees: growing prefixes of ``paths`` ending at each cut, then all."""
    return [list(paths[:c]) for c in cuts] + [list(paths)]
