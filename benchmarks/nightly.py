"""Nightly-run benchmark: does the cost of a run grow with the archive it adds to?

Side by side in one run, medians of ``--repeats`` (methods interleaved per repeat):

* ``empty``: a 1-file run into a fresh repository (the peer every ratio is taken against);
* ``add-1k`` / ``add-10k``: the next file added to a repository already holding 1,000 /
  10,000 files (one file more per repeat);
* ``nothing-1k`` / ``nothing-10k``: a run that finds nothing new in those repositories.

Every run is a fresh ``icepipe run`` process, as a scheduler's nightly job starts it (or, with
``--via library``, ``icepipe.run(pipeline)`` in this process), with no cluster given (icepipe
decides whether it needs one). Each run's wall seconds and CPU seconds (user + system, of the
run's process and its children) are recorded: on a machine other jobs load, the CPU ratios are
the steadier figure. The files are small generated
netCDF4 files (2 daily steps of a 4x8 float32 field, zlib, one chunk per step). The 1,000- and
10,000-file repositories are built once per benchmark run, untimed, by ingesting the files in
batches of ``--batch`` on a 2-worker cluster.

The issue's goals: ``add-10k`` at most 1.2x ``empty``; ``nothing-10k`` at most 1.5 s.

Usage::

    .venv/bin/python benchmarks/nightly.py [--quick] [--out benchmarks/results/nightly.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import icepipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine_info, source_state, write_results  # the scan benchmark's records

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS, NY, NX = 2, 4, 8
FILE_SPEC = {
    "format": "netCDF4 (HDF5), zlib level 1",
    "variables": ["tas"],
    "steps": STEPS,
    "ny": NY,
    "nx": NX,
    "dtype": "float32",
    "chunks": [1, NY, NX],
}
GOALS = {"add-10k / empty": 1.2, "nothing-10k seconds": 1.5}


def write_file(folder: Path, i: int) -> Path:
    """File ``i`` of the series: steps ``2i, 2i+1`` (days since 2000-01-01)."""
    import netCDF4

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"f{i:06d}.nc"
    rng = np.random.default_rng(i)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", NY)
        nc.createDimension("lon", NX)
        t = nc.createVariable("time", "i8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "standard"
        nc.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-60, 60, NY)
        nc.createVariable("lon", "f8", ("lon",))[:] = np.linspace(0, 350, NX)
        v = nc.createVariable(
            "tas", "f4", ("time", "lat", "lon"), zlib=True, complevel=1, chunksizes=(1, NY, NX)
        )
        v.units = "K"
        t[:] = np.arange(i * STEPS, (i + 1) * STEPS)
        v[:] = rng.random((STEPS, NY, NX)).astype("f4")
    return path


#: ``target.config`` of every pipeline (``--split-manifests``: Icechunk manifest splitting).
TARGET_CONFIG: dict[str, Any] = {}


def pipeline_doc(folder: Path, repo: Path) -> dict[str, Any]:
    target: dict[str, Any] = {"repo": str(repo)}
    if TARGET_CONFIG:
        target["config"] = TARGET_CONFIG
    return {
        "name": "bench-nightly",
        "source": {"urls": f"{folder}/*.nc", "concat_dim": "time", "format": "netcdf4"},
        "target": target,
    }


def pipeline_for(folder: Path, repo: Path) -> Any:
    from icepipe.spec import pipeline_from_dict

    return pipeline_from_dict(pipeline_doc(folder, repo), base_dir=folder)


def build(folder: Path, repo: Path, n: int, *, batch: int, client: Any) -> dict[str, Any]:
    """A repository holding files 0..n-1, ingested ``batch`` files per run (untimed setup)."""

    t0 = time.perf_counter()
    commits = 0
    for first in range(0, n, batch):
        for i in range(first, min(n, first + batch)):
            write_file(folder, i)
        result = icepipe.run(pipeline_for(folder, repo), client=client)
        if result.status != "committed":
            raise RuntimeError(f"building {repo}: {result.status}")
        commits += 1
        print(f"  built {repo.name}: {min(n, first + batch)} of {n} files", flush=True)
    return {"files": n, "commits": commits, "seconds": round(time.perf_counter() - t0, 1)}


#: How runs are made: "cli" (a fresh ``icepipe run`` process per run, as a scheduler's nightly
#: job runs it) or "library" (``icepipe.run`` in this process: no start-up, the marginal cost).
VIA = {"how": "cli"}


def timed_run(folder: Path, repo: Path, expect: str) -> dict[str, Any]:
    if VIA["how"] == "cli":
        return _cli_run(folder, repo, expect)

    t0, c0 = time.perf_counter(), time.process_time()
    result = icepipe.run(pipeline_for(folder, repo))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if result.status != expect:
        raise RuntimeError(f"{repo}: expected {expect}, got {result.status}")
    return {
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu, 4),
        "stages": {k: round(v, 4) for k, v in result.stages.items()},
        "cluster": result.cluster,
    }


def _cli_run(folder: Path, repo: Path, expect: str) -> dict[str, Any]:
    spec = repo.parent / f"{repo.name}.yaml"
    spec.write_text(json.dumps(pipeline_doc(folder, repo), indent=2))  # JSON is YAML
    cmd = [sys.executable, "-m", "icepipe.cli", "run", str(spec), "--json", "--progress", "none"]
    cmd += ["--state-dir", str(repo.parent / "state")]
    t0, c0 = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if done.returncode != 0:
        raise RuntimeError(f"{spec}: exit {done.returncode}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    if result["status"] != expect:
        raise RuntimeError(f"{repo}: expected {expect}, got {result['status']}")
    return {
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu, 4),
        "stages": {k: round(v, 4) for k, v in result["stages"].items()},
        "cluster": result["cluster"],
    }


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished child processes (their children
    included): the steadier figure when other jobs load the machine."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 files, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5 (quick: 3)")
    parser.add_argument("--batch", type=int, default=2500, help="files per building run")
    parser.add_argument(
        "--via",
        choices=("cli", "library"),
        default="cli",
        help="a fresh `icepipe run` process per run (default), or icepipe.run in this process",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="build in (and reuse) this folder, not a temp one"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "nightly.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument(
        "--split-manifests",
        type=int,
        default=None,
        metavar="N",
        help="create the repositories with Icechunk manifests split every N chunks along time "
        "(target.config.manifest.splitting; a commit then rewrites the last split only)",
    )
    args = parser.parse_args(argv)
    if args.split_manifests:
        TARGET_CONFIG["manifest"] = {"splitting": [{"dims": {"time": args.split_manifests}}]}
    sizes = {"1k": 100, "10k": 1000} if args.quick else {"1k": 1000, "10k": 10000}
    repeats = args.repeats or (3 if args.quick else 5)
    VIA["how"] = args.via
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} already; other processes will add noise")
    out: dict[str, Any] = {
        "benchmark": "nightly",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "icepipe_source": source_state(),
        "config": {
            "files": FILE_SPEC,
            "sizes": sizes,
            "repeats": repeats,
            "batch": args.batch,
            "via": args.via,
            "target_config": TARGET_CONFIG,
        },
    }
    t_total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="icepipe-nightly-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out["build"] = build_all(work, sizes, batch=args.batch)
        samples = measure(work, sizes, repeats)
    out["samples"] = samples
    out["summary"] = summarise(samples, sizes)
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["total_seconds"] = round(time.perf_counter() - t_total, 1)
    print_table(out["summary"])
    write_results(args.out, out)
    print(f"\nwrote {args.out} (total {out['total_seconds']} s)")
    return 0


def build_all(work: Path, sizes: dict[str, int], *, batch: int) -> dict[str, Any]:
    """Build (or, with ``--keep``, reuse) one repository per size."""
    from icepipe.execute import open_client

    todo = {k: n for k, n in sizes.items() if not (work / f"built-{k}").exists()}
    done: dict[str, Any] = {k: "reused" for k in sizes if k not in todo}
    for key in done:
        built = json.loads((work / f"built-{key}").read_text())
        if built.get("target_config", {}) != TARGET_CONFIG:
            raise SystemExit(
                f"{work}: its repositories were built with target.config "
                f"{built.get('target_config', {})}, not {TARGET_CONFIG}: use another --keep folder"
            )
    if not todo:
        return done
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
    with open_client(workers=2) as (client, _):
        for key, n in todo.items():
            for sub in ("src", "repo"):
                shutil.rmtree(work / f"{sub}-{key}", ignore_errors=True)
            done[key] = build(
                work / f"src-{key}", work / f"repo-{key}", n, batch=batch, client=client
            )
            done[key]["target_config"] = TARGET_CONFIG
            (work / f"built-{key}").write_text(json.dumps(done[key]))
    return done


def measure(work: Path, sizes: dict[str, int], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Interleaved per repeat: empty, add-<size>..., nothing-<size>..."""
    samples: dict[str, list[dict[str, Any]]] = {"empty": []}
    for key in sizes:
        samples[f"add-{key}"] = []
        samples[f"nothing-{key}"] = []
    # Where each repository's next file starts (the folder may hold files of earlier runs).
    nxt = {k: len(list((work / f"src-{k}").glob("*.nc"))) for k in sizes}
    # Untimed: this process's first run pays its imports (xarray, VirtualiZarr, Dask arrays).
    warm = work / "warm-up"
    shutil.rmtree(warm, ignore_errors=True)
    write_file(warm / "src", 0)
    timed_run(warm / "src", warm / "repo", "committed")
    shutil.rmtree(warm, ignore_errors=True)
    for rep in range(repeats):
        empty = work / f"empty-{rep}"
        shutil.rmtree(empty, ignore_errors=True)
        write_file(empty / "src", rep)
        samples["empty"].append(timed_run(empty / "src", empty / "repo", "committed"))
        shutil.rmtree(empty, ignore_errors=True)
        for key in sizes:
            write_file(work / f"src-{key}", nxt[key])
            nxt[key] += 1
            add = timed_run(work / f"src-{key}", work / f"repo-{key}", "committed")
            samples[f"add-{key}"].append(add)
        for key in sizes:
            nothing = timed_run(work / f"src-{key}", work / f"repo-{key}", "nothing-new")
            samples[f"nothing-{key}"].append(nothing)
        print(
            f"  repeat {rep + 1}/{repeats}: "
            + ", ".join(f"{m} {s[-1]['seconds']:.2f}s" for m, s in samples.items()),
            flush=True,
        )
    return samples


def summarise(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> dict[str, Any]:
    medians = {m: statistics.median(s["seconds"] for s in runs) for m, runs in samples.items()}
    cpu = {m: statistics.median(s["cpu_seconds"] for s in runs) for m, runs in samples.items()}
    stages: dict[str, dict[str, float]] = {}
    for m, runs in samples.items():
        names = {k for r in runs for k in r["stages"]}
        stages[m] = {
            k: round(statistics.median(r["stages"].get(k, 0.0) for r in runs), 4) for k in names
        }
    empty = medians["empty"]
    return {
        "sizes": sizes,
        "median_seconds": {m: round(v, 4) for m, v in medians.items()},
        "ratio_vs_empty": {m: round(v / empty, 3) for m, v in medians.items()},
        "median_cpu_seconds": {m: round(v, 4) for m, v in cpu.items()},
        "cpu_ratio_vs_empty": {m: round(v / cpu["empty"], 3) for m, v in cpu.items()},
        "median_stages": stages,
        "goals": {
            "add-10k / empty": {
                "value": round(medians["add-10k"] / empty, 3),
                "target": GOALS["add-10k / empty"],
                "holds": medians["add-10k"] / empty <= GOALS["add-10k / empty"],
            },
            "nothing-10k seconds": {
                "value": round(medians["nothing-10k"], 3),
                "target": GOALS["nothing-10k seconds"],
                "holds": medians["nothing-10k"] <= GOALS["nothing-10k seconds"],
            },
        },
    }


def print_table(summary: dict[str, Any]) -> None:
    sizes = summary["sizes"]
    header = (
        f"{'run':<14} {'files held':>10} {'median s':>9} {'vs empty':>9} {'CPU s':>6} "
        f"{'vs empty':>9}  stages (median s)"
    )
    print()
    print(header)
    print("-" * len(header))
    for m, seconds in summary["median_seconds"].items():
        held = 0 if m == "empty" else sizes[m.split("-")[1]]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(summary["median_stages"][m].items()))
        ratio = summary["ratio_vs_empty"][m]
        cpu, cpu_ratio = summary["median_cpu_seconds"][m], summary["cpu_ratio_vs_empty"][m]
        print(
            f"{m:<14} {held:>10} {seconds:>9.2f} {ratio:>8.2f}x {cpu:>6.2f} {cpu_ratio:>8.2f}x"
            f"  {stages}"
        )
    for name, g in summary["goals"].items():
        verdict = "HOLDS" if g["holds"] else "DOES NOT HOLD"
        print(f"goal {name} <= {g['target']}: {g['value']} {verdict}")
    print(
        "vs empty = median / median of a 1-file run into an empty repository; CPU s = user + "
        "system seconds of the run's process (and its children), steadier under load."
    )


if __name__ == "__main__":  # spawned Dask workers re-import this module
    sys.exit(main())
