"""Small-run benchmark: a 1-file run end to end through the CLI, vs the same work as a plain script.

Side by side in one run, each a fresh subprocess per sample, medians of ``--repeats``
(methods interleaved per repeat), on one generated netCDF4 file (2 daily steps of a 4x8
float32 field, zlib):

* ``icepipe run``: ``python -m icepipe.cli run p.yaml`` into a fresh repository (virtual);
* ``icepipe run, nothing new``: the same run again on a repository that holds the file already
  (what a nightly run costs on a night without new files: listing, the ledger, no scan);
* ``vz-script``: a Python script doing the same with VirtualiZarr and Icechunk directly
  (``open_virtual_dataset`` + ``vz.to_icechunk`` + ``commit``): the floor of importing the
  stack and writing one file's references;
* ``import icepipe.cli``: ``python -c "import icepipe.cli"``, what every command pays;
* ``python``: ``python -c pass``, the interpreter's own start.

The issue's goal: ``icepipe run`` at most 2.5 s.

Usage::

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--out benchmarks/results/startup.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import icepipe  # noqa: F401  (loads pyproj before ecCodes: see icepipe/__init__.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nightly import write_file  # the nightly benchmark's small netCDF4 file
from run import machine_info, source_state, write_results  # the scan benchmark's records

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 2.5

VZ_SCRIPT = """
import sys
import icechunk
from obspec_utils.registry import ObjectStoreRegistry
from obstore.store import LocalStore
from virtualizarr import open_virtual_dataset
from virtualizarr.parsers import HDFParser

path, repo = sys.argv[1], sys.argv[2]
vds = open_virtual_dataset(
    f"file://{path}",
    registry=ObjectStoreRegistry({"file:///": LocalStore()}),
    parser=HDFParser(),
    decode_times=False,
)
prefix = "file://" + path.rsplit("/", 1)[0] + "/"
config = icechunk.RepositoryConfig.default()
config.set_virtual_chunk_container(
    icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(prefix[7:]))
)
r = icechunk.Repository.create(icechunk.local_filesystem_storage(repo), config=config)
session = r.writable_session("main")
vds.vz.to_icechunk(session.store)
session.commit("one file")
# As icepipe's CLI does: a native runtime can crash while Python tears its modules down (-11).
import os
os._exit(0)
"""


def commands(work: Path) -> dict[str, list[str]]:
    py = sys.executable
    run = [py, "-m", "icepipe.cli", "run", str(work / "p.yaml"), "--progress", "none"]
    return {
        "icepipe run": [*run, "--state-dir", str(work / "state")],
        "icepipe run, nothing new": [*run[:4], str(work / "again.yaml"), *run[5:]],
        "vz-script": [py, "-c", VZ_SCRIPT, str(work / "src" / "f000000.nc"), str(work / "vz")],
        "import icepipe.cli": [py, "-c", "import icepipe.cli"],
        "python": [py, "-c", "pass"],
    }


def sample(cmd: list[str], work: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and what it waited for)."""
    for repo in ("repo", "vz", "state"):
        shutil.rmtree(work / repo, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "startup.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        default=None,
        help="also time `icepipe run` with the icepipe package of this src/ folder (an older "
        "checkout: `git archive COMMIT src | tar -x -C DIR`, then DIR/src)",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} already; other processes will add noise")
    out: dict[str, Any] = {
        "benchmark": "startup",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "icepipe_source": source_state(),
        "config": {"repeats": args.repeats, "statistic": "median", "goal_seconds": GOAL_SECONDS},
    }
    with tempfile.TemporaryDirectory(prefix="icepipe-startup-") as tmp:
        work = Path(tmp)
        write_file(work / "src", 0)
        (work / "p.yaml").write_text(
            "name: one\nsource:\n  urls: src/*.nc\n  concat_dim: time\n  format: netcdf4\n"
            "target:\n  repo: repo\n"
        )
        # Never removed by sample(): ingested by the untimed first start, then nothing new.
        (work / "again.yaml").write_text(
            (work / "p.yaml")
            .read_text()
            .replace("one", "again")
            .replace("repo: repo", "repo: kept")
        )
        cmds = commands(work)
        envs: dict[str, dict[str, str] | None] = {m: None for m in cmds}
        if args.compare_src is not None:
            again = "icepipe run, nothing new"
            cmds = {
                "icepipe run (compared)": cmds["icepipe run"],
                f"{again} (compared)": cmds[again],
                **cmds,
            }
            compared = {**os.environ, "PYTHONPATH": str(args.compare_src)}
            envs["icepipe run (compared)"] = envs[f"{again} (compared)"] = compared
            out["config"]["compare_src"] = str(args.compare_src)
        for method, cmd in cmds.items():  # untimed: the first start fills the OS file cache
            sample(cmd, work, envs[method])
        samples: dict[str, list[float]] = {m: [] for m in cmds}
        cpu: dict[str, list[float]] = {m: [] for m in cmds}
        for rep in range(args.repeats):
            for method, cmd in cmds.items():
                wall, used = sample(cmd, work, envs[method])
                samples[method].append(round(wall, 4))
                cpu[method].append(round(used, 4))
            print(
                f"  repeat {rep + 1}/{args.repeats}: "
                + ", ".join(f"{m} {s[-1]:.2f}s" for m, s in samples.items()),
                flush=True,
            )
    medians = {m: statistics.median(s) for m, s in samples.items()}
    cpu_medians = {m: statistics.median(s) for m, s in cpu.items()}
    out["samples"] = samples
    out["cpu_samples"] = cpu
    out["median_seconds"] = {m: round(v, 4) for m, v in medians.items()}
    # CPU seconds vary less than wall seconds on a loaded machine (no waiting for a core).
    out["median_cpu_seconds"] = {m: round(v, 4) for m, v in cpu_medians.items()}
    out["ratio_vs_vz_script"] = {m: round(v / medians["vz-script"], 3) for m, v in medians.items()}
    out["goal"] = {
        "icepipe run seconds": round(medians["icepipe run"], 3),
        "target": GOAL_SECONDS,
        "holds": medians["icepipe run"] <= GOAL_SECONDS,
    }
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    header = f"{'command':<20} {'median s':>9} {'vs vz-script':>12} {'median CPU s':>13}"
    print()
    print(header)
    print("-" * len(header))
    for m, v in medians.items():
        ratio = out["ratio_vs_vz_script"][m]
        print(f"{m:<20} {v:>9.2f} {ratio:>11.2f}x {cpu_medians[m]:>13.2f}")
    verdict = "HOLDS" if out["goal"]["holds"] else "DOES NOT HOLD"
    print(f"goal icepipe run <= {GOAL_SECONDS} s: {medians['icepipe run']:.2f} s {verdict}")
    write_results(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
