"""Scan benchmark: icepipe vs VirtualiZarr's ``open_virtual_mfdataset``, same files, same run.

Each method does the same work from the same generated netCDF4 files: scan every file into virtual
references, combine them along ``time``, write the references into a fresh Icechunk repository and
commit once. One 2-worker ``LocalCluster`` is started before any measurement (its start-up is
reported separately) and reused by icepipe (``client=``) and by ``parallel="dask"`` (the active
distributed client). See ``benchmarks/README.md`` for how to read the output.

Usage::

    .venv/bin/python benchmarks/run.py [--quick] [--out benchmarks/results/scan.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import icepipe

REPO_ROOT = Path(__file__).resolve().parents[1]

WORKERS = 2
METHODS = ("icepipe", "icepipe-parser", "vz-serial", "vz-dask")
# Shape of every generated file: 4 daily steps of one 90x180 float32 field, one chunk per step.
FILE_SPEC: dict[str, Any] = {
    "format": "netCDF4 (HDF5), zlib level 1",
    "variables": ["tas"],
    "steps": 4,
    "ny": 90,
    "nx": 180,
    "dtype": "float32",
    "chunks": [1, 90, 180],
}
WARMUP_FILES = 8

Method = Callable[[list[Path], Path, Any], dict[str, Any]]


# --- the three methods: scan + combine + write + commit into a fresh repository -----------------


def run_icepipe(files: list[Path], repo: Path, client: Any) -> dict[str, Any]:
    from icepipe.spec import pipeline_from_dict

    folder = files[0].parent
    pipeline = pipeline_from_dict(
        {
            "name": "bench-scan",
            # The baselines get HDFParser explicitly; "auto" would add a magic-byte read per file.
            "source": {"urls": f"{folder}/*.nc", "concat_dim": "time", "format": "netcdf4"},
            "target": {"repo": str(repo)},
        },
        base_dir=folder,
    )
    result = icepipe.run(pipeline, client=client)
    if result.status != "committed" or len(result.files_new) != len(files):
        raise RuntimeError(f"icepipe ingested {len(result.files_new)} of {len(files)} files")
    return {"stages": {k: round(v, 4) for k, v in result.stages.items()}}


def _set_indexed_scans(on: bool) -> None:
    from icepipe.sources.formats import netcdf4

    netcdf4.INDEXED_SCANS = on


def run_icepipe_parser(files: list[Path], repo: Path, client: Any) -> dict[str, Any]:
    """icepipe with every file scanned by VirtualiZarr's parser (its route before the HDF5
    chunk-index scans), on the same workers."""
    client.run(_set_indexed_scans, False)
    _set_indexed_scans(False)
    try:
        return run_icepipe(files, repo, client)
    finally:
        client.run(_set_indexed_scans, True)
        _set_indexed_scans(True)


def _virtualizarr(files: list[Path], repo: Path, parallel: Any) -> dict[str, Any]:
    import icechunk
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    t0 = time.perf_counter()
    vds = open_virtual_mfdataset(
        [f"file://{p}" for p in files],
        registry=ObjectStoreRegistry({"file:///": LocalStore()}),
        parser=HDFParser(),
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        parallel=parallel,
        decode_times=False,
    )
    t1 = time.perf_counter()
    prefix = f"file://{files[0].parent}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(prefix[7:]))
    )
    r = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(repo)),
        config=config,
        authorize_virtual_chunk_access=_credentials(prefix),
    )
    session = r.writable_session("main")
    vds.vz.to_icechunk(session.store)
    t2 = time.perf_counter()
    session.commit(f"virtualizarr: {len(files)} files")
    t3 = time.perf_counter()
    # Same stage names as icepipe's where they mean the same thing ("scan" includes the combine).
    stages = {"scan": t1 - t0, "write": t2 - t1, "commit": t3 - t2}
    return {"stages": {k: round(v, 4) for k, v in stages.items()}}


def run_vz_serial(files: list[Path], repo: Path, client: Any) -> dict[str, Any]:
    return _virtualizarr(files, repo, parallel=False)


def run_vz_dask(files: list[Path], repo: Path, client: Any) -> dict[str, Any]:
    from dask.base import get_scheduler

    # dask.delayed runs on the active distributed client; make sure it is ours, not threads.
    if get_scheduler() != client.get:
        raise RuntimeError("the benchmark's distributed client is not dask's active scheduler")
    return _virtualizarr(files, repo, parallel="dask")


RUNNERS: dict[str, Method] = {
    "icepipe": run_icepipe,
    "icepipe-parser": run_icepipe_parser,
    "vz-serial": run_vz_serial,
    "vz-dask": run_vz_dask,
}


# --- helpers -----------------------------------------------------------------------------------


def _credentials(prefix: str) -> dict[str, Any]:
    import icechunk

    return icechunk.containers_credentials({prefix: icechunk.credentials.LocalFileSystemAccess})


def open_result(repo: Path, prefix: str) -> Any:
    """Read a repository back with plain icechunk + xarray (not icepipe), data included."""
    import icechunk
    import xarray as xr

    r = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(repo)),
        authorize_virtual_chunk_access=_credentials(prefix),
    )
    store = r.readonly_session(branch="main").store
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()


def verify(n: int, files: list[Path], repos: dict[str, Path]) -> dict[str, Any]:
    """Check the three repositories hold the same dataset, so the timings compare equal work."""
    import xarray as xr

    prefix = f"file://{files[0].parent}/"
    ref = open_result(repos["icepipe"], prefix)
    expected_steps = n * FILE_SPEC["steps"]
    if ref.sizes.get("time") != expected_steps:
        raise AssertionError(f"icepipe repo has {dict(ref.sizes)}; expected time={expected_steps}")
    identical: dict[str, bool] = {}
    for method in [m for m in repos if m != "icepipe"]:
        other = open_result(repos[method], prefix)
        xr.testing.assert_equal(ref, other)
        try:
            xr.testing.assert_identical(ref, other)
            identical[method] = True
        except AssertionError:
            identical[method] = False  # attributes differ; values, dims and coords are equal
    return {"equal": True, "attrs_identical_to_icepipe": identical, "sizes": dict(ref.sizes)}


def generate(folder: Path, n: int) -> list[Path]:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.conftest import write_series

    paths: list[Path] = write_series(
        folder,
        n,
        fmt="netcdf4",
        steps=FILE_SPEC["steps"],
        ny=FILE_SPEC["ny"],
        nx=FILE_SPEC["nx"],
        time_chunk=FILE_SPEC["chunks"][0],
        dtype="f4",
        prefix="f",
    )
    # write_series names files f000.nc, f001.nc, ...: past 1000 names would stop sorting by time,
    # and icepipe orders by time while open_virtual_mfdataset(combine="nested") keeps list order.
    if [p.name for p in paths] != sorted(p.name for p in paths):
        raise ValueError(f"file names of a {n}-file series do not sort in time order")
    return paths


def timed(runner: Method, files: list[Path], repo: Path, client: Any) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    info = runner(files, repo, client)
    return time.perf_counter() - t0, info


def write_results(path: Path, out: dict[str, Any]) -> None:
    """Write a benchmark's JSON results to ``path`` (its folder made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


def machine_info() -> dict[str, Any]:
    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    mem = None
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {
            p: ver(p)
            for p in (
                "icepipe",
                "icechunk",
                "virtualizarr",
                "dask",
                "distributed",
                "xarray",
                "zarr",
                "obstore",
                "h5py",
                "numpy",
            )
        },
    }


def source_state() -> dict[str, Any]:
    """Which icepipe code was measured: where it was imported from, its commit, local changes."""

    package = Path(icepipe.__file__).resolve().parent
    root = package.parents[1]  # src/icepipe -> the checkout

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", str(package)) or ""
    return {
        "package": str(package),
        "commit": commit.strip() if commit else None,
        # Porcelain lines are "XY path": two status letters, a space, the path.
        "uncommitted": [line[3:] for line in dirty.splitlines() if line.strip()],
    }


# --- the benchmark -----------------------------------------------------------------------------


def bench_n(
    n: int,
    files: list[Path],
    workdir: Path,
    client: Any,
    *,
    repeats: int,
    budget: float,
    methods: tuple[str, ...] = METHODS,
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {m: [] for m in methods}
    stages: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    verified: dict[str, Any] | None = None
    cut = False
    t_start = time.perf_counter()
    for rep in range(repeats):
        repos: dict[str, Path] = {}
        # Interleaved (A, B, C, A, B, C, ...) so that machine noise hits every method alike.
        for method in methods:
            repo = workdir / "repos" / f"n{n}-r{rep}-{method}"
            seconds, info = timed(RUNNERS[method], files, repo, client)
            samples[method].append(seconds)
            stages[method].append(info["stages"])
            repos[method] = repo
            print(
                f"  N={n:<5} repeat {rep + 1}/{repeats}  {method:<10} {seconds:7.2f} s", flush=True
            )
        if verified is None:
            verified = verify(n, files, repos)
            print(f"  N={n:<5} read-back check: all three repositories are equal", flush=True)
        for repo in repos.values():
            shutil.rmtree(repo, ignore_errors=True)
        round_seconds = sum(samples[m][-1] for m in methods)  # without the read-back check
        elapsed = time.perf_counter() - t_start
        if rep + 1 < repeats and elapsed + round_seconds > budget:
            cut = True
            print(
                f"  N={n}: stopping after {rep + 1} of {repeats} repeats "
                f"(another would exceed the {budget:.0f} s budget)",
                flush=True,
            )
            break
    ice = statistics.median(samples["icepipe"])
    table: dict[str, Any] = {}
    for method in methods:
        med = statistics.median(samples[method])
        table[method] = {
            "seconds": [round(s, 4) for s in samples[method]],
            "median_seconds": round(med, 4),
            "files_per_second": round(n / med, 2),
            "ratio_vs_icepipe": round(med / ice, 3),
            "stages": stages[method],
        }
    return {
        "n_files": n,
        "repeats_planned": repeats,
        "repeats_done": len(samples["icepipe"]),
        "cut_by_budget": cut,
        "seconds_total": round(time.perf_counter() - t_start, 2),
        "verified": verified,
        "methods": table,
    }


def bench_scan_core(files: list[Path], *, repeats: int) -> dict[str, Any]:
    """Files/s of icepipe's scan task (``scan_files``, the function the workers run) in this
    one process: the HDF5 chunk-index route against VirtualiZarr's parser route, interleaved,
    on the same files. Templates are dropped before each run, so the index route pays its
    first file's slow scan every time."""
    from icepipe.model import SourceFile
    from icepipe.sources import quick
    from icepipe.sources.formats import hdf5_index, netcdf4
    from icepipe.sources.formats.base import ScanOptions
    from icepipe.sources.scan import scan_files

    options = ScanOptions(format="netcdf4")
    sources = [SourceFile(f"file://{p}", p.stat().st_size, str(p.stat().st_mtime)) for p in files]
    scan_files(sources[:4], options)  # imports, first use
    samples: dict[str, list[float]] = {"parser": [], "index": []}
    for rep in range(repeats):
        for route in ("parser", "index"):
            netcdf4.INDEXED_SCANS = route == "index"
            hdf5_index.forget_templates()
            quick.forget()
            gc.collect()
            t0 = time.perf_counter()
            out = scan_files(sources, options)
            seconds = time.perf_counter() - t0
            if any(isinstance(r, Exception) for r in out):
                raise RuntimeError(f"{route}: a file failed to scan")
            samples[route].append(seconds)
            print(
                f"  scan-core repeat {rep + 1}/{repeats}  {route:<7} "
                f"{len(files) / seconds:7.1f} files/s",
                flush=True,
            )
    netcdf4.INDEXED_SCANS = True
    med = {r: statistics.median(v) for r, v in samples.items()}
    return {
        "n_files": len(files),
        "repeats": repeats,
        "seconds": {r: [round(x, 4) for x in v] for r, v in samples.items()},
        "files_per_second": {r: round(len(files) / m, 1) for r, m in med.items()},
        "index_speedup": round(med["parser"] / med["index"], 2),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'N':>6}  {'method':<14} {'median s':>9} {'files/s':>9} {'vs icepipe':>10}  repeats"
    print()
    print(header)
    print("-" * len(header))
    for res in results:
        for method, m in res["methods"].items():
            print(
                f"{res['n_files']:>6}  {method:<14} {m['median_seconds']:>9.2f} "
                f"{m['files_per_second']:>9.1f} {m['ratio_vs_icepipe']:>9.2f}x  "
                f"{res['repeats_done']}"
            )
    print("vs icepipe = method median / icepipe median: above 1 means icepipe is faster.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=100 only, 1 repeat")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "scan.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds per N after which no further repeat starts (default: %(default)s)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of files (default: 100 1000)")
    parser.add_argument("--repeats", type=int, help="repeats per N (default: 3)")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, help="methods to run (default: all)"
    )
    parser.add_argument(
        "--scan-core",
        type=int,
        default=500,
        metavar="N",
        help="files of the one-process scan comparison (index vs parser route; 0: skip)",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} already; other processes will add noise")
    sizes = args.sizes or ([100] if args.quick else [100, 1000])
    repeats = args.repeats or (1 if args.quick else 3)
    methods = tuple(m for m in METHODS if m in (args.methods or METHODS))
    if "icepipe" not in methods:
        parser.error("--methods must include icepipe (the reference of every ratio)")

    from icepipe.execute import open_client

    t_total = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "scan",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "icepipe_source": source_state(),
        "config": {
            "files": FILE_SPEC,
            "workers": WORKERS,
            "threads_per_worker": 1,
            "methods": {
                "icepipe": "icepipe.run(pipeline, client=client), format: netcdf4",
                "icepipe-parser": "the same, files scanned by VirtualiZarr's HDFParser only",
                "vz-serial": "open_virtual_mfdataset(parallel=False) + vz.to_icechunk + commit",
                "vz-dask": "open_virtual_mfdataset(parallel='dask') + vz.to_icechunk + commit",
            },
            "order": "interleaved per repeat: " + ", ".join(methods),
            "statistic": "median",
        },
    }
    with tempfile.TemporaryDirectory(prefix="icepipe-bench-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        series = {n: generate(workdir / f"src-{n}", n) for n in sizes}
        warm_files = generate(workdir / "src-warmup", WARMUP_FILES)
        out["generate_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"generated {', '.join(map(str, sizes))} files in {out['generate_seconds']} s")
        if args.scan_core:
            core_files = generate(workdir / "src-core", args.scan_core)
            out["scan_core"] = bench_scan_core(core_files, repeats=max(repeats, 3))

        # Another Dask cluster on this machine holding port 8787 is harmless here.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        t0 = time.perf_counter()
        with open_client(workers=WORKERS) as (client, _info):
            out["cluster_startup_seconds"] = round(time.perf_counter() - t0, 2)
            print(f"cluster of {WORKERS} workers up in {out['cluster_startup_seconds']} s")
            # Untimed: imports and first-use costs on the workers and here would otherwise be
            # charged to whichever method happens to run first.
            warmup: dict[str, float] = {}
            for method in methods:
                seconds, _ = timed(
                    RUNNERS[method], warm_files, workdir / "repos" / f"warmup-{method}", client
                )
                warmup[method] = round(seconds, 3)
            out["warmup_seconds"] = warmup
            results = [
                bench_n(
                    n,
                    series[n],
                    workdir,
                    client,
                    repeats=repeats,
                    budget=args.budget,
                    methods=methods,
                )
                for n in sizes
            ]
    out["results"] = results
    # Other processes on the machine distort every method; a high load here means re-run.
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["total_seconds"] = round(time.perf_counter() - t_total, 1)

    print_table(results)
    if "scan_core" in out:
        core = out["scan_core"]
        fps = core["files_per_second"]
        print(
            f"\nscan task, one process, {core['n_files']} files (median of {core['repeats']}): "
            f"index route {fps['index']} files/s, parser route {fps['parser']} files/s, "
            f"{core['index_speedup']}x"
        )
    write_results(args.out, out)
    print(f"\nwrote {args.out} (total {out['total_seconds']} s)")
    return 0


if __name__ == "__main__":  # spawned Dask workers re-import this module
    sys.exit(main())
