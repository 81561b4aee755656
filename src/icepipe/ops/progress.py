"""Progress of a run's stages on stderr: a redrawn bar in a terminal, log lines otherwise.

Task counts come from the Dask scheduler's task groups (whatever computes during a stage: the
scan tasks, or the chunk writes of a native ingest), polled from a background thread. Where
the scheduler cannot run icepipe's polling function (a remote scheduler without icepipe
installed), only the elapsed time is shown.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Literal, TextIO

__all__ = ["ProgressPrinter", "ProgressMode"]

ProgressMode = Literal["auto", "bar", "log", "none"]
_DONE_STATES = ("memory", "erred", "released", "forgotten")
_BAR = 24


def scheduler_task_groups(dask_scheduler: Any) -> dict[str, tuple[int, int]]:
    """Runs on the scheduler: task group name -> (finished tasks, all tasks)."""
    out: dict[str, tuple[int, int]] = {}
    for name, group in list(dask_scheduler.task_groups.items()):
        states = group.states
        done = sum(states.get(s, 0) for s in _DONE_STATES)
        out[str(name)] = (done, sum(states.values()))
    return out


class _Counter:
    """Finished/total tasks of the groups that appeared since the stage started."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ok = client is not None
        self.baseline = set(self._poll() or {}) if self.ok else set()
        self.seen: dict[str, tuple[int, int]] = {}

    def _poll(self) -> dict[str, tuple[int, int]] | None:
        try:
            groups: dict[str, tuple[int, int]] = self.client.run_on_scheduler(scheduler_task_groups)
            return groups
        except Exception:  # a remote scheduler without icepipe, a closing client, ...
            self.ok = False
            return None

    def counts(self) -> tuple[int, int] | None:
        if not self.ok:
            return None
        groups = self._poll()
        if groups is None:
            return None
        for name in set(self.seen) - set(groups):
            _, total = self.seen[name]
            self.seen[name] = (total, total)  # groups vanish once all their tasks are done
        for name, counts in groups.items():
            if name not in self.baseline:
                self.seen[name] = counts
        done = sum(d for d, _ in self.seen.values())
        total = sum(t for _, t in self.seen.values())
        return (done, total) if total else None


class ProgressPrinter:
    """A :class:`icepipe.pipeline.RunObserver` printing stage progress to ``stream``.

    ``mode``: ``bar`` redraws one line per stage (for terminals); ``log`` prints a line every
    ``interval`` seconds (default 10) while a stage runs on the cluster, and one when such a
    long stage ends, so short runs stay quiet; ``none`` prints nothing. ``auto`` is ``bar`` on
    a terminal and ``log`` otherwise.
    """

    def __init__(
        self,
        name: str,
        *,
        mode: ProgressMode = "auto",
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self.name = name
        self.interval = interval if interval is not None else (0.25 if mode == "bar" else 10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stage = ""
        self._t0 = 0.0
        self._counter: _Counter | None = None
        self._printed = False
        self._dashboard_shown = False

    def stage_started(self, stage: str, client: Any) -> None:
        if self.mode == "none":
            return
        self._stage, self._t0 = stage, time.perf_counter()
        self._printed = False
        if client is not None and not self._dashboard_shown:
            self._show_dashboard(client)
        # Only stages that run on the cluster take long enough to watch.
        self._counter = _Counter(client) if client is not None else None
        if client is None and self.mode == "log":
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="icepipe-progress", daemon=True)
        self._thread.start()

    def _show_dashboard(self, client: Any) -> None:
        """Print the Dask dashboard's URL once, when the run's cluster has one."""
        from icepipe.execute import dashboard_link

        self._dashboard_shown = True
        link = dashboard_link(client)
        if link:
            import importlib.util

            # Without bokeh, Dask serves a page asking for it instead of the dashboard.
            hint = (
                ""
                if importlib.util.find_spec("bokeh")
                else " (bokeh is not installed here: pip install 'icepipe[dashboard]')"
            )
            self._write(f"{self.name}: Dask dashboard at {link}{hint}\n")

    def stage_finished(self, stage: str, seconds: float) -> None:
        if self.mode == "none":
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        counts = self._counter.counts() if self._counter is not None else None
        tasks = f", {counts[1]} task(s)" if counts else ""
        if self.mode == "bar":
            self._write(f"\r\x1b[2K{self.name}: {stage} done in {seconds:.2f}s{tasks}\n")
        elif self._printed:  # only stages long enough to have shown progress
            self._write(f"{self.name}: {stage} done in {seconds:.2f}s{tasks}\n")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._render()

    def _render(self) -> None:
        counts = self._counter.counts() if self._counter is not None else None
        elapsed = time.perf_counter() - self._t0
        if self.mode == "bar":
            if counts:
                done, total = counts
                filled = int(_BAR * done / total)
                bar = "#" * filled + "." * (_BAR - filled)
                text = f"{self.name}: {self._stage} [{bar}] {done}/{total} tasks {elapsed:.1f}s"
            else:
                text = f"{self.name}: {self._stage} ... {elapsed:.1f}s"
            self._write(f"\r\x1b[2K{text}")
        else:
            detail = f"{counts[0]}/{counts[1]} tasks" if counts else "running"
            self._write(f"{self.name}: {self._stage} {detail} after {elapsed:.0f}s\n")
            self._printed = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not fail the run
            pass
