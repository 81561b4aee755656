"""execute.py: interrupts held back while a commit or a cluster start runs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from icepipe.execute import interrupts_deferred


def test_interrupts_during_a_commit_let_it_finish_and_during_a_start_are_raised() -> None:
    """A Ctrl-C arriving while Icechunk commits cannot stop the commit: raising it afterwards
    would report "interrupted; nothing was committed" for a run that committed. While the
    cluster starts, it is held back and raised once the start is over."""
    # As in a terminal (a shell's background job would ignore SIGINT).
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupts_deferred(drop=True):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done = True
        assert done
        with pytest.raises(KeyboardInterrupt), interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            started = True  # reached: the interrupt waits for the block's end
        assert started
        # The block failing because of the same interrupt (a worker it killed) is the
        # interrupt, not the failure.
        with pytest.raises(KeyboardInterrupt), interrupts_deferred(drop=True):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            raise RuntimeError("Nanny failed to start.")
    finally:
        signal.signal(signal.SIGINT, saved)


def test_wait_until_idle_waits_for_tasks_already_running(client: object) -> None:
    """What a failed first run does before deleting its repository: tasks a failed compute
    left running on a cluster it did not start still write, so it waits for them."""
    from icepipe.execute import wait_until_idle

    submitted = time.monotonic()
    future = client.submit(time.sleep, 2, pure=False)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not any(_executing(client).values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not wait_until_idle(client, timeout=0.2)  # still running
    assert wait_until_idle(client, timeout=30)
    assert time.monotonic() - submitted >= 1.9  # it waited for the 2 s task
    assert future.result(timeout=30) is None
    assert not any(_executing(client).values())


def _executing(client: object) -> dict[str, int]:
    from icepipe.execute import _executing_count

    return client.run(_executing_count)  # type: ignore[attr-defined,no-any-return]


def test_run_tasks_collect_transforms_each_result_as_it_arrives(client: object) -> None:
    """``transform`` sees each item with its own result, once, and the items carry what it
    returns (the scan stage replaces each batch's copies of the files as the batch arrives)."""
    import operator

    from icepipe.execute import run_tasks_collect

    seen: list[tuple[int, int]] = []

    def transform(item: int, result: int) -> int:
        seen.append((item, result))
        return result * 10

    items = [3, 1, 2, 5]
    done, failed = run_tasks_collect(
        client, operator.neg, items, describe=str, key="neg-transform", transform=transform
    )
    assert done == [(3, -30), (1, -10), (2, -20), (5, -50)]
    assert failed == []
    assert sorted(seen) == [(1, -1), (2, -2), (3, -3), (5, -5)]
