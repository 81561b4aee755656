"""A real headless browser against a real ``icepipe web`` server, for the browser tests.

- ``browser``: Debian's Chromium (``make browser``; ``scripts/browser.sh``) driven by
  Playwright through ``chromium.launch(executable_path=...)``: Playwright never downloads a
  browser. No Chromium is a failure naming the fix (``ICEPIPE_NO_BROWSER=1`` skips instead).
- ``server``: ``icepipe web PIPELINES --catalog CATALOG --port FREE`` in a subprocess
  against the shared ``site`` (tests/web/conftest.py), ready when ``/api/repos`` answers.
- ``page`` (per test): a fresh page (1280x800) of one shared browser context.

One browser and one server for all these tests keep them cheap: package-scoped, so both are
closed as soon as the browser tests are done (the rest of the session does not carry them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
NO_BROWSER_ENV = "ICEPIPE_NO_BROWSER"
CHROMIUM_ENV = "ICEPIPE_CHROMIUM"
HOW_TO_INSTALL = (
    "run 'make browser' (Debian's chromium: apt-get install as root, else unpacked into "
    ".cache/chromium), or set ICEPIPE_CHROMIUM=/path/to/chromium; ICEPIPE_NO_BROWSER=1 skips "
    "the browser tests"
)


def find_chromium() -> str | None:
    """Where ``make browser`` put Chromium: $ICEPIPE_CHROMIUM, the no-root cache, Debian's."""
    if os.environ.get(CHROMIUM_ENV):  # said explicitly: that one or none
        path = os.environ[CHROMIUM_ENV]
        return path if os.access(path, os.X_OK) else None
    candidates = [
        str(ROOT / ".cache" / "chromium" / "chromium"),
        # Debian's binary itself, not its /usr/bin/chromium launcher script
        "/usr/lib/chromium/chromium",
        shutil.which("chromium") or "",
        shutil.which("chromium-browser") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="package")
def chromium_path() -> str:
    if os.environ.get(NO_BROWSER_ENV) == "1":
        pytest.skip(f"{NO_BROWSER_ENV}=1: browser tests skipped")
    path = find_chromium()
    if path is None:
        pytest.fail(f"no Chromium for the browser tests: {HOW_TO_INSTALL}", pytrace=False)
    return path


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need Playwright: pip install -e '.[dev]' (make venv)",
            pytrace=False,
        )
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=chromium_path)
        except Exception as exc:
            pytest.fail(f"Chromium at {chromium_path} does not start ({exc}): {HOW_TO_INSTALL}")
        yield b
        b.close()


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def icepipe_command() -> list[str]:
    exe = Path(sys.executable).parent / "icepipe"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("icepipe")
    assert found, "the icepipe command is not installed (pip install -e .)"
    return [found]


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"icepipe web exited ({process.returncode}) before answering:\n{log.read_text()}"
            )
        try:
            with urllib.request.urlopen(url + "/api/repos", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"icepipe web did not answer within {timeout}s:\n{log.read_text()}")


def start_server(pipelines: Path, catalog: Path, log: Path, *, timeout: float = 60) -> Server:
    """``icepipe web PIPELINES --catalog CATALOG --port FREE``, once it answers."""
    port = free_port()
    env = {**os.environ, "ICEPIPE_CATALOG": str(catalog)}
    cmd = [*icepipe_command(), "web", str(pipelines), "--catalog", str(catalog)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=log)
    try:
        wait_ready(server.url, process, log, timeout)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="package")
def server(site: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("icepipe-web") / "server.log"
    s = start_server(site.pipelines, site.catalog, log)
    yield s
    stop_server(s)


@pytest.fixture(scope="package")
def browser_context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    yield context
    context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    p = browser_context.new_page()
    yield p
    p.close()
