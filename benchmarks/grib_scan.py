"""GRIB scan benchmark: icepipe's template route vs its index route, same files, same process,
interleaved.

Each repeat scans the same GRIB files with icepipe's scan task (``scan_files``, what the workers
run) two ways, one core:

- ``template``: the template route (``sources/formats/grib_frames.py`` under
  ``grib_index.py``: the first file of a layout is indexed by ecCodes and cfgrib and becomes
  the template; the others are found by their framing and packed onto its mapping, shifted to
  their own reference time); templates are dropped before each repeat;
- ``index``: every file indexed by ecCodes and mapped by cfgrib's code
  (``grib_index.INDEXED_SCANS`` off, icepipe's route before);

and ``floor``: framing each file only (``grib_frames.frames``).

Series, each file a copy of a real file with its reference time moved on by 12 hours per file
(ecCodes ``dataDate``/``dataTime``): ``era5-levels`` (data/era5-series, GRIB1, 40 messages:
2 parameters on 20 pressure levels), ``single-message`` (data/cfgrib-samples/regular_ll_sfc.grib,
GRIB1, 1 message) and ``grib2-levels`` (data/cfgrib-samples/regular_gg_ml_g2.grib, GRIB2,
a parameter on model levels).

Usage::

    .venv/bin/python benchmarks/grib_scan.py [--files 100] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from run import write_results  # benchmarks/run.py: the shared JSON writer

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUTES = ("template", "index", "floor")
SERIES = {
    "era5-levels": "era5-series/era5-2017010100.grib",
    "single-message": "cfgrib-samples/regular_ll_sfc.grib",
    "grib2-levels": "cfgrib-samples/regular_gg_ml_g2.grib",
}


def shifted_series(source: Path, folder: Path, n: int, hours: int = 12) -> list[Path]:
    """``n`` copies of ``source``, the reference time of copy ``i`` moved on by
    ``i * hours`` hours in every message."""
    import eccodes

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"f{i:05d}.grib"
        with open(source, "rb") as src, open(path, "wb") as dst:
            while (h := eccodes.codes_grib_new_from_file(src)) is not None:
                date, hhmm = eccodes.codes_get(h, "dataDate"), eccodes.codes_get(h, "dataTime")
                when = dt.datetime.strptime(f"{date:08d}{hhmm:04d}", "%Y%m%d%H%M")
                when += dt.timedelta(hours=i * hours)
                eccodes.codes_set(h, "dataDate", int(when.strftime("%Y%m%d")))
                eccodes.codes_set(h, "dataTime", int(when.strftime("%H%M")))
                dst.write(eccodes.codes_get_message(h))
                eccodes.codes_release(h)
        out.append(path)
    return out


def _scan(route: str) -> Callable[[list[Path]], None]:
    from icepipe.model import SourceFile
    from icepipe.sources import grib_quick
    from icepipe.sources.formats import grib_index
    from icepipe.sources.formats.base import ScanOptions
    from icepipe.sources.scan import scan_files

    options = ScanOptions(format="grib", concat_dim="time")

    def run(files: list[Path]) -> None:
        grib_index.INDEXED_SCANS = route == "template"
        grib_quick.forget()
        sources = [SourceFile(f"file://{p}", p.stat().st_size, "0") for p in files]
        try:
            out = scan_files(sources, options)
        finally:
            grib_index.INDEXED_SCANS = True
        failed = [r for r in out if isinstance(r, Exception)]
        if failed:
            raise RuntimeError(f"{route}: a file failed to scan: {failed[0]}")

    return run


def _floor(files: list[Path]) -> None:
    from icepipe.sources.formats.grib_frames import frames

    for p in files:
        frames(p.read_bytes())


def bench_series(name: str, files: list[Path], repeats: int) -> dict[str, Any]:
    runners = {"template": _scan("template"), "index": _scan("index"), "floor": _floor}
    for run in runners.values():
        run(files[:4])  # imports, first use
    samples: dict[str, list[float]] = {r: [] for r in ROUTES}
    cpu: dict[str, list[float]] = {r: [] for r in ROUTES}
    for rep in range(repeats):
        for route in ROUTES:  # interleaved: machine noise hits every route alike
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            runners[route](files)
            samples[route].append(time.perf_counter() - t0)
            cpu[route].append(time.process_time() - c0)
            rate = len(files) / samples[route][-1]
            print(f"  {name:<15} repeat {rep + 1}/{repeats}  {route:<8} {rate:8.1f} files/s")
    med = {r: statistics.median(v) for r, v in samples.items()}
    med_cpu = {r: statistics.median(v) for r, v in cpu.items()}
    return {
        "n_files": len(files),
        "seconds": {r: [round(x, 4) for x in v] for r, v in samples.items()},
        "cpu_seconds": {r: [round(x, 4) for x in v] for r, v in cpu.items()},
        "files_per_second": {r: round(len(files) / m, 1) for r, m in med.items()},
        "template_vs_index": round(med["index"] / med["template"], 2),
        "template_vs_index_cpu": round(med_cpu["index"] / med_cpu["template"], 2),
        "template_share_of_floor": round(med["floor"] / med["template"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100, help="files per series (%(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (%(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "grib_scan.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out: dict[str, Any] = {
        "benchmark": "grib-scan",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "statistic": "median, one process (files/s per core)",
        "load_average": os.getloadavg(),
        "series": {},
    }
    with tempfile.TemporaryDirectory(prefix="icepipe-grib-scan-") as tmp:
        for name, sample in SERIES.items():
            source = REPO_ROOT / "data" / sample
            if not source.exists():
                continue
            files = shifted_series(source, Path(tmp) / name, args.files)
            out["series"][name] = bench_series(name, files, args.repeats)
    print()
    print(f"{'series':<16} {'template':>9} {'index':>8} {'floor':>9}  template/index (wall, cpu)")
    for name, res in out["series"].items():
        f = res["files_per_second"]
        print(
            f"{name:<16} {f['template']:>9} {f['index']:>8} {f['floor']:>9}  "
            f"{res['template_vs_index']:.1f}x, {res['template_vs_index_cpu']:.1f}x"
        )
    print("files/s per core; template/index = index route median / template route median")
    print(f"load average: {out['load_average']}")
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
