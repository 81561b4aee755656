"""netCDF4 scans under ``source.variables`` / ``drop_variables``: which route each file of a
series takes (a template of ``sources/quick.py``, or the usual one) and its scan CPU, when the
files differ only in a variable the selection leaves out.

Series (generated, 4 steps of 20x30 a file, zlib): ``alternate`` (every other file has an extra
3-D ``diag``) and ``varying`` (every file has a ``diag`` of its own length along ``obs``, with a
per-file ``actual_range``). Each is scanned with ``drop_variables=("diag",)`` and with
``variables=("tas",)``, one process, templates dropped before each; CPU is
``time.process_time`` around ``scan_file`` (the first file's includes imports of the first
series). Run it at two commits (the code before from a copy on ``PYTHONPATH``) to compare.

Usage::

    .venv/bin/python benchmarks/nc4_selection.py [--files 40] [--dir /tmp/nc4_selection]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import xarray as xr

from icepipe.model import SourceFile
from icepipe.sources import quick
from icepipe.sources.formats import hdf5_index
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import scan_file


def _write(path: Path, i: int, series: str) -> None:
    n = 4
    rng = np.random.default_rng(i)
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), rng.random((n, 20, 30), dtype="f4"))},
        coords={
            "time": np.arange(n) + n * i,
            "lat": np.linspace(-90, 90, 20),
            "lon": np.linspace(0, 360, 30),
        },
        attrs={"title": f"file {i}"},
    )
    ds["time"].attrs["units"] = "days since 2000-01-01"
    if series == "alternate" and i % 2:
        ds["diag"] = (("time", "lat", "lon"), ds["tas"].values * 2)
    if series == "varying":
        ds["diag"] = (("obs",), np.arange(i + 1, dtype="f4"))
        ds["diag"].attrs["actual_range"] = np.array([0, i], "f4")
    enc = {v: {"zlib": True, "chunksizes": (1, 20, 30)} for v in ds.data_vars if ds[v].ndim == 3}
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/nc4_selection"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    selections = {
        "drop_variables": ScanOptions(format="netcdf4", drop_variables=("diag",)),
        "variables": ScanOptions(format="netcdf4", variables=("tas",)),
    }
    print(f"load average at start {os.getloadavg()}")
    for series in ("alternate", "varying"):
        paths = []
        for i in range(args.files):
            path = args.dir / f"{series}{i:04d}.nc"
            if not path.exists():
                _write(path, i, series)
            paths.append(path)
        for name, options in selections.items():
            quick.forget()
            hdf5_index.forget_templates()
            cpu: dict[str, list[float]] = {"template": [], "usual": []}
            for path in paths:
                source = SourceFile(f"file://{path}", path.stat().st_size, "0")
                start = time.process_time()
                result = scan_file(source, options)
                seconds = time.process_time() - start
                templated = isinstance(getattr(result, "content", None), PackedDataset)
                cpu["template" if templated else "usual"].append(seconds)
            total = sum(map(sum, cpu.values()))
            medians = {k: f"{statistics.median(v) * 1e3:.2f}" if v else "-" for k, v in cpu.items()}
            print(
                f"{series:<9} {name:<14} template {len(cpu['template'])}/{len(paths)}, "
                f"median CPU ms template {medians['template']} usual {medians['usual']}, "
                f"{total / len(paths) * 1e3:.2f} ms a file in all",
                flush=True,
            )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
