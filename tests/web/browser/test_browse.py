"""``icepipe web`` in a real headless Chromium, clicked as a person would.

What the pages show is checked against the site's files and repositories read directly
(the catalog and pipeline YAML, icechunk, xarray), not against the web code's own helpers.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from tests.web.browser.conftest import Server


def expected_repo_keys(site: Any) -> dict[str, str]:
    """Key -> description, from the catalog file and the pipeline files as written."""
    catalog = yaml.safe_load(site.catalog.read_text())["repos"]
    keys = {name: entry.get("description", "") for name, entry in catalog.items()}
    for path in sorted(Path(site.pipelines).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not doc["target"]["repo"].startswith("catalog:"):
            keys[doc["name"]] = ""
    return keys


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (Linux: /proc/net/tcp*)."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                out.add(addr)
    return out


def test_server_listens_on_loopback_only(server: Server) -> None:
    # 0100007F: 127.0.0.1 in /proc/net/tcp's little-endian hex; nothing on any other address.
    assert listening_addresses(server.port) == {"0100007F"}


def test_catalog_lists_every_repository(page: Any, server: Server, site: Any) -> None:
    expected = expected_repo_keys(site)
    response = page.goto(server.url + "/")
    assert response.status == 200
    rows = page.get_by_test_id("repo-row")
    assert rows.count() == len(expected)
    links = page.locator('[data-testid="repo-row"] a.repo-link')
    assert sorted(links.all_inner_texts()) == sorted(expected)
    for key, description in expected.items():
        row = rows.filter(has=page.locator("a.repo-link", has_text=re.compile(f"^{key}$")))
        if description:
            assert description in row.inner_text()
        href = row.locator("a.repo-link").get_attribute("href")
        assert href is not None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
        assert query["name"] == [key]


def test_unknown_page_is_a_404_page(page: Any, server: Server) -> None:
    response = page.goto(server.url + "/no/such/page")
    assert response.status == 404
    assert page.get_by_test_id("error-status").inner_text() == "404"
    page.get_by_role("link", name="Back to the repositories").click()
    page.wait_for_url(server.url + "/")
    assert page.get_by_test_id("catalog").is_visible()


def test_search_box_submits_a_search(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    box = page.get_by_test_id("search-input")
    box.fill("sea surface")
    box.press("Enter")
    page.wait_for_url(re.compile(r"/search\?"))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert query["q"] == ["sea surface"]


def test_nav_links_lead_to_their_pages(page: Any, server: Server) -> None:
    page.goto(server.url + "/no/such/page")
    page.get_by_test_id("nav-catalog").click()
    page.wait_for_url(server.url + "/")
    page.get_by_test_id("nav-pipelines").click()
    page.wait_for_url(server.url + "/pipelines")
    page.get_by_test_id("nav-repos").click()
    page.wait_for_url(server.url + "/")
    assert page.get_by_test_id("catalog").is_visible()
