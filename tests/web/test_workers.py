"""The worker threads of ``icepipe web`` are bounded: a read that outlives its request (a 504)
keeps its thread until its storage gives up, and when every thread and the queue are taken a
request is a clean 503 "busy" at once, never one more thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig
from icepipe.web.workers import WorkerPool


def test_pool_holds_at_most_workers_plus_waiting() -> None:
    pool = WorkerPool(2, 1)
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 30) for _ in range(3)]
    assert all(f is not None for f in futures)
    assert pool.submit(gate.wait, 30) is None and pool.outstanding == 3
    assert pool.threads == 2
    # The queued one, cancelled before a thread takes it, frees its place.
    queued = futures[2]
    assert queued is not None and queued.cancel()
    again = pool.submit(lambda: "ran")
    assert again is not None and pool.submit(gate.wait, 30) is None
    gate.set()
    assert again.result(10) == "ran"
    assert [f.result(10) for f in futures[:2] if f is not None] == [True, True]
    deadline = time.monotonic() + 10
    while pool.outstanding and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.outstanding == 0 and pool.threads == 2  # threads are reused, not added
    failing = pool.submit(lambda: 1 / 0)
    assert failing is not None
    with pytest.raises(ZeroDivisionError):
        failing.result(10)


def test_a_full_pool_is_a_503_busy(site: Any) -> None:
    config = WebConfig(
        pipelines=(str(site.pipelines),), catalog=str(site.catalog), workers=1, max_waiting=0
    )
    app = create_app(config)
    gate = threading.Event()
    with TestClient(app) as web:
        assert web.get("/api/repo", params={"name": "demo/nemo"}).status_code == 200
        held = app.state.workers.submit(gate.wait, 30)
        try:
            r = web.get("/api/repo", params={"name": "demo/nemo"})
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert "busy" in r.json()["error"] and "'demo/nemo'" in r.json()["error"]
            page = web.get("/array", params={"name": "demo/nemo", "path": "/sst/tos"})
            assert page.status_code == 503 and "the server is busy" in page.text
        finally:
            gate.set()
        assert held is not None and held.result(10)
        assert web.get("/api/repo", params={"name": "demo/nemo"}).status_code == 200


def test_reads_abandoned_by_504s_are_bounded(
    hanging_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests to a repository whose storage never answers: each a 504 after the request
    timeout, its read going on in its thread until the storage's read timeout; once both
    threads hold such reads, the next request is a 503 at once; when the storage gives up,
    the threads are free again."""
    catalog = tmp_path / "catalog.yaml"
    storage = {"endpoint": hanging_endpoint, "allow_http": True, "anonymous": True}
    timeouts = {"retries": {"max_tries": 1}, "timeouts": {"read_timeout_ms": 2500}}
    entry = {"url": "s3://bucket/slow", "storage": storage, "config": {"storage": timeouts}}
    catalog.write_text(yaml.safe_dump({"repos": {"slow/s3": entry}}))
    monkeypatch.setenv("ICEPIPE_CATALOG", str(catalog))
    config = WebConfig(catalog=str(catalog), request_timeout=0.5, workers=2, max_waiting=0)
    app = create_app(config)
    pool: WorkerPool = app.state.workers
    web = TestClient(app)  # no lifespan: no search index reading the storage too
    statuses = []
    for _ in range(4):
        t0 = time.perf_counter()
        r = web.get("/api/repo", params={"name": "slow/s3"})
        statuses.append((r.status_code, time.perf_counter() - t0))
    assert [s for s, _ in statuses] == [504, 504, 503, 503], statuses
    assert all(dt < 0.4 for s, dt in statuses if s == 503), statuses  # at once
    assert pool.threads == 2 and pool.outstanding == 2
    deadline = time.monotonic() + 30
    while pool.outstanding and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.outstanding == 0  # the storage's read timeout ended them
    assert web.get("/api/repo", params={"name": "slow/s3"}).status_code == 504
    assert pool.threads == 2
