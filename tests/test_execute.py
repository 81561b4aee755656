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
