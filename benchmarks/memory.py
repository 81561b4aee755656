"""Client memory per ingested file (issue 14, goal 2: at most 5 KB a file).

For each size N, a fresh Python process starts a 2-worker ``LocalCluster``, warms up with an
untimed run over ``WARM_FILES`` files (more than ``execute.IN_PROCESS_MAX_ITEMS``, in batches
of several files, so the warm-up takes the measured run's route and pays its first-use costs:
the quick netCDF4 scan, packed columns, concatenation from them, a manifest of over 400
references), then runs ``icepipe.run`` over N small generated netCDF4 files (scanned on the
workers in batches, one commit) while a thread samples the process's RSS every 10 ms. The
figure is the peak RSS during the run minus the RSS just before it, over N: what the
coordinator holds per file at its peak (scan results, plan, references, ledger records). The
workers are other processes and are not counted. Beside it the table prints the slope, the
marginal bytes per file between consecutive sizes (what "does not grow per file" means: a
fixed cost divides away, a per-file one does not), and the peak growth after each stage.

The files (2 daily steps of a 4x8 float32 field, zlib, one chunk per step, ~6 KB each) are
made cheaply: one written by netCDF-C, the others copies of its bytes with the time values
patched in place, generated once into a temporary folder (or ``--keep DIR``) and removed at the
end. Smaller sizes are hard links to the first files of the largest.

At the end it measures what a file costs in the commit metadata in ledger format 1 (one JSON
object per file) and 2 (packed columns): the JSON, and the growth of the snapshot file and of
Icechunk's ``repo`` object, which holds every snapshot's metadata.

Usage::

    .venv/bin/python benchmarks/memory.py                      # 1,000 and 10,000 files
    .venv/bin/python benchmarks/memory.py --sizes 1000 10000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import icepipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine_info, source_state  # the scan benchmark's records

GOAL_BYTES_PER_FILE = 5_000
#: Files of the warm-up run: above ``execute.IN_PROCESS_MAX_ITEMS`` (32), like the measured run.
WARM_FILES = 200
STEPS, NY, NX = 2, 4, 8


def write_template(path: Path) -> int:
    """Write file 0 with netCDF-C; return the byte offset of its (contiguous) time values."""
    import h5py
    import netCDF4

    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", STEPS)
        nc.createDimension("lat", NY)
        nc.createDimension("lon", NX)
        t = nc.createVariable("time", "i8", ("time",), contiguous=True)
        t.units, t.calendar = "days since 2000-01-01", "standard"
        nc.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-60, 60, NY)
        nc.createVariable("lon", "f8", ("lon",))[:] = np.linspace(0, 350, NX)
        v = nc.createVariable(
            "tas", "f4", ("time", "lat", "lon"), zlib=True, complevel=1, chunksizes=(1, NY, NX)
        )
        v.units = "K"
        t[:] = np.arange(STEPS)
        v[:] = np.random.default_rng(0).random((STEPS, NY, NX)).astype("f4")
    with h5py.File(path, "r") as f:
        offset = f["time"].id.get_offset()
    if offset is None:
        raise RuntimeError(f"{path}: time values are not stored contiguously")
    return int(offset)


def generate(folder: Path, n: int) -> list[Path]:
    """Files f000000.nc ... : file i holds steps 2i and 2i+1 (days since 2000-01-01)."""
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "f000000.nc"
    offset = write_template(first)
    data = bytearray(first.read_bytes())
    paths = [first]
    for i in range(1, n):
        data[offset : offset + 8 * STEPS] = np.arange(
            i * STEPS, (i + 1) * STEPS, dtype="<i8"
        ).tobytes()
        path = folder / f"f{i:06d}.nc"
        path.write_bytes(data)
        paths.append(path)
    return paths


def check_files(paths: list[Path]) -> None:
    """The patched copies read back with their own times (a few of them, through xarray)."""
    import xarray as xr

    for i in sorted({0, 1, len(paths) // 2, len(paths) - 1}):
        with xr.open_dataset(paths[i], decode_times=False) as ds:
            got = ds["time"].values.tolist()
        if got != list(range(i * STEPS, (i + 1) * STEPS)):
            raise AssertionError(f"{paths[i]}: time {got}")


def linked(source: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in source:
        target = folder / p.name
        if not target.exists():
            os.link(p, target)
    return folder


class PeakRSS:
    """The process's RSS, sampled every ``interval`` seconds on a thread: its peak."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


class StageRSS:
    """A run observer recording the peak RSS growth at the end of each stage (MiB over the RSS
    before the run): where the memory is taken."""

    def __init__(self, peak: PeakRSS, before: int) -> None:
        self.peak, self.before = peak, before
        self.after: dict[str, float] = {}

    def stage_started(self, stage: str, client: Any) -> None:
        pass

    def stage_finished(self, stage: str, seconds: float) -> None:
        rss = max(self.peak.peak, self.peak.process.memory_info().rss)
        # The first "plan" is the select stage (ledger, new files); a stage timed in several
        # pieces in a row (the commit) keeps its last figure.
        name = "select" if stage == "plan" and "scan" not in self.after else stage
        self.after[name] = round((rss - self.before) / 2**20, 1)


def _pipeline(folder: Path, repo: Path) -> Any:
    from icepipe.spec import pipeline_from_dict

    return pipeline_from_dict(
        {
            "name": "bench-memory",
            "source": {"urls": f"{folder}/*.nc", "concat_dim": "time", "format": "netcdf4"},
            "target": {"repo": str(repo)},
        },
        base_dir=folder,
    )


def measure_one(folder: Path, warm: Path, work: Path, workers: int) -> dict[str, Any]:
    """One size, in this (fresh) process: the run's peak RSS growth."""
    import gc

    import psutil
    from distributed import Client, LocalCluster

    n = len(list(folder.glob("*.nc")))
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        icepipe.run(_pipeline(warm, work / "warm-repo"), client=client)
        gc.collect()
        before = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        with PeakRSS() as peak:
            stages = StageRSS(peak, before)
            result = icepipe.run(_pipeline(folder, work / "repo"), client=client, observer=stages)
        seconds = time.perf_counter() - t0
    if result.status != "committed" or len(result.files_new) != n:
        raise RuntimeError(f"ingested {len(result.files_new)} of {n} files")
    growth = peak.peak - before
    return {
        "files": n,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak.peak / 2**20, 1),
        "growth_mib": round(growth / 2**20, 1),
        "growth_bytes": growth,
        "bytes_per_file": round(growth / n),
        "seconds": round(seconds, 2),
        "stages": {k: round(v, 3) for k, v in result.stages.items()},
        # Stages run in order list, select, scan, plan, write, commit: the peak growth so far.
        "growth_mib_after_stage": stages.after,
    }


def ledger_bytes(n: int, folder: Path) -> dict[str, Any]:
    """Bytes a file costs in the commit metadata, ledger format 1 against 2: the JSON, and the
    growth of the snapshot file and of the ``repo`` object (Icechunk 2 keeps every snapshot's
    metadata there and rewrites it at each commit), for ``n`` records like this benchmark's."""
    import icechunk
    import zarr

    from icepipe.repository.ledger import METADATA_KEY, CommitRecord, FileRecord

    files = tuple(
        FileRecord(
            f"file:///tmp/icepipe-memory-abc123/n50000/f{i:06d}.nc",
            6_000 + i % 7,
            f"2026-11-30T09:{i // 3600 % 60:02d}:{i // 60 % 60:02d}.{i * 7919 % 10**6:06d}+00:00",
            start=2 * i,
            length=2,
        )
        for i in range(n)
    )
    record = CommitRecord(version="0", pipeline="bench", mode="virtual", group="", files=files)
    out: dict[str, Any] = {"files": n}
    for version in (1, 2):
        metadata = record.to_metadata(ledger_version=version)
        path = folder / f"ledger-v{version}"
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))

        def sizes_now(path: Path = path) -> tuple[int, int]:
            snaps = sum(p.stat().st_size for p in (path / "snapshots").iterdir())
            return snaps, (path / "repo").stat().st_size

        sizes = {"initial": sizes_now()}
        for commit in ("empty", "ledger"):
            session = repo.writable_session("main")
            zarr.open_group(session.store, path=commit, mode="w")
            session.commit(commit, metadata={METADATA_KEY: metadata} if commit == "ledger" else {})
            sizes[commit] = sizes_now()
        out[f"v{version}"] = {
            "json_bytes_per_file": round(len(json.dumps(metadata)) / n, 1),
            "snapshot_bytes_per_file": round(
                (sizes["ledger"][0] - 2 * sizes["empty"][0] + sizes["initial"][0]) / n, 1
            ),
            "repo_object_bytes_per_file": round((sizes["ledger"][1] - sizes["empty"][1]) / n, 1),
        }
        shutil.rmtree(path, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="generate files here once and keep them")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/memory.json")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child: measure one folder
    parser.add_argument("--warm", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.warm, args.work, args.workers)))
        return 0
    machine = machine_info()
    root = args.keep or Path(tempfile.mkdtemp(prefix="icepipe-memory-"))
    try:
        rows = _measure_all(root, sorted(args.sizes), args.workers)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="icepipe-ledger-") as tmp:
        ledger = ledger_bytes(max(args.sizes), Path(tmp))
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _print_table(rows)
    print(
        f"load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end"
    )
    print(f"commit metadata per file, {ledger['files']} files (ledger format 1 -> 2):")
    for key in ("json_bytes_per_file", "snapshot_bytes_per_file", "repo_object_bytes_per_file"):
        print(f"  {key:<28} {ledger['v1'][key]:>7} -> {ledger['v2'][key]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine, "source": source_state(), "goal_bytes_per_file": 5000}
    args.out.write_text(json.dumps({**record, "sizes": rows, "ledger_bytes": ledger}, indent=2))
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    """Peak growth per file, the slope from the previous size, and the growth per stage."""
    stages = list(dict.fromkeys(k for r in rows for k in r["growth_mib_after_stage"]))
    head = f"{'files':>7} {'peak MiB':>9} {'B/file':>7} {'slope B/file':>13} {'run s':>6}"
    print(f"\n{head}  " + " ".join(f"{s:>7}" for s in stages) + "  (MiB after stage)")
    previous: dict[str, Any] | None = None
    for r in rows:
        slope = "" if previous is None else str(r["slope_bytes_per_file"])
        verdict = "HOLDS" if r["bytes_per_file"] <= GOAL_BYTES_PER_FILE else "DOES NOT HOLD"
        after = r["growth_mib_after_stage"]
        print(
            f"{r['files']:>7} {r['growth_mib']:>9.1f} {r['bytes_per_file']:>7} {slope:>13} "
            f"{r['seconds']:>6.1f}  "
            + " ".join(f"{after.get(s, float('nan')):>7.1f}" for s in stages)
            + f"  goal <= 5000 B/file: {verdict}"
        )
        previous = r


def _with_slopes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``slope_bytes_per_file``: its growth minus the previous size's, over the
    files added (``None`` for the first size)."""
    out, previous = [], None
    for r in rows:
        slope = None
        if previous is not None:
            added = r["files"] - previous["files"]
            slope = round((r["growth_bytes"] - previous["growth_bytes"]) / added)
        out.append({**r, "slope_bytes_per_file": slope})
        previous = r
    return out


def _measure_all(root: Path, sizes: list[int], workers: int) -> list[dict[str, Any]]:
    files_dir = root / "files"
    existing = sorted(files_dir.glob("*.nc"))
    t0 = time.perf_counter()
    paths = existing if len(existing) >= sizes[-1] else generate(files_dir, sizes[-1])
    check_files(paths[: sizes[-1]])
    print(f"{sizes[-1]} files ready in {time.perf_counter() - t0:.1f} s", flush=True)
    warm = linked(paths[:WARM_FILES], root / "warm")
    rows = []
    for n in sizes:
        folder = linked(paths[:n], root / f"n{n}")
        work = Path(tempfile.mkdtemp(prefix=f"run{n}-", dir=root))
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                *("--one", str(folder), "--warm", str(warm)),
                *("--work", str(work), "--workers", str(workers)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        shutil.rmtree(work, ignore_errors=True)
        if done.returncode != 0:
            raise RuntimeError(f"{n} files: {done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {n} files: {row}", flush=True)
        rows.append(row)
    return _with_slopes(rows)


if __name__ == "__main__":
    raise SystemExit(main())
