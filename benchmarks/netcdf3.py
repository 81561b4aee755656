"""netCDF3 scan benchmark: icepipe's header route vs VirtualiZarr's netCDF3 parser route, same
files, same process, interleaved.

Each repeat scans the same generated netCDF3 files with icepipe's scan task (``scan_files``, what
the workers run) three ways, one core:

- ``header``: the header route (``sources/formats/netcdf3_header.py`` under ``sources/quick.py``:
  the first file of a layout goes VirtualiZarr's way and becomes the template, the others are
  packed onto it from their own header); templates are dropped before each repeat;
- ``parser``: every file through VirtualiZarr's ``NetCDF3Parser`` and ``to_virtual_dataset``
  (icepipe's route before, ``netcdf3.INDEXED_SCANS`` off);
- ``vz-open``: plain ``virtualizarr.open_virtual_dataset(parser=NetCDF3Parser())`` per file, no
  icepipe at all (the peer's own figure);

and ``floor``: reading and parsing each header only (``netcdf3_header.read_header``).

Series: ``classic-record`` (CDF-1, a record ``time`` dimension, two interleaved record variables
and a fixed-size one), ``offset64-fixed`` (CDF-2, no record dimension), and, when the libncarg
sample data are in ``data/``, the 24 hourly station files ``950318??_sao.cdf`` (a record count of
their own each) repeated to the same number of files, and ``sao-pipeline``: those 24 files once,
with ``pipelines/sao-stations.yaml``'s ``source.variables`` (the real pipeline's scan).

Usage::

    .venv/bin/python benchmarks/netcdf3.py [--files 300] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from run import write_results  # benchmarks/run.py: the shared JSON writer

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUTES = ("header", "parser", "vz-open", "floor")


def generate(folder: Path, n: int, *, fmt: str, record: bool) -> list[Path]:
    """``n`` files of 4 steps of two 45x90 float32 fields and a fixed 45x90 field."""
    import xarray as xr

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        fields = {
            f"v{k}": (("time", "lat", "lon"), rng.random((4, 45, 90), dtype="f4")) for k in range(2)
        }
        ds = xr.Dataset(
            fields,
            coords={
                "time": np.arange(4) + 4 * i,
                "lat": np.linspace(-90, 90, 45),
                "lon": np.linspace(0, 360, 90, endpoint=False),
            },
            attrs={"title": f"file {i}", "history": "generated"},
        )
        ds["time"].attrs["units"] = "days since 2000-01-01"
        ds["orog"] = (("lat", "lon"), np.zeros((45, 90), "f4"))
        path = folder / f"f{i:05d}.nc"
        ds.to_netcdf(path, format=fmt, unlimited_dims=["time"] if record else None)
        out.append(path)
    return out


def station_series(folder: Path, n: int) -> list[Path]:
    """The libncarg station files, linked ``n`` times in all (empty: not fetched)."""
    real = sorted((REPO_ROOT / "data" / "ncarg" / "cdf").glob("950318??_sao.cdf"))
    if not real:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"s{i:05d}.cdf"
        path.symlink_to(real[i % len(real)])
        out.append(path)
    return out


def _scan(
    route: str, concat_dim: str, variables: tuple[str, ...] | None = None
) -> Callable[[list[Path]], None]:
    from icepipe.model import SourceFile
    from icepipe.sources import quick
    from icepipe.sources.formats import netcdf3
    from icepipe.sources.formats.base import ScanOptions
    from icepipe.sources.scan import scan_files

    options = ScanOptions(format="netcdf3", concat_dim=concat_dim, variables=variables)

    def run(files: list[Path]) -> None:
        netcdf3.INDEXED_SCANS = route == "header"
        quick.forget()
        sources = [SourceFile(f"file://{p}", p.stat().st_size, "0") for p in files]
        try:
            out = scan_files(sources, options)
        finally:
            netcdf3.INDEXED_SCANS = True
        if any(isinstance(r, Exception) for r in out):
            raise RuntimeError(f"{route}: a file failed to scan")

    return run


def _vz_open(files: list[Path]) -> None:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import NetCDF3Parser

    registry = ObjectStoreRegistry({"file:///": LocalStore()})
    for p in files:
        open_virtual_dataset(
            f"file://{p}", registry=registry, parser=NetCDF3Parser(), decode_times=False
        )


def _floor(files: list[Path]) -> None:
    from icepipe.sources.formats.netcdf3_header import read_header

    for p in files:
        read_header(str(p))


def pipeline_variables() -> tuple[str, ...]:
    """``source.variables`` of pipelines/sao-stations.yaml (the variables every hour reports)."""
    import icepipe

    variables = icepipe.load_pipeline(
        REPO_ROOT / "pipelines" / "sao-stations.yaml"
    ).source.variables
    return tuple(variables or ())


def bench_series(
    name: str,
    files: list[Path],
    concat_dim: str,
    repeats: int,
    variables: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    runners = {
        "header": _scan("header", concat_dim, variables),
        "parser": _scan("parser", concat_dim, variables),
        "vz-open": _vz_open,
        "floor": _floor,
    }
    for run in runners.values():
        run(files[:4])  # imports, first use
    samples: dict[str, list[float]] = {r: [] for r in ROUTES}
    for rep in range(repeats):
        for route in ROUTES:  # interleaved: machine noise hits every route alike
            gc.collect()
            t0 = time.perf_counter()
            runners[route](files)
            samples[route].append(time.perf_counter() - t0)
            rate = len(files) / samples[route][-1]
            print(f"  {name:<15} repeat {rep + 1}/{repeats}  {route:<8} {rate:8.1f} files/s")
    med = {r: statistics.median(v) for r, v in samples.items()}
    return {
        "n_files": len(files),
        "seconds": {r: [round(x, 4) for x in v] for r, v in samples.items()},
        "files_per_second": {r: round(len(files) / m, 1) for r, m in med.items()},
        "header_vs_parser": round(med["parser"] / med["header"], 2),
        "header_vs_vz_open": round(med["vz-open"] / med["header"], 2),
        "header_share_of_floor": round(med["floor"] / med["header"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="files per series (%(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (%(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "netcdf3.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out: dict[str, Any] = {
        "benchmark": "netcdf3-scan",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "statistic": "median, one process (files/s per core)",
        "series": {},
    }
    with tempfile.TemporaryDirectory(prefix="icepipe-nc3-") as tmp:
        work = Path(tmp)
        series = {
            "classic-record": (
                generate(work / "a", args.files, fmt="NETCDF3_CLASSIC", record=True),
                "time",
                None,
            ),
            "offset64-fixed": (
                generate(work / "b", args.files, fmt="NETCDF3_64BIT", record=False),
                "time",
                None,
            ),
            "ncarg-stations": (station_series(work / "c", args.files), "report", None),
            # The real pipeline: the 24 files once, with its variable selection.
            "sao-pipeline": (station_series(work / "d", 24), "report", pipeline_variables()),
        }
        for name, (files, concat_dim, variables) in series.items():
            if files:
                out["series"][name] = bench_series(name, files, concat_dim, args.repeats, variables)
    print()
    print(f"{'series':<16} {'header':>8} {'parser':>8} {'vz-open':>8} {'floor':>9}  header/parser")
    for name, res in out["series"].items():
        f = res["files_per_second"]
        print(
            f"{name:<16} {f['header']:>8} {f['parser']:>8} {f['vz-open']:>8} {f['floor']:>9}  "
            f"{res['header_vs_parser']:.1f}x"
        )
    print("files/s per core; header/parser = parser route median / header route median")
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
