"""The retry policy shared by pipelines and to_icechunk (icepipe.repository.commits.Retry).

The commit function itself is tested against real repositories in test_native.py (the conflict
matrix) and by the pipeline scenario tests (test_concurrency.py, test_crash_safety.py).
"""

from __future__ import annotations

import pickle
import time

import pytest

from icepipe.repository import Retry


def test_attempts_count_from_one() -> None:
    retry = Retry(3)
    assert list(retry.attempts()) == [1, 2, 3]
    assert [retry.is_last(a) for a in retry.attempts()] == [False, False, True]
    assert list(Retry(1).attempts()) == [1] and Retry(1).is_last(1)


def test_delay_doubles_up_to_the_cap() -> None:
    retry = Retry(10, base=0.1, cap=0.5)
    assert [retry.delay(a) for a in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_wait_sleeps_the_delay_with_jitter() -> None:
    retry = Retry(2, base=0.04, cap=1.0)
    t0 = time.perf_counter()
    retry.wait(1)
    waited = time.perf_counter() - t0
    assert 0.02 <= waited < 0.5  # 0.04 s times a factor in [0.5, 1.5), plus scheduling slack


def test_the_policy_pickles() -> None:
    retry = Retry(4, base=0.2)
    assert pickle.loads(pickle.dumps(retry)) == retry
