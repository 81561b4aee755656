"""Native-write benchmark: icepipe vs icechunk's to_icechunk vs plain to_zarr; bounded memory.

Part A (throughput) writes one Dask-backed dataset, generated lazily chunk by chunk on the
workers, three ways on one 2-worker ``LocalCluster``: ``icepipe.to_icechunk`` (repository path,
commit included), ``icechunk.xarray.to_icechunk`` + ``session.commit`` on a fresh repository, and
``ds.to_zarr`` into a plain local Zarr v3 store (the baseline). Every method gets the same zarr
chunks and zstd level 3. Methods run interleaved and rotated; the table reports medians, worker
CPU seconds and the peak RSS of the worker processes. The three outputs are checked equal
(sampled chunks exactly, plus totals).

Part B (bounded memory) runs an icepipe ``mode: native`` pipeline that rechunks generated netCDF4
files, each run on a fresh 2-worker ``LocalCluster``: without a memory limit at full and half the
dataset size and with chunks twice as large (what the workers need), then with 1 GiB and 600 MiB
per worker (whether it completes), plus a reference write that needs no shuffle. Every run
records peak worker RSS, spilled bytes and worker restarts, and is checked against the source.

See ``benchmarks/README.md`` for how to read the output.

Usage::

    .venv/bin/python benchmarks/native.py [--quick] [--repeats N] [--skip-b] [--out PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

import icepipe
from run import (  # benchmarks/run.py: the same machine/source record, the JSON writer
    machine_info,
    source_state,
    write_results,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

WORKERS = 2
METHODS = ("icepipe", "icechunk", "to_zarr")
# Generating the data on the workers costs the same for every method; this row measures it alone
# (compute every chunk, write nothing), so the write cost of each method can be read off.
FLOOR = "generate-only"
SEED = 20260
ZSTD_LEVEL = 3
# 0.25-degree global grid, 6-hourly steps.
NY, NX = 720, 1440
A_CHUNKS = (24, 360, 720)  # zarr chunks = Dask chunks, 24.9 MB of float32 each
A_VARIABLES = ("tas", "ts")
A_STEPS = {"full": 264, "quick": 24}  # 2 variables: 2.19 GB (full), 0.20 GB (quick)
VERIFY_CHUNKS = 20
# Part B: netCDF4 files of B_STEPS_PER_FILE steps, one HDF5 chunk per step (4.1 MB), rewritten
# into zarr chunks that cut each step into 8 pieces and span several files.
B_STEPS_PER_FILE = 12
B_FILES = {"full": 40, "quick": 6}  # 1.99 GB (full), 0.30 GB (quick)
B_CHUNKS = {
    "full": {"time": 48, "lat": 360, "lon": 360},
    "quick": {"time": 24, "lat": 360, "lon": 360},
}
# (label, fraction of the files, target time chunk x, memory limit per worker (None: Dask's
# default share of the machine), writer). The unlimited runs measure what the workers need
# (nothing is spilled or killed); the limited ones whether the write completes within the limit.
# The last row is a reference, not icepipe: the same write without a shuffle (see
# write_aligned_reads), showing what the same limit allows on this machine.
B_RUNS: tuple[tuple[str, float, int, str | None, str], ...] = (
    ("half", 0.5, 1, None, "icepipe"),
    ("full", 1.0, 1, None, "icepipe"),
    ("half-2x-chunks", 0.5, 2, None, "icepipe"),
    ("full-1GiB", 1.0, 1, "1GiB", "icepipe"),
    ("full-600MiB", 1.0, 1, "600MiB", "icepipe"),
    ("ref-full-600MiB", 1.0, 1, "600MiB", "aligned-reads"),
)
SAMPLE_INTERVAL = 0.2


# --- the data: smooth large-scale structure + small noise, deterministic per block -------------


def field(
    t: tuple[int, int], y: tuple[int, int], x: tuple[int, int], *, var: int, seed: int = SEED
) -> np.ndarray:
    """Values of variable ``var`` at steps ``t``, rows ``y``, columns ``x`` (half-open ranges).

    A latitude profile, a seasonal cycle and travelling planetary waves, plus uniform noise seeded
    by the block's origin: float32 like this compresses about as well as real model output
    (zstd level 3: ~1.3x), and any block can be regenerated exactly to check what was written.
    """
    shape = (t[1] - t[0], y[1] - y[0], x[1] - x[0])
    steps = np.arange(*t, dtype=np.float32)[:, None, None]
    lat = np.deg2rad(89.875 - 0.25 * np.arange(*y, dtype=np.float32))[None, :, None]
    lon = np.deg2rad(0.125 + 0.25 * np.arange(*x, dtype=np.float32))[None, None, :]
    out = np.empty(shape, np.float32)
    np.random.default_rng([seed, var, t[0], y[0], x[0]]).random(shape, np.float32, out=out)
    out -= 0.5
    out *= 1.0 + var
    profile = 250.0 + 35.0 * np.cos(lat) + 12.0 * np.sin(2 * np.pi * steps / 1460.0) * np.sin(lat)
    out += profile.astype(np.float32)
    waves = np.empty(shape, np.float32)
    np.multiply(np.sin(3 * lon + 0.02 * steps) * 4.0, np.cos(2 * lat), out=waves)
    out += waves
    np.multiply(np.cos(5 * lon - 0.05 * steps) * 2.0, np.sin(3 * lat), out=waves)
    out += waves
    return out


def _field_block(block_info: dict[Any, Any] | None = None, *, var: int) -> np.ndarray:
    assert block_info is not None  # always passed by map_blocks
    t, y, x = block_info[None]["array-location"]
    return field(t, y, x, var=var)


def make_dataset(steps: int, *, variables: tuple[str, ...] = A_VARIABLES) -> Any:
    """The Part A dataset: each chunk is computed on the worker that writes it, not the client."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    chunks = tuple(
        tuple(min(c, n - i) for i in range(0, n, c))
        for c, n in zip(A_CHUNKS, (steps, NY, NX), strict=True)
    )
    data_vars = {
        name: (
            ("time", "lat", "lon"),
            da.map_blocks(
                _field_block,
                chunks=chunks,
                dtype=np.float32,
                meta=np.empty((0, 0, 0), np.float32),
                var=i,
                name=f"bench-field-{name}-{steps}",
            ),
            {"units": "K", "long_name": f"synthetic field {i}"},
        )
        for i, name in enumerate(variables)
    }
    coords = {
        "time": pd.date_range("2000-01-01", periods=steps, freq="6h"),
        "lat": ("lat", 89.875 - 0.25 * np.arange(NY), {"units": "degrees_north"}),
        "lon": ("lon", 0.125 + 0.25 * np.arange(NX), {"units": "degrees_east"}),
    }
    return xr.Dataset(data_vars, coords=coords, attrs={"title": "icepipe native benchmark"})


def encoding(ds: Any) -> dict[str, dict[str, Any]]:
    """The same zarr layout for every method: A_CHUNKS, zstd level 3."""
    import zarr.codecs

    return {
        str(name): {"chunks": A_CHUNKS, "compressors": [zarr.codecs.ZstdCodec(level=ZSTD_LEVEL)]}
        for name in ds.data_vars
    }


def nbytes(ds: Any) -> int:
    return int(sum(ds[v].nbytes for v in ds.data_vars))


# --- worker memory ------------------------------------------------------------------------------


class WorkerMonitor:
    """Peak RSS and CPU time of the cluster's worker processes, sampled every ``interval`` s.

    The workers of a ``LocalCluster`` are child processes of this one (its nannies run here), so
    they are read with psutil directly rather than through ``client.run``, which would queue
    behind a busy worker's event loop. Children other than the workers present at the start
    (multiprocessing's resource tracker) are ignored, and so are the workers' own helpers;
    workers restarted meanwhile (new pids) are counted in, and reported as restarts.

    CPU seconds (user + system, summed over the workers) are the work a method did, whatever
    else ran on the machine: unlike wall time, they hardly change when other processes compete
    for the cores.
    """

    def __init__(self, client: Any, *, interval: float = SAMPLE_INTERVAL) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = interval
        self.workers = set(client.run(os.getpid).values())
        self._ignore = {p.pid for p in self._me.children()} - self.workers
        self.seen: set[int] = set()
        self.peak = 0
        self.peak_per_pid: dict[int, int] = {}
        self.start = 0
        self.client_peak = 0
        self.samples = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._client_cpu_first = self._cpu(self._me)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-rss", daemon=True)

    def _sample(self) -> int:
        top = 0
        for proc in self._me.children():
            if proc.pid in self._ignore:
                continue
            try:
                rss = int(proc.memory_info().rss)
                cpu = self._cpu(proc)
            except self._psutil.Error:
                continue  # exited between listing and reading
            self._cpu_first.setdefault(proc.pid, cpu if proc.pid in self.workers else 0.0)
            self._cpu_last[proc.pid] = cpu
            self.seen.add(proc.pid)
            self.peak_per_pid[proc.pid] = max(self.peak_per_pid.get(proc.pid, 0), rss)
            top = max(top, rss)
        self.client_peak = max(self.client_peak, int(self._me.memory_info().rss))
        self.samples += 1
        return top

    @staticmethod
    def _cpu(proc: Any) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> WorkerMonitor:
        self.start = self._sample()
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())

    def as_dict(self) -> dict[str, Any]:
        return {
            "peak_worker_rss_mib": _mib(self.peak),
            "worker_rss_at_start_mib": _mib(self.start),
            "peak_rss_per_worker_mib": [_mib(v) for v in self.peak_per_pid.values()],
            "peak_client_process_rss_mib": _mib(self.client_peak),
            "worker_restarts": max(0, len(self.seen) - len(self.workers)),
            "worker_cpu_seconds": round(
                sum(self._cpu_last[p] - self._cpu_first[p] for p in self._cpu_last), 2
            ),
            "client_process_cpu_seconds": round(self._cpu(self._me) - self._client_cpu_first, 2),
            "samples": self.samples,
        }


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def _release_memory() -> None:
    """On a worker: give freed memory back to the OS, so every run starts from the same RSS."""
    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _spilled_bytes(dask_worker: Any) -> int:
    """On a worker: bytes it spilled to disk so far (distributed's ``disk-write`` metric)."""
    return int(
        sum(
            v
            for k, v in dask_worker.digests_total.items()
            if isinstance(k, tuple) and "disk-write" in k and k[-1] == "bytes"
        )
    )


def disk_usage(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += (Path(root) / name).stat().st_size
    return total


# --- Part A: the three methods -------------------------------------------------------------------

Runner = Callable[[Any, Path], dict[str, Any]]


def run_icepipe(ds: Any, out: Path) -> dict[str, Any]:

    snapshot = icepipe.to_icechunk(ds, str(out), encoding=encoding(ds), message="bench: icepipe")
    return {"snapshot": snapshot}


def run_icechunk(ds: Any, out: Path) -> dict[str, Any]:
    import icechunk
    import icechunk.xarray

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(out)))
    session = repo.writable_session("main")
    icechunk.xarray.to_icechunk(ds, session, encoding=encoding(ds))
    return {"snapshot": session.commit("bench: icechunk.xarray.to_icechunk")}


def run_to_zarr(ds: Any, out: Path) -> dict[str, Any]:
    ds.to_zarr(str(out), zarr_format=3, encoding=encoding(ds), mode="w")
    return {}


def run_floor(ds: Any, out: Path) -> dict[str, Any]:
    import dask

    # Reduce every chunk to its maximum on its worker: the generation cost, no write, no transfer.
    dask.compute(*(ds[v].data.max() for v in ds.data_vars))
    return {}


RUNNERS: dict[str, Runner] = {
    "icepipe": run_icepipe,
    "icechunk": run_icechunk,
    "to_zarr": run_to_zarr,
    FLOOR: run_floor,
}


def open_output(method: str, out: Path) -> Any:
    """The written store, read with plain icechunk / zarr (not icepipe)."""
    if method == "to_zarr":
        return str(out)
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(out)))
    return repo.readonly_session(branch="main").store


def verify_a(ds: Any, outputs: dict[str, Path], client: Any) -> dict[str, Any]:
    """Check the three outputs hold the generated data: layout, coordinates, sampled chunks exactly,
    and per-variable totals (computed lazily on the cluster) equal to the source's."""
    import dask
    import xarray as xr
    import zarr

    stores = {m: open_output(m, p) for m, p in outputs.items()}
    groups = {m: zarr.open_group(s, mode="r", zarr_format=3) for m, s in stores.items()}
    layout: dict[str, Any] = {}
    for name in ds.data_vars:
        seen = {
            m: (g[name].shape, g[name].chunks, str(g[name].dtype), repr(g[name].compressors))
            for m, g in groups.items()
        }
        if len(set(seen.values())) != 1:
            raise AssertionError(f"{name}: layouts differ: {seen}")
        layout[str(name)] = {
            "shape": list(seen["icepipe"][0]),
            "chunks": list(seen["icepipe"][1]),
            "dtype": seen["icepipe"][2],
            "compressors": seen["icepipe"][3],
        }
    opened = {
        m: xr.open_zarr(s, consolidated=False, zarr_format=3, chunks={}) for m, s in stores.items()
    }
    for m, other in opened.items():
        for c in ds.coords:
            xr.testing.assert_identical(ds[c].variable, other[c].variable.load())
        if set(other.data_vars) != set(ds.data_vars):
            raise AssertionError(f"{m}: variables {sorted(other.data_vars)}")

    rnd = random.Random(SEED)
    n_blocks = [
        len(range(0, n, c)) for c, n in zip(A_CHUNKS, ds[A_VARIABLES[0]].shape, strict=True)
    ]
    shape = ds[A_VARIABLES[0]].shape
    picks = []
    for _ in range(VERIFY_CHUNKS):
        var = rnd.randrange(len(A_VARIABLES))
        idx = [rnd.randrange(n) for n in n_blocks]
        ranges = [
            (i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, A_CHUNKS, shape, strict=True)
        ]
        expected = field(*ranges, var=var)
        sel = tuple(slice(a, b) for a, b in ranges)
        for m, g in groups.items():
            got = g[A_VARIABLES[var]][sel]
            if not np.array_equal(got, expected):
                raise AssertionError(f"{m}: {A_VARIABLES[var]} chunk {idx} differs from the source")
        picks.append([A_VARIABLES[var], idx])

    # One compute for all totals, so the cluster reads the outputs in parallel.
    keys = [(m, str(v)) for m in ["source", *opened] for v in ds.data_vars]
    arrays = [(ds if m == "source" else opened[m])[v].sum(dtype="float64") for m, v in keys]
    totals = dict(zip(keys, (float(x) for x in dask.compute(*arrays)), strict=True))
    for (m, v), total in totals.items():
        if total != totals[("source", v)]:
            raise AssertionError(
                f"{m}: sum of {v} is {total!r}; the source's is {totals[('source', v)]!r}"
            )
    return {
        "equal": True,
        "layout": layout,
        "chunks_compared_exactly": picks,
        "totals": {v: totals[("source", v)] for v in map(str, ds.data_vars)},
    }


def timed(runner: Runner, ds: Any, out: Path, client: Any) -> tuple[float, dict[str, Any]]:
    client.run(_release_memory)
    gc.collect()
    with WorkerMonitor(client) as mem:
        t0 = time.perf_counter()
        info = runner(ds, out)
        seconds = time.perf_counter() - t0
    return seconds, {**info, **mem.as_dict()}


def part_a(workdir: Path, client: Any, *, steps: int, repeats: int) -> dict[str, Any]:
    from dask.base import get_scheduler

    if get_scheduler() != client.get:
        raise RuntimeError("the benchmark's distributed client is not dask's active scheduler")
    ds = make_dataset(steps)
    size = nbytes(ds)
    order = (*METHODS, FLOOR)
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in order}
    verified: dict[str, Any] | None = None
    for rep in range(repeats):
        outputs: dict[str, Path] = {}
        # Interleaved so that machine noise hits every method alike, and rotated per repeat
        # (A B C D, B C D A, ...) so that no method always runs first or after the same one.
        for method in order[rep % len(order) :] + order[: rep % len(order)]:
            out = workdir / f"a-r{rep}-{method}"
            seconds, info = timed(RUNNERS[method], ds, out, client)
            if method != FLOOR:
                outputs[method] = out
                info["bytes_on_disk"] = disk_usage(out)
            samples[method].append({"seconds": round(seconds, 3), **info})
            print(
                f"  A repeat {rep + 1}/{repeats}  {method:<14} {seconds:7.2f} s  "
                f"{size / seconds / 1e6:7.1f} MB/s  peak worker RSS "
                f"{info['peak_worker_rss_mib']:7.1f} MiB",
                flush=True,
            )
        if verified is None:
            t0 = time.perf_counter()
            verified = verify_a(ds, outputs, client)
            verified["seconds"] = round(time.perf_counter() - t0, 2)
            print(f"  A read-back check: the three outputs are equal ({verified['seconds']} s)")
        for out in outputs.values():
            shutil.rmtree(out, ignore_errors=True)

    methods: dict[str, Any] = {}
    for method in order:
        secs = [s["seconds"] for s in samples[method]]
        med = statistics.median(secs)
        peaks = [s["peak_worker_rss_mib"] for s in samples[method]]
        cpu = [s["worker_cpu_seconds"] for s in samples[method]]
        entry: dict[str, Any] = {
            "seconds": secs,
            "median_seconds": round(med, 3),
            "median_mb_per_s": round(size / med / 1e6, 1),
            "worker_cpu_seconds": cpu,
            "median_worker_cpu_seconds": round(statistics.median(cpu), 2),
            "median_client_process_cpu_seconds": round(
                statistics.median(s["client_process_cpu_seconds"] for s in samples[method]), 2
            ),
            "peak_worker_rss_mib_median": round(statistics.median(peaks), 1),
            "peak_worker_rss_mib_max": max(peaks),
            "repeats": samples[method],
        }
        if method != FLOOR:
            disk = statistics.median(s["bytes_on_disk"] for s in samples[method])
            entry["bytes_on_disk"] = int(disk)
            entry["compression_ratio"] = round(size / disk, 3)
        methods[method] = entry

    def ratio(a: str, b: str) -> dict[str, Any]:
        # Throughput ratio a/b = time of b / time of a: above 1 means a is faster.
        per_repeat = [
            round(sb["seconds"] / sa["seconds"], 3)
            for sa, sb in zip(samples[a], samples[b], strict=True)
        ]
        return {
            "median": round(methods[b]["median_seconds"] / methods[a]["median_seconds"], 3),
            "per_repeat": per_repeat,
            # Paired per repeat (the methods ran back to back): less hit by load that changes
            # between repeats than the ratio of the medians.
            "median_of_ratios": round(statistics.median(per_repeat), 3),
            "repeats_a_faster": sum(r >= 1.0 for r in per_repeat),
            # The same ratio in worker CPU seconds: the work done, little affected by load.
            "cpu_median": round(
                methods[b]["median_worker_cpu_seconds"] / methods[a]["median_worker_cpu_seconds"],
                3,
            ),
        }

    vs_icechunk = ratio("icepipe", "icechunk")
    vs_zarr = ratio("icepipe", "to_zarr")
    return {
        "dataset": {
            "variables": list(A_VARIABLES),
            "shape": [steps, NY, NX],
            "dtype": "float32",
            "bytes": size,
            "chunks": list(A_CHUNKS),
            "n_chunks": int(sum(ds[v].data.npartitions for v in ds.data_vars)),
            "compression": f"zstd level {ZSTD_LEVEL}",
        },
        "repeats": repeats,
        "verified": verified,
        "methods": methods,
        "ratios": {"icepipe_vs_icechunk": vs_icechunk, "icepipe_vs_to_zarr": vs_zarr},
        "targets": {
            "icepipe_at_least_as_fast_as_icechunk": {
                "holds": vs_icechunk["median"] >= 1.0,
                "ratio": vs_icechunk["median"],
                "median_of_ratios": vs_icechunk["median_of_ratios"],
                "cpu_ratio": vs_icechunk["cpu_median"],
                "threshold": 1.0,
            },
            "icepipe_at_least_as_fast_as_to_zarr": {
                "holds": vs_zarr["median"] >= 1.0,
                "ratio": vs_zarr["median"],
                "median_of_ratios": vs_zarr["median_of_ratios"],
                "cpu_ratio": vs_zarr["cpu_median"],
                "threshold": 1.0,
            },
        },
    }


def warm_up(workdir: Path, client: Any) -> dict[str, float]:
    """Untimed: imports and first-use costs here and on the workers, for every method."""
    ds = make_dataset(A_CHUNKS[0], variables=A_VARIABLES[:1]).isel(lat=slice(0, A_CHUNKS[1]))
    out: dict[str, float] = {}
    for method in (*METHODS, FLOOR):
        seconds, _ = timed(RUNNERS[method], ds, workdir / f"warmup-{method}", client)
        out[method] = round(seconds, 3)
    return out


# --- Part B: bounded memory of a native pipeline -------------------------------------------------


def write_source_files(folder: Path, n_files: int) -> list[Path]:
    """netCDF4 files of B_STEPS_PER_FILE steps of ``tas``, one HDF5 chunk per step, uncompressed
    (so that generating 2 GB stays quick; reading compressed files would only add decode time)."""
    import xarray as xr

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        t = (i * B_STEPS_PER_FILE, (i + 1) * B_STEPS_PER_FILE)
        ds = xr.Dataset(
            {"tas": (("time", "lat", "lon"), field(t, (0, NY), (0, NX), var=0), {"units": "K"})},
            coords={
                "time": (
                    "time",
                    6.0 * np.arange(*t),
                    {"units": "hours since 2000-01-01 00:00:00", "calendar": "standard"},
                ),
                "lat": ("lat", 89.875 - 0.25 * np.arange(NY), {"units": "degrees_north"}),
                "lon": ("lon", 0.125 + 0.25 * np.arange(NX), {"units": "degrees_east"}),
            },
        )
        path = folder / f"tas_{i:03d}.nc"
        ds.to_netcdf(path, engine="h5netcdf", encoding={"tas": {"chunksizes": (1, NY, NX)}})
        paths.append(path)
    return paths


def source_values(t: tuple[int, int], y: tuple[int, int], x: tuple[int, int]) -> np.ndarray:
    """What the source files hold at steps ``t``, rows ``y``, columns ``x``: the noise is seeded
    per file, so the files overlapping ``t`` are regenerated whole and cut."""
    first, last = t[0] // B_STEPS_PER_FILE, (t[1] - 1) // B_STEPS_PER_FILE
    whole = np.concatenate(
        [
            field((i * B_STEPS_PER_FILE, (i + 1) * B_STEPS_PER_FILE), (0, NY), (0, NX), var=0)[
                :, y[0] : y[1], x[0] : x[1]
            ]
            for i in range(first, last + 1)
        ]
    )
    start = t[0] - first * B_STEPS_PER_FILE
    return whole[start : start + t[1] - t[0]]


def verify_b(repo: Path, steps: int, chunks: dict[str, int], n_checks: int = 6) -> dict[str, Any]:
    """Shape and chunk grid as asked, and sampled target chunks exactly equal to the source."""
    import icechunk
    import zarr

    store = (
        icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
        .readonly_session(branch="main")
        .store
    )
    arr = zarr.open_group(store, mode="r", zarr_format=3)["tas"]
    want = tuple(chunks[d] for d in ("time", "lat", "lon"))
    if arr.shape != (steps, NY, NX) or arr.chunks != want:
        raise AssertionError(f"tas: shape {arr.shape}, chunks {arr.chunks}; want {want}")
    rnd = random.Random(SEED)
    picks = []
    for _ in range(n_checks):
        idx = [rnd.randrange(-(-n // c)) for n, c in zip(arr.shape, want, strict=True)]
        ranges = [
            (i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, want, arr.shape, strict=True)
        ]
        got = arr[tuple(slice(a, b) for a, b in ranges)]
        if not np.array_equal(got, source_values(*ranges)):
            raise AssertionError(f"tas chunk {idx} differs from the source files")
        picks.append(idx)
    return {"equal": True, "shape": list(arr.shape), "chunks": list(want), "chunks_compared": picks}


def _memory_limit(dask_worker: Any) -> int:
    return int(dask_worker.memory_manager.memory_limit or 0)


def _task_prefixes(dask_scheduler: Any) -> list[str]:
    return sorted(dask_scheduler.task_prefixes)


def write_icepipe(files: list[Path], chunks: dict[str, int], repo: Path, client: Any) -> Any:
    """The measured path: an icepipe ``mode: native`` pipeline, from a YAML file."""
    import yaml

    doc = {
        "name": f"bench-native-{repo.name}",
        "source": {"urls": [str(p) for p in files], "concat_dim": "time", "format": "netcdf4"},
        "mode": "native",
        "chunks": chunks,
        "compression": "zstd",
        "target": {"repo": str(repo)},
    }
    yaml_path = repo.with_suffix(".yaml")
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = icepipe.run(icepipe.load_pipeline(yaml_path), client=client)
    return {k: round(v, 3) for k, v in result.stages.items()}


def write_aligned_reads(files: list[Path], chunks: dict[str, int], repo: Path, client: Any) -> Any:
    """The reference: no shuffle. Each file is opened with Dask chunks that already match the
    target grid in lat/lon (whole files along time), so building a target chunk only
    concatenates the pieces of the few files it spans; then plain icechunk writes it."""
    import icechunk
    import icechunk.xarray
    import xarray as xr
    import zarr.codecs

    with warnings.catch_warnings():
        # "The specified chunks separate the stored chunks": deliberately, see the docstring.
        warnings.filterwarnings("ignore", message=".*separate the stored chunks.*")
        parts = [
            xr.open_dataset(
                p,
                engine="h5netcdf",
                chunks={"time": -1, "lat": chunks["lat"], "lon": chunks["lon"]},
                decode_times=False,
            )
            for p in files
        ]
    ds = xr.concat(
        parts, dim="time", data_vars="minimal", coords="minimal", compat="override", join="override"
    ).chunk({"time": chunks["time"]})
    enc = {
        "tas": {
            "chunks": tuple(chunks[d] for d in ("time", "lat", "lon")),
            "compressors": [zarr.codecs.ZstdCodec(level=ZSTD_LEVEL)],
        }
    }
    session = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(repo))
    ).writable_session("main")
    icechunk.xarray.to_icechunk(ds, session, encoding=enc)
    session.commit("bench: aligned reads")
    return None


B_WRITERS: dict[str, Callable[[list[Path], dict[str, int], Path, Any], Any]] = {
    "icepipe": write_icepipe,
    "aligned-reads": write_aligned_reads,
}


def run_b(
    workdir: Path,
    files: list[Path],
    chunks: dict[str, int],
    label: str,
    *,
    memory_limit: str | None,
    writer: str = "icepipe",
) -> dict[str, Any]:
    """One write of ``files`` into a fresh repository, on a fresh cluster with ``memory_limit``
    per worker (``None``: Dask's default, an equal share of the machine's memory)."""
    from icepipe.execute import open_client

    repo = workdir / f"b-{label}"
    size = len(files) * B_STEPS_PER_FILE * NY * NX * 4
    chunk_bytes = int(np.prod([chunks["time"], chunks["lat"], chunks["lon"]])) * 4
    entry: dict[str, Any] = {
        "label": label,
        "writer": writer,
        "files": len(files),
        "bytes": size,
        "target_chunks": chunks,
        "target_chunk_mib": _mib(chunk_bytes),
        "source_chunk_mib": _mib(NY * NX * 4),
        "memory_limit": memory_limit or "auto",
    }
    ok = False
    with open_client(workers=WORKERS, memory_limit=memory_limit) as (client, _info):
        entry["memory_limit_mib"] = _mib(min(client.run(_memory_limit).values()))
        client.run(_release_memory)
        t0 = time.perf_counter()
        try:
            with WorkerMonitor(client) as mem:
                stages = B_WRITERS[writer](files, chunks, repo, client)
            ok = True
        except Exception as exc:  # a worker killed for memory is a result here, not a crash
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        entry.update(mem.as_dict())
        # Which rechunk Dask chose: "rechunk-transfer"/"rechunk-merge" tasks are its P2P rechunk.
        prefixes = client.run_on_scheduler(_task_prefixes)
        entry["rechunk_tasks"] = [p for p in prefixes if p.startswith("rechunk")]
        try:
            entry["spilled_bytes"] = sum(client.run(_spilled_bytes).values())
        except Exception:  # the metric's layout is distributed-internal; restarts reset it
            entry["spilled_bytes"] = None
    if ok:
        entry.update(
            mb_per_s=round(size / entry["seconds"] / 1e6, 1),
            stages=stages,
            bytes_on_disk=disk_usage(repo),
        )
        entry["verified"] = verify_b(repo, len(files) * B_STEPS_PER_FILE, chunks)
    shutil.rmtree(repo, ignore_errors=True)
    return entry


def part_b(workdir: Path, *, quick: bool) -> dict[str, Any]:
    import dask

    t0 = time.perf_counter()
    files = write_source_files(workdir / "b-src", B_FILES["quick" if quick else "full"])
    generate_seconds = round(time.perf_counter() - t0, 2)
    print(f"  B wrote {len(files)} netCDF4 files in {generate_seconds} s")
    chunks = B_CHUNKS["quick" if quick else "full"]
    runs = []
    # Every run gets a fresh cluster.
    for label, fraction, factor, limit, writer in B_RUNS:
        subset = files[: round(len(files) * fraction)]
        ch = {**chunks, "time": factor * chunks["time"]}
        entry = run_b(workdir, subset, ch, label, memory_limit=limit, writer=writer)
        runs.append(entry)
        print(
            f"  B {label:<15} {entry['bytes'] / 1e9:5.2f} GB  limit {entry['memory_limit']:<7} "
            f"{entry['seconds']:7.2f} s  peak worker RSS {entry['peak_worker_rss_mib']:7.1f} MiB"
            + (f"  FAILED: {entry['error']}" if "error" in entry else ""),
            flush=True,
        )
    shutil.rmtree(workdir / "b-src", ignore_errors=True)
    return {
        "source": {
            "format": "netCDF4 (HDF5), uncompressed, one chunk per step",
            "files": len(files),
            "steps_per_file": B_STEPS_PER_FILE,
            "grid": [NY, NX],
            "dtype": "float32",
            "chunks": [1, NY, NX],
            "bytes": len(files) * B_STEPS_PER_FILE * NY * NX * 4,
            "generate_seconds": generate_seconds,
        },
        "worker_saturation": dask.config.get("distributed.scheduler.worker-saturation"),
        "worker_memory_thresholds": {
            k: dask.config.get(f"distributed.worker.memory.{k}")
            for k in ("target", "spill", "pause", "terminate")
        },
        "runs": runs,
    }


# --- output -------------------------------------------------------------------------------------


def print_tables(a: dict[str, Any], b: dict[str, Any] | None) -> None:
    size = a["dataset"]["bytes"]
    print()
    print(
        f"A. throughput: {size / 1e9:.2f} GB float32, chunks {tuple(a['dataset']['chunks'])}, "
        f"zstd {ZSTD_LEVEL}, {WORKERS} workers x 1 thread, median of {a['repeats']}"
    )
    header = (
        f"{'method':<14} {'median s':>9} {'MB/s':>8} {'icepipe x':>10} {'worker CPU s':>13} "
        f"{'on disk MB':>11} {'ratio':>6} {'peak worker MiB':>16}"
    )
    print(header)
    print("-" * len(header))
    ice = a["methods"]["icepipe"]["median_seconds"]
    for method, m in a["methods"].items():
        disk = f"{m['bytes_on_disk'] / 1e6:11.0f}" if "bytes_on_disk" in m else f"{'-':>11}"
        comp = f"{m['compression_ratio']:6.2f}" if "compression_ratio" in m else f"{'-':>6}"
        vs = f"{m['median_seconds'] / ice:9.2f}x" if method != FLOOR else f"{'-':>10}"
        print(
            f"{method:<14} {m['median_seconds']:>9.2f} {m['median_mb_per_s']:>8.1f} {vs} "
            f"{m['median_worker_cpu_seconds']:>13.1f} {disk} {comp} "
            f"{m['peak_worker_rss_mib_max']:>16.1f}"
        )
    print("icepipe x = method median time / icepipe's: above 1 means icepipe is faster.")
    for name, t in a["targets"].items():
        print(
            f"target {name}: {'HOLDS' if t['holds'] else 'DOES NOT HOLD'} (icepipe/other "
            f"throughput {t['ratio']:.3f}, need >= {t['threshold']}; median of the per-repeat "
            f"ratios {t['median_of_ratios']:.3f}; the same ratio in worker CPU seconds: "
            f"{t['cpu_ratio']:.3f})"
        )
    if b is None:
        return
    print()
    print(
        "B. bounded memory: native pipeline (rechunk + zstd) from netCDF4, peak RSS of either "
        "worker (limit auto = Dask's default share of RAM)"
    )
    header = (
        f"{'run':<15} {'limit':>7} {'GB':>5} {'chunk MiB':>9} {'rechunk':>7} {'seconds':>8} "
        f"{'MB/s':>6} {'peak worker MiB':>16} {'spilled MB':>10} {'restarts':>8}  result"
    )
    print(header)
    print("-" * len(header))
    for r in b["runs"]:
        spilled = "-" if r.get("spilled_bytes") is None else f"{r['spilled_bytes'] / 1e6:.0f}"
        rate = f"{r['mb_per_s']:>6.1f}" if "mb_per_s" in r else f"{'-':>6}"
        outcome = "FAILED: " + r["error"][:70] + "..." if "error" in r else "ok, verified"
        print(
            f"{r['label']:<15} {r['memory_limit']:>7} {r['bytes'] / 1e9:>5.2f} "
            f"{r['target_chunk_mib']:>9.1f} {_rechunk_kind(r['rechunk_tasks']):>7} "
            f"{r['seconds']:>8.1f} {rate} {r['peak_worker_rss_mib']:>16.1f} {spilled:>10} "
            f"{r['worker_restarts']:>8}  {outcome}"
        )
    print(
        "rechunk: p2p = Dask's P2P rechunk (rechunk-transfer tasks), tasks = its task-based one. "
        "ref-* rows are not icepipe: the same write with source chunks aligned to the target "
        "(no shuffle) through plain icechunk, for reference."
    )


def _rechunk_kind(prefixes: list[str]) -> str:
    if any(p.startswith("rechunk-transfer") for p in prefixes):
        return "p2p"
    return "tasks" if prefixes else "none"


def extra_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("pandas", "numcodecs", "h5netcdf", "psutil", "pyyaml"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


@contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # Another Dask cluster on this machine holding port 8787 is harmless here.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        # to_zarr's default consolidated metadata is not part of Zarr v3 (zarr warns each time).
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="~0.2 GB (A) and ~0.3 GB (B) datasets, 1 repeat"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="Part A repeats (default: 3, 1 with --quick)"
    )
    parser.add_argument("--skip-b", action="store_true", help="run Part A (throughput) only")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "native.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    noisy = load > 0.5 * (os.cpu_count() or 1)
    if noisy:
        print(f"warning: load average {load:.1f} already; other processes will add noise")
    mode = "quick" if args.quick else "full"
    repeats = args.repeats or (1 if args.quick else 3)

    from icepipe.execute import open_client

    t_total = time.perf_counter()
    machine = machine_info()
    machine["versions"].update(extra_versions())
    out: dict[str, Any] = {
        "benchmark": "native",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine,
        "icepipe_source": source_state(),
        "config": {
            "workers": WORKERS,
            "threads_per_worker": 1,
            "methods": {
                "icepipe": "icepipe.to_icechunk(ds, path, encoding=..., message=...) (commits)",
                "icechunk": "icechunk.xarray.to_icechunk(ds, session, encoding=...) + commit",
                "to_zarr": "ds.to_zarr(path, zarr_format=3, encoding=..., mode='w')",
                FLOOR: "compute every chunk on the workers, write nothing",
            },
            "order": "interleaved, rotated per repeat: " + ", ".join((*METHODS, FLOOR)),
            "statistic": "median",
            "memory_sampling": f"psutil RSS of every worker process every {SAMPLE_INTERVAL} s",
        },
    }
    with quiet(), tempfile.TemporaryDirectory(prefix="icepipe-bench-native-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        with open_client(workers=WORKERS) as (client, _info):
            out["cluster_startup_seconds"] = round(time.perf_counter() - t0, 2)
            print(f"cluster of {WORKERS} workers up in {out['cluster_startup_seconds']} s")
            out["warmup_seconds"] = warm_up(workdir, client)
            t0 = time.perf_counter()
            a = part_a(workdir, client, steps=A_STEPS[mode], repeats=repeats)
            a["seconds_total"] = round(time.perf_counter() - t0, 1)
        out["throughput"] = a
        b: dict[str, Any] | None = None
        if not args.skip_b:
            t0 = time.perf_counter()
            b = part_b(workdir, quick=args.quick)
            b["seconds_total"] = round(time.perf_counter() - t0, 1)
        out["bounded_memory"] = b
    # Other processes on the machine distort every method; a high load here means re-run.
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["noisy"] = noisy or out["load_average_at_end"][0] > 0.5 * (os.cpu_count() or 1)
    out["total_seconds"] = round(time.perf_counter() - t_total, 1)

    print_tables(a, b)
    if out["noisy"]:
        print(
            f"note: load average {out['machine']['load_average_at_start'][0]} at start, "
            f"{out['load_average_at_end'][0]} at end on {os.cpu_count()} CPUs: "
            "other processes competed; the ratios are noisy"
        )
    write_results(args.out, out)
    print(f"\nwrote {args.out} (total {out['total_seconds']} s)")
    return 0


if __name__ == "__main__":  # spawned Dask workers re-import this module
    sys.exit(main())
