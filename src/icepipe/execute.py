"""Dask: start or connect to a cluster and run picklable tasks on it; hold Ctrl-C back while a
commit or a cluster start must finish (:func:`interrupts_deferred`).

The embedded default is a ``LocalCluster`` of worker *processes* (spawned, since Icechunk
deadlocks after ``fork``); ``scheduler="tcp://host:8786"`` connects to any running
``dask.distributed`` cluster instead, and ``cluster="module:factory"`` calls a function
returning a ``distributed.Client`` or a cluster object (dask-jobqueue's ``SLURMCluster``,
dask-kubernetes' ``KubeCluster``, dask-gateway, Coiled, ...). :func:`choose_cluster` says
which one a run uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icepipe.callables import import_callable
from icepipe.errors import ConfigError, IcepipeError, SourceError, StorageError

__all__ = [
    "CLUSTER_ENV",
    "ClusterChoice",
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
    "check_memory_limit",
    "choose_cluster",
    "dashboard_link",
    "raise_source_errors",
]


class ClusterInfo:
    """What a run ran on, for the summary and the commit metadata (``dashboard``: the Dask
    dashboard's URL, for the run report only)."""

    def __init__(
        self, address: str, n_workers: int, embedded: bool, dashboard: str | None = None
    ) -> None:
        self.address = address
        self.n_workers = n_workers
        self.embedded = embedded
        self.dashboard = dashboard

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.address,
            "workers": self.n_workers,
            "embedded": self.embedded,
        }
        if self.dashboard:
            out["dashboard"] = self.dashboard
        return out


#: Environment variable naming a cluster factory (``module:factory``) for every run.
CLUSTER_ENV = "ICEPIPE_CLUSTER"


@dataclass(frozen=True)
class ClusterChoice:
    """Where a run's Dask work goes, and why (``origin``, for error messages).

    ``kind``: ``"scheduler"`` (connect to ``value``, an address), ``"factory"`` (call
    ``value``, ``module:factory``) or ``"embedded"`` (start a ``LocalCluster``).
    """

    kind: str
    value: str | None = None
    origin: str = ""

    @property
    def configured(self) -> bool:
        """Whether a cluster was named (a run scanning few files then still uses it)."""
        return self.kind != "embedded"


def choose_cluster(
    *,
    scheduler: str | None = None,
    cluster: str | None = None,
    pipeline: str | None = None,
    dask_config: bool = True,
) -> ClusterChoice:
    """The cluster a run uses, first match wins: ``scheduler`` (``--scheduler``), ``cluster``
    (``--cluster``), ``$ICEPIPE_CLUSTER``, the pipeline's ``cluster:``, Dask's own
    ``scheduler-address`` setting (``$DASK_SCHEDULER_ADDRESS`` or a Dask config file; not
    read with ``dask_config=False``, which saves importing Dask), else the embedded
    ``LocalCluster``.

    Raises
    ------
    ConfigError
        Both ``scheduler`` and ``cluster`` are given.
    """
    if scheduler and cluster:
        raise ConfigError(
            f"give either --scheduler ({scheduler!r}) or --cluster ({cluster!r}), not both",
            field="--cluster",
        )
    if scheduler:
        return ClusterChoice("scheduler", scheduler, "--scheduler")
    if cluster:
        return ClusterChoice("factory", cluster, "--cluster")
    if os.environ.get(CLUSTER_ENV):
        return ClusterChoice("factory", os.environ[CLUSTER_ENV], f"${CLUSTER_ENV}")
    if pipeline:
        return ClusterChoice("factory", pipeline, "the pipeline's cluster:")
    if not dask_config:
        return ClusterChoice("embedded")
    import dask.config

    # Dask reads $DASK_SCHEDULER_ADDRESS into its config at import; read it here too, since
    # it may have been set afterwards (a test, a wrapper script).
    address = os.environ.get("DASK_SCHEDULER_ADDRESS") or dask.config.get("scheduler-address", None)
    if address:
        return ClusterChoice("scheduler", str(address), "Dask's scheduler-address setting")
    return ClusterChoice("embedded")


def check_memory_limit(text: str | None) -> None:
    """Check a ``--memory-limit`` before any work (Dask's syntax: ``4GiB``, ``500MB``, a
    fraction of the machine's memory such as ``0.5``, or ``auto``).

    Raises
    ------
    ConfigError
        Dask cannot parse it.
    """
    if text is None:  # before importing distributed: a run with nothing new never needs it
        return
    import logging

    from distributed.worker_memory import parse_memory_limit

    try:
        parse_memory_limit(text, 1, logger=logging.getLogger("icepipe"))
    except ValueError as exc:
        raise ConfigError(
            f"expected a memory size like 4GiB, 500MB, 0.5 (of the machine) or auto; got {text!r}",
            field="--memory-limit",
        ) from exc


def dashboard_link(client: Any) -> str | None:
    """The Dask dashboard's URL, or ``None`` when the scheduler serves none (``bokeh`` is not
    installed there: ``pip install icepipe[dashboard]``)."""
    try:
        link = client.dashboard_link
    except Exception:  # no dashboard service: distributed raises KeyError
        return None
    return str(link) if link else None


#: A run scanning at most this many files, with no cluster given or configured, scans them in
#: its own process: starting a cluster costs seconds (spawning workers that import xarray,
#: VirtualiZarr, ...), scanning a small file tens of milliseconds.
IN_PROCESS_MAX_ITEMS = 32

#: What a run that started no cluster ran on (for the summary and the commit metadata).
IN_PROCESS = ClusterInfo("in-process", 0, embedded=True)


#: Entries of the crash journal left by a process that died are removed after this many
#: seconds (30 days) even when the files they name were never ingested: by then a run has
#: most likely scanned them on workers, and if not, the next crash records them again.
JOURNAL_MAX_AGE = 30 * 24 * 3600


class CrashJournal:
    """What this process is working on in process, on disk until the work returns.

    A parser crashing the process (a segfault in a C library on a corrupt file) leaves no
    error to report: the run just dies, having committed nothing. Its entry stays in the
    journal, and the next runs give the items it names to worker processes
    (:meth:`suspects`), where a crash kills a worker only and the file is named, until
    :meth:`expire` finds the entry no longer needed.

    Entries live under ``<temp dir>/icepipe-crash-journal/<hash of key>/``, one file per
    piece of work (concurrent runs do not share entries).
    """

    def __init__(self, key: str, folder: Path | None = None) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        root = folder or Path(tempfile.gettempdir()) / "icepipe-crash-journal"
        self.root = root
        self.folder = root / digest

    def expire(self, done: Collection[str] = (), *, max_age: float = JOURNAL_MAX_AGE) -> int:
        """Remove the entries no run needs any more; return how many went.

        Only entries of processes that are gone are touched (a running process's entries are
        its work in progress): of this key's, those whose every item is in ``done`` (ingested:
        no run scans them again), and of any key's, those older than ``max_age`` seconds
        (:data:`JOURNAL_MAX_AGE`). An entry naming an item not in ``done`` stays whole: that
        item is still a suspect. Never raises: a journal it cannot read or change stays as it
        is (a kept entry only sends files to workers).
        """
        removed = 0
        oldest = time.time() - max_age
        try:
            keys = [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return 0
        for key in keys:
            for entry in key.glob("*.json"):
                with suppress(OSError, ValueError):
                    if _alive(int(entry.name.split("-", 1)[0])):
                        continue
                    if entry.stat().st_mtime < oldest or (
                        key == self.folder
                        and done
                        and all(str(u) in done for u in json.loads(entry.read_text()))
                    ):
                        entry.unlink()
                        removed += 1
        # Key folders stay, empty or not: removing one could race a run creating its entry.
        return removed

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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this one included; unknown: assumed alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or a platform without signals
        return True
    return True


def describe_client(client: Any) -> ClusterInfo:
    """What an existing ``distributed.Client`` runs on."""
    info = client.scheduler_info()
    n = len(info.get("workers", {}))
    return ClusterInfo(str(info.get("address", "")), n, embedded=False)


def default_workers() -> int:
    """One worker per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def open_client(
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: str | None = None,
    choice: ClusterChoice | None = None,
    search_path: str | None = None,
) -> Iterator[tuple[Any, ClusterInfo]]:
    """Yield a ``distributed.Client`` (and what it runs on), closed on exit.

    Parameters
    ----------
    workers
        Number of worker processes of the embedded ``LocalCluster`` (ignored with another
        cluster).
    scheduler
        Address of an existing scheduler to connect to instead of starting a cluster.
    memory_limit
        Per-worker memory limit of the embedded cluster (Dask's syntax, e.g. ``"2GiB"``).
    choice
        The cluster to use (:func:`choose_cluster`); default: ``scheduler`` if given, else
        Dask's ``scheduler-address`` setting, else the embedded cluster.
    search_path
        Folder searched first for a factory's module (the pipeline file's folder).

    Raises
    ------
    ConfigError
        ``workers`` is not positive; a factory cannot be imported, raises, or returns
        neither a client nor a cluster.
    StorageError
        The scheduler could not be reached.
    """
    choice = choice or choose_cluster(scheduler=scheduler)
    if choice.kind == "scheduler":
        opened = _connect(str(choice.value), choice.origin)
    elif choice.kind == "factory":
        opened = _from_factory(str(choice.value), choice.origin, search_path)
    else:
        opened = _embedded(workers, memory_limit)
    with opened as out:
        prepare_workers(out[0])
        yield out


def prepare_workers(client: Any) -> None:
    """Set up what icepipe's tasks need on every worker of ``client``'s cluster, present and
    future (:mod:`icepipe.worker_setup`); once per cluster (the plugin is registered under
    one name: again is a no-op). A cluster that refuses plugins is left as it is: reads
    needing them fail there, naming the file."""
    from icepipe.worker_setup import PLUGIN_NAME, ReadFilters

    with suppress(Exception):
        client.register_plugin(ReadFilters(), name=PLUGIN_NAME)


@contextmanager
def _connect(address: str, origin: str) -> Iterator[tuple[Any, ClusterInfo]]:
    from distributed import Client

    try:
        client = Client(address, timeout="20s")
    except OSError as exc:
        raise StorageError(
            f"cannot connect to the Dask scheduler at {address!r} (from {origin}): {exc}; "
            "check the address and that the cluster is running"
        ) from exc
    try:
        n = len(client.scheduler_info().get("workers", {}))
        yield client, ClusterInfo(address, n, embedded=False, dashboard=dashboard_link(client))
    finally:
        client.close()


def load_factory(spec: str, origin: str, search_path: str | None = None) -> Callable[[], Any]:
    """Import the cluster factory ``module:function`` or ``module.function``
    (``search_path`` searched first).

    Raises
    ------
    ConfigError
        The module or function cannot be found, or is not callable (``field`` is ``origin``).
    """
    return import_callable(spec, what="cluster factory", field=origin, search_path=search_path)


@contextmanager
def _from_factory(
    spec: str, origin: str, search_path: str | None
) -> Iterator[tuple[Any, ClusterInfo]]:
    """Call the factory; use the ``Client`` it returns, or a client of the cluster object it
    returns. Both are closed at the end (the cluster too: a factory that must leave a
    long-lived cluster running returns ``Client(address)``)."""
    from distributed import Client

    factory = load_factory(spec, origin, search_path)
    try:
        with interrupts_deferred():
            made = factory()
    except (OSError, TimeoutError) as exc:
        raise StorageError(
            f"the cluster factory {spec!r} (from {origin}) could not start or reach its "
            f"cluster: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"the cluster factory {spec!r} raised {type(exc).__name__}: {exc}; fix the factory",
            field=origin,
        ) from exc
    cluster = None if isinstance(made, Client) else made
    if cluster is not None and not hasattr(cluster, "scheduler_address"):
        raise ConfigError(
            f"the cluster factory {spec!r} returned {type(made).__name__}; expected a "
            "distributed.Client or a cluster object (with .scheduler_address)",
            field=origin,
        )
    client: Any = None
    try:
        client = made if cluster is None else Client(cluster)
        info = describe_client(client)
        info.dashboard = dashboard_link(client)
        yield client, info
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            with suppress(Exception):  # closing is best effort: the run's outcome stands
                cluster.close()


@contextmanager
def _embedded(workers: int | None, memory_limit: str | None) -> Iterator[tuple[Any, ClusterInfo]]:
    import dask.config
    from distributed import Client, LocalCluster

    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise ConfigError(f"expected at least 1 worker; got {n_workers}", field="--workers")
    cluster: Any = None
    embedded: Any = None
    stack = ExitStack()
    # LocalCluster closes a worker's nanny for good when no worker of that name is back
    # `lost-worker-timeout` (15 s) after one was lost: a worker crashing again and again (a
    # parser killing its process) then leaves the run waiting forever on no worker at all.
    # The nanny restarts its worker itself; the run closes the cluster when done.
    stack.enter_context(dask.config.set({"distributed.deploy.lost-worker-timeout": "7d"}))
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
        info = ClusterInfo(cluster.scheduler_address, n_workers, embedded=True)
        info.dashboard = dashboard_link(embedded)
        yield embedded, info
    finally:
        if embedded is not None:
            embedded.close()
        if cluster is not None:
            cluster.close()
        stack.close()


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


#: Future states that do not change any more (a "finished" result can still be lost with its
#: worker: it goes back to "pending", and is computed again).
_SETTLED = ("finished", "error", "cancelled")


def _settle(
    client: Any, futures: Sequence[Any], transform: Callable[[int, Any], Any] | None = None
) -> list[tuple[bool, Any]]:
    """Wait until every future has a result or failed; ``(True, result)`` or ``(False,
    exception)`` per future, in order. Results are fetched one at a time and passed through
    ``transform(index, result)`` as they arrive, so that only one raw result is held at once."""
    from concurrent.futures import CancelledError

    from distributed import wait

    got: dict[str, Any] = {}
    while True:
        wait(futures)
        if not all(f.status in _SETTLED for f in futures):
            continue  # a result lost with its worker is being computed again
        try:
            for i, f in enumerate(futures):
                if f.status == "finished" and f.key not in got:
                    result = client.gather(f)
                    got[f.key] = result if transform is None else transform(i, result)
                    del result
        except Exception:  # a result lost meanwhile, and computing it again failed: look again
            continue
        out: list[tuple[bool, Any]] = []
        for f in futures:
            if f.key in got:
                out.append((True, got[f.key]))
            elif f.status == "cancelled":
                out.append((False, CancelledError(f"task {f.key} was cancelled")))
            else:
                out.append((False, f.exception()))
        return out


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
    isolate: bool = True,
    transform: Callable[[T, R], R] | None = None,
    **kwargs: Any,
) -> tuple[list[tuple[T, R]], list[tuple[T, SourceError]]]:
    """Like :func:`run_tasks`, but return the items that failed on their input with their
    errors instead of raising (for ``on_error: skip``).

    A worker that died repeatedly on an item (``KilledWorker``: a parser crashing the process,
    or running out of memory) counts as that item's failure. Dask blames every task a dying
    worker held, so with ``isolate`` (the default) items killed together are run again one at
    a time, and only those that still kill their worker fail. A finished task whose worker
    died afterwards (its result lost) is computed again, not reported.

    ``transform(item, result)``, if given, is applied to each result as it is fetched (one at
    a time), and the returned items carry what it returns: a caller that replaces part of a
    result never holds every raw result at once.

    Raises
    ------
    IcepipeError
        The first error that is not about an input (configuration, storage, ...).
    StorageError
        A task failed unexpectedly.
    """
    from distributed import KilledWorker

    if not items:
        return [], []
    futures = client.map(fn, items, key=[f"{key}-{i}" for i in range(len(items))], **kwargs)
    outcomes = list(zip(items, _settle(client, futures, _step(transform, items)), strict=True))
    killed = [item for item, (_, value) in outcomes if isinstance(value, KilledWorker)]
    if isolate and len(killed) > 1:
        # Tasks queued on a worker die with it: a good item sharing a worker with one that
        # crashes it is blamed too. Run each alone to name only the items that crash.
        again = {
            id(item): _settle(
                client,
                [client.submit(fn, item, key=f"{key}-alone-{i}", **kwargs)],
                _step(transform, [item]),
            )[0]
            for i, item in enumerate(killed)
        }
        outcomes = [(item, again.get(id(item), out)) for item, out in outcomes]
    done = [(item, value) for item, (ok, value) in outcomes if ok]
    failed: list[tuple[T, SourceError]] = []
    other: IcepipeError | None = None
    for item, (ok, exc) in outcomes:
        if ok:
            continue
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


def _step[T, R](
    transform: Callable[[T, R], R] | None, items: Sequence[T]
) -> Callable[[int, R], R] | None:
    """``transform`` as :func:`_settle` calls it: with the index of the item in ``items``."""
    if transform is None:
        return None
    apply = transform
    return lambda i, result: apply(items[i], result)


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
