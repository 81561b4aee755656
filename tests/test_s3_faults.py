"""Fault injection for repositories in S3 (issue 11), against real servers on 127.0.0.1.

- a bucket that does not exist (moto) and refused credentials (SeaweedFS, which checks them)
  are permanent: exit 2, a message naming the fix, never raw S3 XML;
- throttling (a small HTTP proxy in front of moto answering ``503 SlowDown`` to the first
  requests, or to all of them) is retried, or exits 5 ("transient: retry");
- an endpoint that accepts connections and never answers fails within the configured
  timeouts instead of hanging.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import S3_SECRET, S3Server, write_series

ICEPIPE = [sys.executable, "-m", "icepipe.cli"]
FAST = {
    "storage": {
        "retries": {"max_tries": 3, "initial_backoff_ms": 10, "max_backoff_ms": 100},
        "timeouts": {
            "connect_timeout_ms": 1000,
            "read_timeout_ms": 1000,
            "operation_timeout_ms": 5000,
            "operation_attempt_timeout_ms": 2000,
        },
    }
}


def _pipeline(
    folder: Path, name: str, repo: str, options: dict[str, Any], *, config: Any = None
) -> Path:
    write_series(folder / "src", 2)
    tgt = {"repo": repo, "group": "g", **options}
    if config:
        tgt["config"] = config
    doc = {"name": name, "source": {"urls": "src/*.nc", "concat_dim": "time"}, "target": tgt}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(
    spec: Path, client: Any, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ICEPIPE, "run", str(spec), "--scheduler", client.scheduler.address, *extra],
        cwd=spec.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _clean(err: str) -> None:
    """What a user reads: no traceback, no raw S3 XML, no Rust context trace."""
    assert "Traceback" not in err, err
    assert "<?xml" not in err and "<Error>" not in err, err
    assert "context:" not in err, err


def test_missing_bucket_is_a_config_error(tmp_path: Path, s3: S3Server, client: Any) -> None:
    spec = _pipeline(tmp_path, "nobucket", "s3://no-such-bucket-xyz/repo", s3.options())
    ran = _run(spec, client)
    assert ran.returncode == 2, ran.stderr  # was 5: retried forever
    assert "bucket does not exist" in ran.stderr and "target.repo" in ran.stderr
    _clean(ran.stderr)
    report = json.loads(next((tmp_path / ".icepipe").glob("runs/*/*.json")).read_text())
    assert report["exit_code"] == 2 and "<?xml" not in report["error"]["message"]


def test_wrong_credentials_are_a_config_error(
    tmp_path: Path, seaweedfs: S3Server, client: Any
) -> None:
    bucket = seaweedfs.bucket("creds")
    spec = _pipeline(tmp_path, "wrongcreds", f"s3://{bucket}/repo", seaweedfs.options())
    wrong = "wrong-secret-" + os.urandom(4).hex()
    ran = _run(spec, client, env={"ICEPIPE_TEST_SECRET": wrong})
    assert ran.returncode == 2, ran.stderr  # was 5
    assert "access denied" in ran.stderr
    _clean(ran.stderr)
    assert wrong not in ran.stderr + ran.stdout and S3_SECRET not in ran.stderr
    # No credentials at all (the standard chain finds none): refused the same way.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ICEPIPE_TEST"))}
    anon = _pipeline(
        tmp_path,
        "nocreds",
        f"s3://{bucket}/repo2",
        {k: v for k, v in seaweedfs.options().items() if not k.endswith("_env")},
        config=FAST,
    )
    denied = subprocess.run(
        [*ICEPIPE, "run", str(anon), "--scheduler", client.scheduler.address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**env, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert denied.returncode == 2, denied.stderr
    _clean(denied.stderr)


# ----------------------------------------------------------------------------------------------
# Throttling and timeouts: a proxy in front of moto, and a server that never answers
# ----------------------------------------------------------------------------------------------

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>1</RequestId></Error>"
)


class _Throttle:
    """An HTTP proxy to an S3 server answering ``503 SlowDown`` to the first ``n`` requests
    (``n=None``: to all of them), forwarding the others unchanged."""

    def __init__(self, upstream: str, n: int | None) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.n, self.seen, self.throttled = n, 0, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    outer.seen += 1
                    throttle = outer.n is None or outer.throttled < outer.n
                    if throttle:
                        outer.throttled += 1
                if throttle:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def throttle(s3: S3Server) -> Iterator[Any]:
    proxies: list[_Throttle] = []

    def make(n: int | None) -> _Throttle:
        proxies.append(_Throttle(s3.endpoint, n))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def test_throttling_is_retried(tmp_path: Path, s3: S3Server, client: Any, throttle: Any) -> None:
    bucket = s3.bucket("throttled")
    proxy = throttle(2)
    spec = _pipeline(
        tmp_path, "throttled", f"s3://{bucket}/repo", s3.options(endpoint=proxy.endpoint)
    )
    ran = _run(spec, client, "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "committed"
    assert proxy.throttled == 2 and proxy.seen > 2


def test_throttling_that_persists_is_transient(
    tmp_path: Path, s3: S3Server, client: Any, throttle: Any
) -> None:
    bucket = s3.bucket("throttled")
    proxy = throttle(None)
    spec = _pipeline(
        tmp_path,
        "slowdown",
        f"s3://{bucket}/repo",
        s3.options(endpoint=proxy.endpoint),
        config=FAST,
    )
    ran = _run(spec, client)
    assert ran.returncode == 5, ran.stderr  # can pass on retry
    assert "SlowDown" in ran.stderr and "retry" in ran.stderr
    _clean(ran.stderr)


def test_endpoint_that_never_answers_fails_within_the_timeouts(
    tmp_path: Path, s3: S3Server, client: Any
) -> None:
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)  # accepts connections (the kernel does), never answers
        endpoint = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        spec = _pipeline(
            tmp_path, "hang", "s3://bucket/repo", s3.options(endpoint=endpoint), config=FAST
        )
        t0 = time.monotonic()
        ran = _run(spec, client)
        seconds = time.monotonic() - t0
    assert ran.returncode == 5, ran.stderr
    assert "timeout" in ran.stderr.lower()
    _clean(ran.stderr)
    assert seconds < 60, seconds  # was: hung (no bound)
