"""Derive sample data that no public package ships from the real files fetch_data.sh fetched.

Run by scripts/fetch_data.sh with the project's Python (it needs xarray, zarr and eccodes):

    derive_samples.py nemo-zarr --zarr-format 3 OUT_DIR NEMO_FILE...
    derive_samples.py nemo-zarr --zarr-format 2 OUT_DIR NEMO_FILE...
    derive_samples.py grib-series OUT_DIR GRIB_FILE
    derive_samples.py split [--exclude GLOB] OUT_DIR FOLDER...
    derive_samples.py calendar-split --by month|year OUT_DIR FILE
    derive_samples.py geotiff-bands OUT_DIR GEOTIFF_FILE

``nemo-zarr`` writes one store per netCDF file, ``OUT_DIR/<stem>.zarr``, with xarray (so the
arrays carry dimension names): Zarr v3 with sharded data variables, or Zarr v2 with
consolidated metadata. Times are copied as stored (raw numbers with their ``units`` and
``calendar``), so the stores decode exactly like the netCDF files.

``split`` turns single real netCDF files into series for the conformance harness: every
netCDF3/netCDF4 file under the FOLDERs (found by magic bytes, recursively) whose record
(unlimited) dimension, or else a dimension named like time, has 2 or more steps is split along it
into 2-4 consecutive files, ``OUT_DIR/<folder name>/<file stem>/<stem>-pNN.nc``, with a
``split.json`` naming the source file and the dimension. The parts keep the file's format
(netCDF3 classic / 64-bit offset, netCDF4 / netCDF4-classic), every attribute, dtype and
``_FillValue``, and each variable's chunking (clipped to the part's length), compression and
shuffle, byte for byte (raw values, no masking or scaling). Files with groups, user-defined
types or no such dimension are left out (the harness ingests them as one-file series).

``calendar-split`` cuts one real daily netCDF file at calendar month or year boundaries, into
files of uneven length along time as archives publish them (monthly files of 28-31 days,
yearly files): ``OUT_DIR/<stem>_<YYYY|YYYYMM>.nc``, with a ``split.json`` (source, dimension,
sizes). The calendar comes from the time coordinate (``units: <unit> since <date>`` and its
``calendar``), or from a ``date`` variable holding ``YYYYMMDD`` numbers. The parts are
written like ``split``'s (format, attributes, dtypes, fill values and layout kept; raw values),
and the script then checks that the parts, concatenated, hold the original's bytes for every
variable: the values are bit-identical (the files themselves differ, as their headers do).

``geotiff-bands`` splits a real multi-band GeoTIFF (r-cran-stars' Landsat 7 ``L7_ETMs.tif``:
strips of 3 rows that do not divide its height, pixel-interleaved) into one
single-band Cloud-Optimized-style GeoTIFF per band, ``OUT_DIR/<stem>_B<n>.tif``: tiled
128x128, deflate with the horizontal predictor, two overview levels (ignored by ingests unless
asked), CRS, transform and values copied exactly (checked after writing).

``grib-series`` splits a GRIB file into one file per analysis time (``dataDate``/``dataTime``),
``OUT_DIR/era5-<YYYYMMDDHH>.grib``, copying each message's bytes unchanged and in file order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import icepipe  # noqa: F401  (loads pyproj before ecCodes: see icepipe/__init__.py)


def nemo_zarr(out_dir: Path, paths: list[Path], *, zarr_format: int) -> None:
    import xarray as xr

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        # decode_times=False: the raw time values and their units/calendar attributes are
        # written as they are, instead of being decoded and re-encoded.
        with xr.open_dataset(path, decode_times=False) as ds:
            ds = ds.load()
        encoding = {name: _zarr_encoding(var, zarr_format) for name, var in ds.variables.items()}
        for var in ds.variables.values():
            var.encoding = {}
        ds.to_zarr(
            out_dir / f"{path.stem}.zarr",
            mode="w-",
            zarr_format=zarr_format,
            consolidated=zarr_format == 2,
            encoding=encoding,
        )


def _zarr_encoding(var: Any, zarr_format: int) -> dict[str, Any]:
    # Keep what defines the values (dtype, fill and missing values); netCDF storage settings
    # (zlib, chunksizes, ...) do not apply to Zarr.
    enc = {k: v for k, v in var.encoding.items() if k in ("dtype", "_FillValue", "missing_value")}
    # No fill value in the source: add none (xarray would add NaN to floats).
    enc.setdefault("_FillValue", None)
    if zarr_format == 3 and max(var.shape, default=0) > 4:
        # Shards as large as the netCDF chunk (the whole field), holding chunks of a third of
        # each horizontal dimension, so a shard holds several chunks.
        shards = tuple(var.shape)
        enc["shards"] = shards
        enc["chunks"] = tuple(n if n <= 4 else -(-n // 3) for n in shards)
    return enc


def grib_series(out_dir: Path, path: Path) -> None:
    import eccodes

    groups: dict[str, list[bytes]] = defaultdict(list)
    with path.open("rb") as f:
        while (handle := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                date = eccodes.codes_get(handle, "dataDate")
                time = eccodes.codes_get(handle, "dataTime")
                groups[f"{date:08d}{time // 100:02d}"].append(eccodes.codes_get_message(handle))
            finally:
                eccodes.codes_release(handle)
    if not groups:
        sys.exit(f"derive_samples: {path}: no GRIB messages")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stamp, messages in sorted(groups.items()):
        (out_dir / f"era5-{stamp}.grib").write_bytes(b"".join(messages))


TIME_NAMES = ("time", "t", "TIME", "Time", "time_counter", "day", "date", "record", "report")
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def _split_dim(nc: Any) -> str | None:
    sizes = {name: len(d) for name, d in nc.dimensions.items()}
    for name, dim in nc.dimensions.items():
        if dim.isunlimited() and sizes[name] >= 2:
            return str(name)
    for name in TIME_NAMES:
        if sizes.get(name, 0) >= 2:
            return name
    return None


def split_file(path: Path, out_dir: Path, *, max_parts: int = 4) -> dict[str, Any] | None:
    """Split ``path`` along its record/time dimension; the description written, or None."""
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(path) as src:
        dim = _split_dim(src)
        if dim is None or src.groups:
            return None
        if any(
            not isinstance(v.datatype, np.dtype) and v.datatype is not str
            for v in src.variables.values()
        ):
            return None  # compound, enum or vlen types
        n = len(src.dimensions[dim])
        k = min(max_parts, n)
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        starts = [sum(sizes[:i]) for i in range(k)]
        out_dir.mkdir(parents=True, exist_ok=True)
        parts = []
        for i, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            out = out_dir / f"{path.stem}-p{i:02d}.nc"
            with netCDF4.Dataset(out, "w", format=src.data_model) as dst:
                _copy_part(src, dst, dim, start, size)
            parts.append(out.name)
    info = {"source": str(path), "dim": dim, "length": n, "parts": parts, "sizes": sizes}
    (out_dir / "split.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _copy_part(src: Any, dst: Any, dim: str, start: int, size: int) -> None:
    dst.set_fill_off()
    dst.setncatts({a: src.getncattr(a) for a in src.ncattrs()})
    for name, d in src.dimensions.items():
        length = size if name == dim else len(d)
        dst.createDimension(name, None if d.isunlimited() else length)
    netcdf4 = not src.data_model.startswith("NETCDF3")
    for name, var in src.variables.items():
        var.set_auto_maskandscale(False)
        var.set_auto_chartostring(False)
        kwargs: dict[str, Any] = {}
        attrs = var.ncattrs()
        if "_FillValue" in attrs:
            kwargs["fill_value"] = var.getncattr("_FillValue")
        if netcdf4:
            filters = var.filters() or {}
            for key in ("zlib", "shuffle", "fletcher32"):
                if filters.get(key):
                    kwargs[key] = True
            if filters.get("zlib"):
                kwargs["complevel"] = filters.get("complevel", 4)
            chunking = var.chunking()
            if chunking == "contiguous":
                kwargs["contiguous"] = True
            elif chunking:
                kwargs["chunksizes"] = [
                    min(c, size) if d == dim else c
                    for c, d in zip(chunking, var.dimensions, strict=True)
                ]
            kwargs["endian"] = var.endian()
        out = dst.createVariable(name, var.datatype, var.dimensions, **kwargs)
        out.set_auto_maskandscale(False)
        out.set_auto_chartostring(False)
        out.setncatts({a: var.getncattr(a) for a in attrs if a != "_FillValue"})
        if var.ndim == 0:
            out.assignValue(var.getValue())
            continue
        index = tuple(
            slice(start, start + size) if d == dim else slice(None) for d in var.dimensions
        )
        if 0 in out.shape and dim not in var.dimensions:
            continue
        out[...] = var[index] if dim in var.dimensions else var[...]


def _calendar_labels(src: Any, dim: str, by: str) -> list[str]:
    """``YYYY`` or ``YYYYMM`` of every step along ``dim``."""
    import cftime
    import numpy as np

    width = 4 if by == "year" else 6
    coord = src.variables.get(dim)
    units = str(getattr(coord, "units", "")) if coord is not None else ""
    if " since " in units:
        calendar = str(getattr(coord, "calendar", "standard"))
        dates = cftime.num2date(np.asarray(coord[:]), units, calendar)
        return [f"{d.year:04d}{d.month:02d}"[:width] for d in dates]
    date = src.variables.get("date")
    if date is not None and date.dimensions == (dim,):
        return [f"{int(v):08d}"[:width] for v in np.asarray(date[:])]
    raise SystemExit(f"derive_samples: no calendar along {dim!r} (no 'since' units, no 'date')")


def calendar_split(path: Path, out_dir: Path, *, by: str) -> dict[str, Any]:
    """Cut ``path`` at calendar ``by`` (``month``/``year``) boundaries along its time
    dimension; check the parts hold the original's bytes; return the description written."""
    import netCDF4

    with netCDF4.Dataset(path) as src:
        dim = _split_dim(src)
        if dim is None:
            raise SystemExit(f"derive_samples: {path}: no time dimension to split")
        runs: list[list[Any]] = []  # [label, start, size]
        for i, label in enumerate(_calendar_labels(src, dim, by)):
            if runs and runs[-1][0] == label:
                runs[-1][2] += 1
            else:
                runs.append([label, i, 1])
        out_dir.mkdir(parents=True, exist_ok=True)
        parts = []
        for label, start, size in runs:
            out = out_dir / f"{path.stem}_{label}.nc"
            with netCDF4.Dataset(out, "w", format=src.data_model) as dst:
                _copy_part(src, dst, dim, start, size)
            parts.append(out)
    _check_bytes(path, parts, dim)
    info = {
        "source": str(path),
        "dim": dim,
        "by": by,
        "length": sum(r[2] for r in runs),
        "parts": [p.name for p in parts],
        "sizes": [r[2] for r in runs],
        "values": "bit-identical",
    }
    (out_dir / "split.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _check_bytes(path: Path, parts: list[Path], dim: str) -> None:
    """Every variable of the parts, concatenated along ``dim``, holds the bytes of ``path``'s,
    with the same attributes; exit otherwise."""
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(path) as src:
        opened = [netCDF4.Dataset(p) for p in parts]
        try:
            for name, var in src.variables.items():
                var.set_auto_maskandscale(False)
                want = np.asarray(var[...])
                pieces = []
                for nc in opened:
                    v = nc.variables[name]
                    v.set_auto_maskandscale(False)
                    if sorted(v.ncattrs()) != sorted(var.ncattrs()) or not all(
                        np.array_equal(np.asarray(v.getncattr(a)), np.asarray(var.getncattr(a)))
                        for a in var.ncattrs()
                    ):
                        raise SystemExit(f"derive_samples: {path}: {name}: attributes differ")
                    pieces.append(np.asarray(v[...]))
                if dim in var.dimensions:
                    got = np.concatenate(pieces, axis=var.dimensions.index(dim))
                    same = got.dtype == want.dtype and got.tobytes() == want.tobytes()
                else:
                    same = all(p.tobytes() == want.tobytes() for p in pieces)
                if not same:
                    raise SystemExit(f"derive_samples: {path}: {name}: the parts differ")
        finally:
            for nc in opened:
                nc.close()


def split_folders(out_dir: Path, folders: list[Path], exclude: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if any(path.match(pattern) for pattern in exclude):
                continue
            with path.open("rb") as f:
                head = f.read(8)
            if not head.startswith(NETCDF_MAGIC):
                continue
            rel = path.relative_to(folder).with_suffix("")
            target = out_dir / folder.name / "-".join(rel.parts)
            try:
                info = split_file(path, target)
            except Exception as exc:  # a file the netCDF library cannot copy: left out
                print(f"derive_samples: split: {path}: not split ({exc})", file=sys.stderr)
                if target.exists():
                    for p in target.iterdir():
                        p.unlink()
                    target.rmdir()
                continue
            if info is not None:
                print(f"{path}: {len(info['parts'])} parts along {info['dim']}")


def geotiff_bands(out_dir: Path, path: Path) -> None:
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling

    out_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path) as src:
        profile = src.profile.copy()
        profile.update(
            count=1,
            tiled=True,
            blockxsize=128,
            blockysize=128,
            compress="deflate",
            predictor=2,
            interleave="band",
        )
        for band in range(1, src.count + 1):
            data = src.read(band)
            out = out_dir / f"{path.stem}_B{band}.tif"
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(data, 1)
                dst.build_overviews([2, 4], Resampling.average)
            with rasterio.open(out) as check:
                if not np.array_equal(check.read(1), data) or check.transform != src.transform:
                    raise SystemExit(f"{out}: values or transform differ from band {band}")
                if check.crs != src.crs:
                    raise SystemExit(f"{out}: CRS differs from {path}")
            print(f"{out}: band {band} of {path.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    z = sub.add_parser("nemo-zarr", help="one Zarr store per NEMO netCDF file")
    z.add_argument("--zarr-format", type=int, choices=(2, 3), required=True)
    z.add_argument("out_dir", type=Path)
    z.add_argument("paths", type=Path, nargs="+")
    g = sub.add_parser("grib-series", help="one GRIB file per analysis time")
    g.add_argument("out_dir", type=Path)
    g.add_argument("path", type=Path)
    sp = sub.add_parser("split", help="split netCDF files along their record/time dimension")
    sp.add_argument("--exclude", action="append", default=[], help="file name glob to skip")
    sp.add_argument("out_dir", type=Path)
    sp.add_argument("folders", type=Path, nargs="+")
    c = sub.add_parser("calendar-split", help="cut a daily file at month or year boundaries")
    c.add_argument("--by", choices=("month", "year"), required=True)
    c.add_argument("out_dir", type=Path)
    c.add_argument("path", type=Path)
    t = sub.add_parser("geotiff-bands", help="one tiled single-band GeoTIFF per band")
    t.add_argument("out_dir", type=Path)
    t.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "geotiff-bands":
        geotiff_bands(args.out_dir, args.path)
    elif args.command == "calendar-split":
        info = calendar_split(args.path, args.out_dir, by=args.by)
        print(f"{args.path}: {len(info['parts'])} parts by {args.by}: {info['sizes']}")
    elif args.command == "split":
        split_folders(args.out_dir, args.folders, args.exclude)
    elif args.command == "nemo-zarr":
        nemo_zarr(args.out_dir, args.paths, zarr_format=args.zarr_format)
    else:
        grib_series(args.out_dir, args.path)


if __name__ == "__main__":
    main()
