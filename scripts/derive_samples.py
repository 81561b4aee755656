"""Derive sample data that no public package ships from the real files fetch_data.sh fetched.

Run by scripts/fetch_data.sh with the project's Python (it needs xarray, zarr and eccodes):

    derive_samples.py nemo-zarr --zarr-format 3 OUT_DIR NEMO_FILE...
    derive_samples.py nemo-zarr --zarr-format 2 OUT_DIR NEMO_FILE...
    derive_samples.py grib-series OUT_DIR GRIB_FILE

``nemo-zarr`` writes one store per netCDF file, ``OUT_DIR/<stem>.zarr``, with xarray (so the
arrays carry dimension names): Zarr v3 with sharded data variables, or Zarr v2 with
consolidated metadata. Times are copied as stored (raw numbers with their ``units`` and
``calendar``), so the stores decode exactly like the netCDF files.

``grib-series`` splits a GRIB file into one file per analysis time (``dataDate``/``dataTime``),
``OUT_DIR/era5-<YYYYMMDDHH>.grib``, copying each message's bytes unchanged and in file order.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


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
    args = parser.parse_args()
    if args.command == "nemo-zarr":
        nemo_zarr(args.out_dir, args.paths, zarr_format=args.zarr_format)
    else:
        grib_series(args.out_dir, args.path)


if __name__ == "__main__":
    main()
