"""`make screenshots`: pictures of `icepipe web`'s main pages for docs/web.md (docs/img/web-*.png).

Starts `icepipe web PIPELINES` (default: pipelines/, whose repositories `make demo` writes
under repos/) on a free port of 127.0.0.1, drives Debian's Chromium (`make browser`) with
Playwright as a person would (catalog -> a repository -> its first array; a search typed in the
nav box; the pipelines page) and saves each page at 1280x800, as a palette PNG (small).

    python scripts/screenshots.py [--pipelines pipelines] [--catalog FILE] [--repo KEY]
                                  [--array NAME] [--search temperature] [--out docs/img]

Exits 1 when a page could not be shown (the others are saved all the same).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 800}


def find_chromium() -> str:
    """As tests/web/browser/conftest.py: $ICEPIPE_CHROMIUM, the no-root cache, Debian's."""
    if os.environ.get("ICEPIPE_CHROMIUM"):
        return os.environ["ICEPIPE_CHROMIUM"]
    for c in (
        str(ROOT / ".cache" / "chromium" / "chromium"),
        "/usr/lib/chromium/chromium",
        shutil.which("chromium") or "",
    ):
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("screenshots: no Chromium: run 'make browser' (or set ICEPIPE_CHROMIUM)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = Path(sys.executable).parent / "icepipe"
    cmd = [str(exe if exe.exists() else "icepipe"), "web", *args.pipelines, "--port", str(port)]
    if args.catalog:
        cmd += ["--catalog", args.catalog]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"screenshots: icepipe web exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/api/repos", timeout=5):
                return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    proc.terminate()
    sys.exit(f"screenshots: icepipe web did not answer within 60 s:\n{log.read_text()}")


def save_png(page: Any, path: Path) -> int:
    """The page's viewport as a 256-colour PNG (text stays sharp; a quarter of the size)."""
    from PIL import Image

    raw = page.screenshot(full_page=False)
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    img.save(path, optimize=True)
    return path.stat().st_size


def shown(page: Any, testid: str) -> None:
    """Wait until the page shows ``testid``; an error page instead raises, naming it."""
    either = f'[data-testid="{testid}"], [data-testid="error-status"]'
    page.locator(either).first.wait_for()
    if page.get_by_test_id("error-status").count():
        status = page.get_by_test_id("error-status").inner_text()
        detail = page.get_by_test_id("error-detail").inner_text()
        raise RuntimeError(f"{page.url} is a {status} page: {detail}")


def catalog(page: Any, url: str, args: argparse.Namespace) -> None:
    page.goto(url + "/")
    shown(page, "catalog")


def repo(page: Any, url: str, args: argparse.Namespace) -> None:
    catalog(page, url, args)
    links = page.locator('[data-testid="repo-row"] a.repo-link')
    wanted = links.filter(has_text=args.repo) if args.repo else links
    (wanted if wanted.count() else links).first.click()
    shown(page, "tree")


def array(page: Any, url: str, args: argparse.Namespace) -> None:
    repo(page, url, args)
    links = page.locator('[data-testid="tree-array"] a.array-link')
    wanted = links.filter(has_text=re.compile(f"^{re.escape(args.array)}$"))
    (wanted if wanted.count() else links).first.click()
    shown(page, "array-meta")
    quicklook = page.get_by_test_id("quicklook")
    if quicklook.count():  # the picture in view, under the title and the first rows
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=quicklook.element_handle()
        )
        top = quicklook.evaluate("img => img.getBoundingClientRect().top + window.scrollY")
        page.evaluate(f"window.scrollTo(0, {max(0, top + 500 - VIEWPORT['height'] + 40)})")


def wait_for_index(url: str, timeout: float = 120) -> None:
    """The search index is built in the background when the server starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/api/search?q=x", timeout=30) as r:
            if json.load(r).get("state") != "indexing":
                return
        time.sleep(0.5)


def search(page: Any, url: str, args: argparse.Namespace) -> None:
    wait_for_index(url)
    catalog(page, url, args)
    box = page.get_by_test_id("search-input")
    box.fill(args.search)
    box.press("Enter")
    shown(page, "search-count")


def pipelines(page: Any, url: str, args: argparse.Namespace) -> None:
    page.goto(url + "/")
    page.get_by_test_id("nav-pipelines").click()
    shown(page, "pipelines")


PAGES: dict[str, Callable[[Any, str, argparse.Namespace], None]] = {
    "catalog": catalog,
    "repo": repo,
    "array": array,
    "search": search,
    "pipelines": pipelines,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipelines", nargs="*", default=[str(ROOT / "pipelines")])
    ap.add_argument("--catalog", default=None)
    ap.add_argument("--repo", default="nemo-sst", help="repository of the repo/array pictures")
    ap.add_argument("--array", default="tos", help="array of the array picture (name)")
    ap.add_argument("--search", default="temperature", help="words typed in the search box")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--only", nargs="*", choices=sorted(PAGES), default=list(PAGES))
    args = ap.parse_args(argv)
    if not args.catalog:  # the user's own catalog stays out of the pictures
        os.environ["ICEPIPE_CATALOG"] = os.devnull
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        proc, url = start_server(args, Path(tmp) / "server.log")
        browser = pw.chromium.launch(executable_path=find_chromium())
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(30_000)
            for name in args.only:
                page = context.new_page()
                try:
                    PAGES[name](page, url, args)
                    size = save_png(page, out / f"web-{name}.png")
                    print(f"web-{name}.png: {size // 1024} KiB ({page.url})")
                except Exception as exc:
                    failed.append(name)
                    print(f"web-{name}.png: not made: {exc}".splitlines()[0], file=sys.stderr)
                page.close()
        finally:
            browser.close()
            proc.terminate()
            proc.wait(timeout=10)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
