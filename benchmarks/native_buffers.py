"""A native write task's CPU per chunk with and without icepipe's buffer reuse, each variant in
a process of its own (as a Dask worker: ``MALLOC_TRIM_THRESHOLD_=65536``, tasks on a thread).

``native_breakdown.py`` interleaves its rows in one process, which suits the parts of a task but
not the allocator: what one row leaves in glibc's heaps changes the next row's page faults.
Here every run is a fresh process writing ``--chunks`` chunks of ``native.py``'s dataset
(24 x 360 x 720 float32, zstd level 3, generated per chunk) from a one-thread pool:

* ``icechunk``: ``array[block] = chunk`` into a fork of an Icechunk session on local disk (the
  task body of ``icechunk.xarray.to_icechunk``);
* ``icepipe``: the same through icepipe's write target
  (:class:`icepipe.repository.native.BufferReusingTarget`, the task body of
  ``icepipe.to_icechunk``);
* ``to_zarr``: the same into a zarr ``LocalStore`` (the task body of ``to_zarr``).

Variants run interleaved and rotated per repeat; the table shows medians of CPU seconds and
minor page faults per chunk.

Usage::

    .venv/bin/python benchmarks/native_buffers.py [--repeats 5] [--chunks 16] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from run import machine_info, source_state, write_results  # benchmarks/run.py

REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("icechunk", "icepipe", "to_zarr")


def _array(variant: str, folder: Path, n_chunks: int) -> Any:
    import numpy as np
    import zarr
    import zarr.codecs

    from native import A_CHUNKS, ZSTD_LEVEL

    shape = (A_CHUNKS[0] * n_chunks, A_CHUNKS[1], A_CHUNKS[2])
    spec: dict[str, Any] = dict(
        name="tas",
        shape=shape,
        chunks=A_CHUNKS,
        dtype="float32",
        fill_value=np.nan,
        compressors=[zarr.codecs.ZstdCodec(level=ZSTD_LEVEL)],
    )
    if variant == "to_zarr":
        return zarr.create_array(zarr.storage.LocalStore(folder / "plain.zarr"), **spec)
    import icechunk

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(folder / "repo")))
    session = repo.writable_session("main")
    zarr.create_array(session.store, **spec)
    array = zarr.open_array(session.fork().store, path="tas", mode="a")
    if variant == "icepipe":
        from icepipe.repository.native import BufferReusingTarget

        return BufferReusingTarget(array)
    return array


def child(variant: str, n_chunks: int) -> dict[str, float]:
    """In the child process: write ``n_chunks`` chunks, return CPU s and faults per chunk."""
    from native import A_CHUNKS, field

    with tempfile.TemporaryDirectory(prefix="icepipe-bench-buffers-") as tmp:
        target = _array(variant, Path(tmp), n_chunks)
        step = A_CHUNKS[0]

        def task(i: int) -> None:  # a Dask task: compute the block, store it
            block = field((i * step, (i + 1) * step), (0, A_CHUNKS[1]), (0, A_CHUNKS[2]), var=0)
            target[i * step : (i + 1) * step] = block

        with ThreadPoolExecutor(1) as pool:  # a worker's task thread
            pool.submit(task, 0).result()  # warm up (imports, first allocations)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.process_time()
            for i in range(1, n_chunks):
                pool.submit(task, i).result()
            cpu = time.process_time() - t0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {"cpu_per_chunk": cpu / (n_chunks - 1), "faults_per_chunk": faults / (n_chunks - 1)}


def run_child(variant: str, n_chunks: int) -> dict[str, float]:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}  # as Dask's nanny
    done = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--chunks", str(n_chunks)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant}: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant (default 5)")
    parser.add_argument("--chunks", type=int, default=16, help="chunks per run (default 16)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results" / "native_buffers.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.child:
        warnings.filterwarnings("ignore")
        print(json.dumps(child(args.child, args.chunks)))
        return 0
    machine = machine_info()
    samples: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for rep in range(args.repeats):
        for variant in VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]:
            samples[variant].append(run_child(variant, args.chunks))
            s = samples[variant][-1]
            print(
                f"  repeat {rep + 1}/{args.repeats}  {variant:<9} "
                f"{s['cpu_per_chunk']:.4f} CPU s/chunk  {s['faults_per_chunk']:8.0f} faults/chunk",
                flush=True,
            )
    med = {
        v: {k: statistics.median(s[k] for s in samples[v]) for k in samples[v][0]} for v in VARIANTS
    }
    print(f"\nper 24.9 MB chunk (generate + zstd 3 + store), medians of {args.repeats} runs")
    print(f"{'variant':<10} {'CPU s':>7} {'faults':>8} {'CPU vs icepipe':>15}")
    for v in VARIANTS:
        ratio = med[v]["cpu_per_chunk"] / med["icepipe"]["cpu_per_chunk"]
        cpu, faults = med[v]["cpu_per_chunk"], med[v]["faults_per_chunk"]
        print(f"{v:<10} {cpu:7.4f} {faults:8.0f} {ratio:14.3f}x")
    out = {
        "benchmark": "native_buffers",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "icepipe_source": source_state(),
        "chunks_per_run": args.chunks,
        "repeats": args.repeats,
        "samples": samples,
        "medians": med,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    write_results(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
