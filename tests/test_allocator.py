"""icepipe.allocator: a write task's large buffers reused, and handed back at its end.

Measured in child processes started as Dask's nanny starts its workers
(``MALLOC_TRIM_THRESHOLD_=65536``) or with glibc's defaults: page faults (every page of a fresh
mapping faults once, zeroed by the kernel) and resident memory, read from the kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only"
)

# 20 MiB buffers: 5,120 pages each. Each round allocates, touches and frees three of them, as
# encoding a chunk does (encoded bytes, compressor output, bytes handed to the store).
_CHILD = textwrap.dedent(
    """
    import ctypes, json, resource, sys, threading
    import numpy as np
    from icepipe.allocator import reuse_large_buffers, reuses_buffers

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: one fault per 4 KiB page, not huge pages

    def mapped_alone():
        # Whether a 20 MiB buffer gets a mapping of its own (glibc's mmap threshold below it).
        before = libc.mallinfo2().hblkhd
        a = np.empty(20 * 1024 * 1024, np.uint8)
        grew = libc.mallinfo2().hblkhd - before
        del a
        return grew >= 20 * 1024 * 1024

    def rounds(n):
        for i in range(n):
            for _ in range(3):
                a = np.empty(20 * 1024 * 1024, np.uint8)
                a.fill(i)
                del a

    def scoped(n):
        with reuse_large_buffers():
            with reuse_large_buffers():  # re-entrant
                rounds(n)

    rounds(1)  # warm up numpy
    out = {"reuses": reuses_buffers(), "mapped_before": mapped_alone()}
    with reuse_large_buffers():
        out["mapped_in_scope"] = mapped_alone()
    f0 = faults(); rounds(6); out["plain"] = faults() - f0
    f0 = faults(); scoped(6); out["scoped"] = faults() - f0
    # Thresholds put back: outside a scope each buffer is a fresh mapping again.
    f0 = faults(); rounds(6); out["after"] = faults() - f0
    out["mapped_after"] = mapped_alone()

    # In a thread of its own (a Dask worker's task thread, with a heap of its own): what the
    # scope kept is handed back when it ends.
    def in_thread():
        rss0 = rss_kib()
        with reuse_large_buffers():
            rounds(4)
            out["thread_rss_in_kib"] = rss_kib() - rss0
        out["thread_rss_after_kib"] = rss_kib() - rss0
    t = threading.Thread(target=in_thread); t.start(); t.join()

    # Two threads in scopes at once (a worker with two threads): no error, thresholds back.
    errors = []
    def worker():
        try:
            scoped(4)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
    threads = [threading.Thread(target=worker) for _ in range(2)]
    [t.start() for t in threads]; [t.join() for t in threads]
    out["thread_errors"] = errors
    f0 = faults(); rounds(6); out["after_threads"] = faults() - f0
    print(json.dumps(out))
    """
)

PAGES_PER_ROUND = 3 * 20 * 1024 * 1024 // 4096


def _child(env_extra: dict[str, str]) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_under_dasks_setting_buffers_are_reused_in_a_scope_and_handed_back_after() -> None:
    out = _child({"MALLOC_TRIM_THRESHOLD_": "65536"})
    assert out["reuses"] is True
    plain, scoped, after = (int(out[k]) for k in ("plain", "scoped", "after"))  # type: ignore[call-overload]
    # Without the scope every buffer is a fresh mapping whose pages all fault in (zeroed by the
    # kernel); within it, the first buffers' only.
    assert plain >= 6 * PAGES_PER_ROUND * 0.9, out
    assert scoped < plain / 4, out
    # Outside the scope again, buffers fault as before: the environment's thresholds are back.
    assert after >= 6 * PAGES_PER_ROUND * 0.9, out
    assert int(out["after_threads"]) >= 6 * PAGES_PER_ROUND * 0.9, out  # type: ignore[call-overload]
    # A thread's heap held the buffers during the scope and nothing after it.
    assert int(out["thread_rss_in_kib"]) >= 16 * 1024, out  # type: ignore[call-overload]
    assert int(out["thread_rss_after_kib"]) < 4 * 1024, out  # type: ignore[call-overload]
    assert out["thread_errors"] == [], out
    # glibc's own record: a 20 MiB buffer is mapped alone outside the scope, not inside.
    mapped = (out["mapped_before"], out["mapped_in_scope"], out["mapped_after"])
    assert mapped == (True, False, True), out


def test_with_glibcs_default_thresholds_nothing_changes() -> None:
    # glibc's dynamic threshold already reuses large buffers: the scope leaves malloc alone.
    out = _child({})
    assert out["reuses"] is False
    assert out["thread_errors"] == []


_WRITE_CHILD = textwrap.dedent(
    """
    import json, resource, sys, tempfile, warnings
    warnings.filterwarnings("ignore")
    import ctypes
    ctypes.CDLL("libc.so.6").prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB page faults
    import dask, dask.array as da, xarray as xr
    import icechunk, icechunk.xarray, icepipe

    dask.config.set(scheduler="synchronous")
    data = da.random.default_rng(1).random((32, 1024, 512), chunks=(4, 1024, 512), dtype="f4")
    ds = xr.Dataset({"v": (("t", "y", "x"), data)})
    tmp = sys.argv[1]
    faults = {}
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    data.map_blocks(lambda block: block[:1, :1, :1], chunks=(1, 1, 1)).compute()
    faults["generate"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    for name in ("icechunk-0", "icepipe-0", "icechunk", "icepipe"):  # the first two warm up
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if name.startswith("icepipe"):
            icepipe.to_icechunk(ds, f"{tmp}/{name}")
        else:
            repo = icechunk.Repository.create(icechunk.local_filesystem_storage(f"{tmp}/{name}"))
            session = repo.writable_session("main")
            icechunk.xarray.to_icechunk(ds, session)
            session.commit("plain icechunk")
        faults[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    print(json.dumps(faults))
    """
)


def test_native_writes_reuse_their_buffers_on_dask_workers(tmp_path: Path) -> None:
    """icepipe's write tasks store chunks under the scope; Icechunk's own writer does not:
    the same 8 MiB chunks written both ways, as a Dask worker's process runs them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_TRIM_THRESHOLD_"] = "65536"
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_CHILD, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    faults = json.loads(done.stdout.strip().splitlines()[-1])
    # Over what computing the chunks alone costs: every 8 MiB chunk's encode and store faults
    # ~2,000 pages in through Icechunk's writer, a small part of that through icepipe's.
    icepipe_writes = faults["icepipe"] - faults["generate"]
    icechunk_writes = faults["icechunk"] - faults["generate"]
    assert icechunk_writes > 8 * 1000, faults
    assert icepipe_writes < icechunk_writes / 3, faults
