"""Rectilinear benchmark: reading files of uneven length through a virtual repository.

Daily data in yearly files across leap years (365/366 days, one contiguous HDF5 dataset per
file, so each file is one chunk along time; ``tests/uneven_series.py`` layout, float32 values
that compress like model output, about 1.3x with zstd) is stored three ways and read back
four ways:

* ``virtual-rect``: an icepipe virtual ingest: references into the files, on a rectilinear
  grid along time (one chunk per file: 365, 366, ...). Built by ``icepipe.run`` when this
  icepipe ingests uneven files virtually; otherwise directly, file by file, with
  ``icepipe.repository.grids.set_chunk_grid`` and VirtualiZarr's per-file manifests written at
  their chunk offsets (``tests/rectilinear_repo.py``); the JSON says which (``builder``).
* ``native-365``: an icepipe ``mode: native`` copy with a regular grid of 365-day chunks
  (zstd, icepipe's default codec), the baseline: the same data, rewritten;
* ``native-raw``: the same copy without compression (``compression: none``): what reading
  Icechunk's own chunks costs without decompressing them;
* ``mfdataset``: ``xarray.open_mfdataset`` of the source files (one Dask chunk per file).

For each, medians over interleaved repeats (the order rotates per repeat) of: ``open`` (the
dataset, metadata only), ``all`` (every value of ``tas``), ``point`` (the whole time series at
one grid cell), ``month`` (February of a leap year). Reads use Dask chunks that follow the
stored chunks (``chunks={}``) on the local threaded scheduler; the files and the repositories
are on local disk and in the page cache after the first repeat (warm reads). The values of
the four are checked equal once.

Prints a table and writes JSON (default ``benchmarks/results/rectilinear.json``).

Usage::

    .venv/bin/python benchmarks/rectilinear.py [--quick] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

import icepipe
from run import (  # benchmarks/run.py: the same machine/source record, the JSON writer
    machine_info,
    source_state,
    write_results,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

METHODS = ("virtual-rect", "native-365", "native-raw", "mfdataset")
BASELINE = "native-365"
OPS = ("open", "all", "point", "month")
SIZES = {
    # years (leap years 2000, 2004, 2008), grid
    "full": {"years": list(range(2000, 2010)), "ny": 90, "nx": 180, "repeats": 5},
    "quick": {"years": list(range(2003, 2007)), "ny": 45, "nx": 90, "repeats": 3},
}


def realistic_values(files: list[Path], seed: int = 13) -> None:
    """Replace the generator's ``tas`` (day numbers: they compress far better than real data
    and would flatter the compressed native copy) with a field that compresses like real
    float32 model output: latitude profile, seasonal cycle, weather noise. In place, so each
    file keeps its contiguous layout."""
    import netCDF4

    rng = np.random.default_rng(seed)
    for path in files:
        with netCDF4.Dataset(path, "a") as nc:
            days = np.asarray(nc["time"][:])
            lat = np.deg2rad(np.asarray(nc["lat"][:]))
            nx = len(nc.dimensions["lon"])
            season = 10 * np.sin(2 * np.pi * days / 365.25)[:, None, None]
            profile = (30 * np.cos(lat))[None, :, None]
            noise = rng.normal(0, 2, (len(days), len(lat), nx))
            nc["tas"][:] = (250 + profile + season + noise).astype("f4")


def _pipeline(folder: Path, name: str, extra: dict[str, Any]) -> Path:
    doc = {
        "name": name,
        "source": {"urls": str(folder / "src" / "*.nc"), "format": "netcdf4", "concat_dim": "time"},
        "target": {"repo": str(folder / name), "group": "g"},
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def build(folder: Path, files: list[Path], client: Any) -> dict[str, Any]:
    """The virtual and the native repository; how each was built and how long it took."""
    from icepipe.errors import IcepipeError

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        icepipe.run(icepipe.load_pipeline(_pipeline(folder, "virtual", {})), client=client)
        out["builder"] = "icepipe.run"
    except IcepipeError as exc:  # an icepipe without the rectilinear virtual writer
        from tests.rectilinear_repo import write_virtual_rectilinear

        out["builder"] = "direct (tests/rectilinear_repo.py)"
        out["icepipe_run_refused"] = str(exc).splitlines()[0][:300]
        write_virtual_rectilinear(folder / "virtual", files, group="g")
    out["virtual_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    native = {"mode": "native", "chunks": {"time": 365}}
    icepipe.run(icepipe.load_pipeline(_pipeline(folder, "native", native)), client=client)
    out["native_build_s"] = time.perf_counter() - t0
    raw = {**native, "compression": "none"}
    icepipe.run(icepipe.load_pipeline(_pipeline(folder, "native-raw", raw)), client=client)
    for name in ("virtual", "native", "native-raw"):  # what each repository holds on disk
        out[f"{name}_repo_bytes"] = sum(
            p.stat().st_size for p in (folder / name).rglob("*") if p.is_file()
        )
    return out


def opener(method: str, folder: Path, files: list[Path]) -> Callable[[], xr.Dataset]:

    if method == "mfdataset":
        return lambda: xr.open_mfdataset(files, combine="nested", concat_dim="time")
    repo = str(folder / {"virtual-rect": "virtual"}.get(method, method.replace("-365", "")))
    return lambda: icepipe.open_dataset(repo, group="g", chunks={})


def measure(open_ds: Callable[[], xr.Dataset], month: str) -> tuple[dict[str, float], Any]:
    """Seconds per operation, and the values read (for the equality check)."""
    times: dict[str, float] = {}
    gc.collect()
    t0 = time.perf_counter()
    ds = open_ds()
    times["open"] = time.perf_counter() - t0
    tas = ds["tas"]
    ny, nx = tas.shape[1] // 2, tas.shape[2] // 2
    t0 = time.perf_counter()
    everything = tas.values
    times["all"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    point = tas[:, ny, nx].values
    times["point"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feb = tas.sel(time=month).values
    times["month"] = time.perf_counter() - t0
    return times, (everything, point, feb, ds["time"].values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 years on a 45x90 grid")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "rectilinear.json"
    )
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    repeats = args.repeats or int(size["repeats"])
    machine = machine_info()
    from tests.uneven_series import Layout, file_lengths, write_yearly_daily

    from icepipe.execute import open_client

    leap = next(y for y in size["years"] if y % 4 == 0)
    month = f"{leap}-02"
    samples: dict[str, dict[str, list[float]]] = {m: {op: [] for op in OPS} for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_yearly_daily(
            folder / "src", size["years"], layout=Layout(), ny=size["ny"], nx=size["nx"]
        )
        realistic_values(files)
        with open_client(workers=2) as (client, _info):
            built = build(folder, files, client)
        # Reads run on the local threaded scheduler, after the cluster is gone.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            openers = {m: opener(m, folder, files) for m in METHODS}
            checked: dict[str, Any] = {}
            for m in METHODS:  # untimed warm-up: imports, page cache; and the values check
                checked[m] = measure(openers[m], month)[1]
            for m in METHODS[1:]:
                for a, b in zip(checked[METHODS[0]], checked[m], strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=m)
            for r in range(repeats):
                order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
                for m in order:
                    times, _ = measure(openers[m], month)
                    for op, s in times.items():
                        samples[m][op].append(s)
        lengths = file_lengths(files)
        nbytes = int(sum(lengths)) * int(size["ny"]) * int(size["nx"]) * 4
    medians = {m: {op: statistics.median(v) for op, v in ops.items()} for m, ops in samples.items()}
    ratios = {m: {op: medians[m][op] / medians[BASELINE][op] for op in OPS} for m in METHODS}
    _print_table(medians, ratios, lengths, nbytes, built)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = {
        "benchmark": "rectilinear",
        "when": datetime.now(UTC).isoformat(),
        "mode": "quick" if args.quick else "full",
        "data": {
            "files": [f.name for f in files],
            "lengths": lengths,
            "grid": [size["ny"], size["nx"]],
            "tas_bytes": nbytes,
            "month": month,
        },
        "build": built,
        "repeats": repeats,
        "medians_s": medians,
        "ratios_vs_native": ratios,
        "samples_s": samples,
        "values_equal": True,
        "machine": machine,
        "source": source_state(),
    }
    write_results(args.out, out)
    print(f"\nwritten to {args.out}")
    return 0


def _print_table(
    medians: dict[str, dict[str, float]],
    ratios: dict[str, dict[str, float]],
    lengths: list[int],
    nbytes: int,
    built: dict[str, Any],
) -> None:
    print(
        f"{len(lengths)} yearly files ({', '.join(map(str, lengths))} days), tas "
        f"{nbytes / 1e6:.1f} MB; virtual repository built by {built['builder']}; on disk: "
        f"virtual {built['virtual_repo_bytes'] / 1e6:.2f} MB, native "
        f"{built['native_repo_bytes'] / 1e6:.1f} MB (zstd), "
        f"{built['native-raw_repo_bytes'] / 1e6:.1f} MB (raw)"
    )
    header = f"{'method':14}" + "".join(f"{op + ' s':>10} {'x':>6}" for op in OPS)
    print(header)
    print("-" * len(header))
    for m in METHODS:
        cells = "".join(f"{medians[m][op]:>10.3f} {ratios[m][op]:>5.2f}x" for op in OPS)
        print(f"{m:14}{cells}")
    print(f"(x: median time over {BASELINE}'s; above 1 is slower than the native copy)")


if __name__ == "__main__":
    sys.exit(main())
