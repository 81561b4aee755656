"""The threads that read repositories for the pages: one bounded pool per application.

A read that takes longer than the request timeout gives its request a 504, but its thread
cannot be stopped: it runs on until its storage answers or times out (for object stores,
``config.storage.timeouts`` and ``retries`` of the repository bound that). A pool of
``workers`` threads with at most ``max_waiting`` reads queued keeps such reads from piling
up: when every thread is taken (by abandoned reads too) and the queue is full, a request is
a 503 "busy" at once instead of yet another thread.

The threads are daemons: stopping the server never waits for a read stuck on its storage.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["Busy", "WorkerPool"]


class Busy(HTTPException):
    """Every worker thread is reading and the queue is full (a 503: try again shortly)."""

    def __init__(self, what: str, pool: WorkerPool) -> None:
        super().__init__(
            status_code=503,
            detail=(
                f"the server is busy: {pool.outstanding} reads are running or waiting (at most "
                f"{pool.workers} at once, {pool.max_waiting} waiting), some of them perhaps "
                f"still waiting for a slow storage after their request gave up; {what} was not "
                "read: try again in a moment"
            ),
            headers={"Retry-After": "5"},
        )


class WorkerPool:
    """At most ``workers`` daemon threads running submitted functions, at most
    ``max_waiting`` more queued; :meth:`submit` refuses beyond that.

    A function counts until it returns, even when whoever submitted it stopped waiting: the
    pool never holds more than ``workers`` threads however many requests time out.
    """

    def __init__(self, workers: int, max_waiting: int, *, name: str = "icepipe-web") -> None:
        if workers < 1 or max_waiting < 0:
            raise ValueError(f"workers >= 1 and max_waiting >= 0; got {workers}, {max_waiting}")
        self.workers = workers
        self.max_waiting = max_waiting
        self.name = name
        self.outstanding = 0  # submitted, not finished nor cancelled
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()

    @property
    def threads(self) -> int:
        """The threads started (never more than ``workers``)."""
        return len(self._threads)

    def submit[T](self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """``fn(*args)`` on a worker thread; ``None`` when the pool is full. Cancelling the
        future before a thread takes it frees its place."""
        future: Future[T] = Future()
        with self._lock:
            if self.outstanding >= self.workers + self.max_waiting:
                return None
            self.outstanding += 1
            # An idle thread takes it, else a new one while there are fewer than ``workers``
            # (every thread there is busy: it waits in the queue).
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self.workers:
                t = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
        future.add_done_callback(self._finished)
        self._queue.put((future, functools.partial(fn, *args)))
        return future

    def _finished(self, _future: Future[Any]) -> None:
        with self._lock:
            self.outstanding -= 1

    def _work(self) -> None:
        while True:
            future, fn = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the request that waits for it
                    future.set_exception(exc)
            del future, fn  # nothing kept alive while idle
            with self._lock:
                self._idle += 1
