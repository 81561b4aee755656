"""Dask: start or connect to a cluster and run picklable tasks on it; hold Ctrl-C back while a
commit or a cluster start must finish (:func:`interrupts_deferred`).

The embedded default is a ``LocalCluster`` of worker *processes* (spawned, since Icechunk
deadlocks after ``fork``); ``scheduler="tcp://host:8786"`` connects to any running
``dask.distributed`` cluster instead (dask-jobqueue, Kubernetes, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from icepipe.errors import ConfigError, IcepipeError, SourceError, StorageError

__all__ = [
    "IN_PROCESS",
    "IN_PROCESS_MAX_ITEMS",
    "ClusterInfo",
    "CrashJournal",
    "default_workers",
    "describe_client",
    "interrupts_deferred",
    "open_client",
    "run_tasks",
    "run_tasks_collect",
    "wait_until_idle",
    "batches",
    "raise_source_errors",
]


class ClusterInfo:
    """What a run ran on, for the summary and the commit metadata."""

    def __init__(self, address: str, n_workers: int, embedded: bool) -> None:
        self.address = address
        self.n_workers = n_workers
        self.embedded = embedded

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "workers": self.n_workers, "embedded": self.embedded}


#: A run scanning at most this many files, with no cluster given or configured, scans them in
#: its own process: starting a cluster costs seconds (spawning workers that import xarray,
#: VirtualiZarr, ...), scanning a small file tens of milliseconds.
IN_PROCESS_MAX_ITEMS = 32

#: What a run that started no cluster ran on (for the summary and the commit metadata).
IN_PROCESS = ClusterInfo("in-process", 0, embedded=True)


class CrashJournal:
    """What this process is working on in process, on disk until the work returns.

    A parser crashing the process (a segfault in a C library on a corrupt file) leaves no
    error to report: the run just dies, having committed nothing. Its entry stays in the
    journal, and the next runs give the items it names to worker processes
    (:meth:`suspects`), where a crash kills a worker only and the file is named.

    Entries live under ``<temp dir>/icepipe-crash-journal/<hash of key>/``, one file per
    piece of work (concurrent runs do not share entries).
    """

    def __init__(self, key: str, folder: Path | None = None) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        root = folder or Path(tempfile.gettempdir()) / "icepipe-crash-journal"
        self.folder = root / digest

    def usable(self) -> bool:
        """Whether entries can be written (else the work must not run in process)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.folder, os.W_OK)

    def suspects(self) -> set[str]:
        """The items of work that never returned (their process died)."""
        out: set[str] = set()
        if not self.folder.is_dir():
            return out
        for entry in self.folder.glob("*.json"):
            with suppress(OSError, ValueError):
                out.update(str(u) for u in json.loads(entry.read_text()))
        return out

    @contextmanager
    def working_on(self, items: Sequence[str]) -> Iterator[None]:
        """Record ``items`` for the duration of the block (kept if the process dies in it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = self.folder / f"{os.getpid()}-{uuid.uuid4().hex}.json"
        entry.write_text(json.dumps(list(items)))
        try:
            yield
        finally:
            entry.unlink(missing_ok=True)


def describe_client(client: Any) -> ClusterInfo:
    """What an existing ``distributed.Client`` runs on."""
    info = client.scheduler_info()
    return ClusterInfo(str(info.get("address", "")), len(info.get("workers", {})), embedded=False)


def default_workers() -> int:
    """One worker per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def open_client(
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: str | None = None,
) -> Iterator[tuple[Any, ClusterInfo]]:
    """Yield a ``distributed.Client`` (and what it runs on), closed on exit.

    Parameters
    ----------
    workers
        Number of worker processes of the embedded ``LocalCluster`` (ignored with ``scheduler``).
    scheduler
        Address of an existing scheduler to connect to instead of starting a cluster.
    memory_limit
        Per-worker memory limit of the embedded cluster (Dask's syntax, e.g. ``"2GiB"``).

    Raises
    ------
    ConfigError
        ``workers`` is not positive.
    StorageError
        The scheduler could not be reached.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise StorageError(
                f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}; check --scheduler "
                "and that the cluster is running"
            ) from exc
        try:
            n = len(client.scheduler_info().get("workers", {}))
            yield client, ClusterInfo(scheduler, n, embedded=False)
        finally:
            client.close()
        return
    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise ConfigError(f"expected at least 1 worker; got {n_workers}", field="--workers")
    cluster: Any = None
    embedded: Any = None
    try:
        with interrupts_deferred():
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: several clusters may run on one machine
                memory_limit=memory_limit or "auto",
                silence_logs=50,  # logging.CRITICAL: task errors are reported by run_tasks
            )
        embedded = Client(cluster)
        yield embedded, ClusterInfo(cluster.scheduler_address, n_workers, embedded=True)
    finally:
        if embedded is not None:
            embedded.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def interrupts_deferred(*, drop: bool = False) -> Iterator[None]:
    """Hold back Ctrl-C (and SIGTERM) during the block, then raise them (``drop``: ignore
    them: the block finished what the interrupt was meant to stop).

    Used while the embedded cluster starts: interrupting ``LocalCluster()`` halfway leaves a
    cluster the caller never got, so cannot close, and its worker processes print errors at
    exit. A signal received meanwhile is recorded and raised again once the cluster exists
    (Ctrl-C: ``KeyboardInterrupt``, and the caller's ``finally`` closes the cluster). Worker
    processes ignore Ctrl-C themselves (see :mod:`icepipe.cli`). And around a commit
    (``drop=True``): an interrupt arriving while Icechunk commits cannot stop the commit, and
    raising it afterwards would report "interrupted, nothing committed" for a run that did
    commit; the run ends normally instead.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed = False
    try:
        yield
    except Exception:
        if not received:
            raise
        # A worker that got the same Ctrl-C before it could ignore it (in its first tenths
        # of a second) fails the start ("Nanny failed to start"): that is the interrupt.
        failed = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for signum in dict.fromkeys(() if drop else received):
        signal.raise_signal(signum)  # to the handler that was there: KeyboardInterrupt for Ctrl-C
    if failed:
        raise KeyboardInterrupt from None


def run_tasks[T, R](
    client: Any,
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    describe: Callable[[T], str],
    key: str,
    **kwargs: Any,
) -> list[R]:
    """Run ``fn(item, **kwargs)`` for every item on the cluster; results in ``items`` order.

    Every task runs to completion before errors are reported, so a run that fails names *all*
    the bad inputs at once rather than the first one.

    Raises
    ------
    SourceError
        One or more tasks failed on their input (the message names each one).
    IcepipeError
        The first other icepipe error raised by a task.
    StorageError
        A task failed unexpectedly.
    """
    done, failed = run_tasks_collect(client, fn, items, describe=describe, key=key, **kwargs)
    raise_source_errors([e for _, e in failed])
    return [r for _, r in done]


def raise_source_errors(errors: Sequence[SourceError]) -> None:
    """Raise one :class:`SourceError` naming every failed input (nothing when there is none)."""
    if not errors:
        return
    if len(errors) == 1:
        raise errors[0]
    lines = [str(e) for e in errors[:10]]
    more = len(errors) - len(lines)
    raise SourceError(
        f"{len(errors)} source files cannot be ingested:\n  - "
        + "\n  - ".join(lines)
        + (f"\n  ... and {more} more" if more else ""),
        urls=[u for e in errors for u in e.urls],
    )


def batches[T](items: Sequence[T], n_workers: int, *, per_worker: int = 4) -> list[list[T]]:
    """Split ``items`` into about ``per_worker`` batches per worker, of near-equal sizes."""
    n = max(1, min(len(items), max(1, n_workers) * per_worker))
    size, extra = divmod(len(items), n)
    out, i = [], 0
    for b in range(n):
        step = size + (1 if b < extra else 0)
        out.append(list(items[i : i + step]))
        i += step
    return [b for b in out if b]


def run_tasks_collect[T, R](
    client: Any,
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    describe: Callable[[T], str],
    key: str,
    **kwargs: Any,
) -> tuple[list[tuple[T, R]], list[tuple[T, SourceError]]]:
    """Like :func:`run_tasks`, but return the items that failed on their input with their
    errors instead of raising (for ``on_error: skip``).

    A worker that died repeatedly on an item (``KilledWorker``: a parser crashing the process,
    or running out of memory) counts as that item's failure.

    Raises
    ------
    IcepipeError
        The first error that is not about an input (configuration, storage, ...).
    StorageError
        A task failed unexpectedly.
    """
    from distributed import KilledWorker, wait

    if not items:
        return [], []
    futures = client.map(fn, items, key=[f"{key}-{i}" for i in range(len(items))], **kwargs)
    wait(futures)
    ok = [(item, f) for item, f in zip(items, futures, strict=True) if f.status == "finished"]
    results = client.gather([f for _, f in ok]) if ok else []
    done = [(item, r) for (item, _), r in zip(ok, results, strict=True)]
    failed: list[tuple[T, SourceError]] = []
    other: IcepipeError | None = None
    for item, fut in zip(items, futures, strict=True):
        if fut.status == "finished":
            continue
        exc = fut.exception()
        if isinstance(exc, SourceError):
            failed.append((item, exc))
        elif isinstance(exc, KilledWorker):
            failed.append(
                (
                    item,
                    SourceError(
                        f"{describe(item)}: the worker reading it died repeatedly (crash or out "
                        "of memory); check the file, or give workers more memory",
                        url=describe(item),
                    ),
                )
            )
        elif isinstance(exc, IcepipeError):
            other = other or exc
        else:
            other = other or StorageError(
                f"{describe(item)}: task failed unexpectedly: {type(exc).__name__}: {exc}"
            )
    if other is not None:
        raise other
    return done, failed


def wait_until_idle(client: Any, *, timeout: float = 60.0) -> bool:
    """Wait until no worker of ``client``'s cluster is executing a task; False on timeout (or
    when the client is closed or unreachable).

    A failed ``compute`` releases its other tasks, but the ones already executing on workers
    run to their end: their results are dropped, their writes are not. Before deleting what a
    failed run wrote (a first run's repository), wait for them, or a straggling write task
    recreates the folder it writes into after the deletion.
    """
    import time

    if getattr(client, "status", None) != "running":
        return False
    deadline = time.monotonic() + timeout
    while True:
        try:
            busy = client.run(_executing_count)
        except Exception:
            return False
        if not any(busy.values()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _executing_count(dask_worker: Any) -> int:
    """Tasks executing on this worker (run by ``client.run``, outside the task queue)."""
    state = dask_worker.state
    return len(state.executing) + len(state.long_running)
