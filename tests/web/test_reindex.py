"""The search page's "Reindex" button (a plain form POSTing to ``/api/reindex``), refused to
other sites' pages; the Host check of a loopback server; group results anchored in the tree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import xarray as xr
import yaml
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig
from icepipe.web.pages import search as search_page
from icepipe.web.pages.search import search_index
from icepipe.web.search_index import SearchIndex


def _fresh(tmp_path: Path) -> tuple[WebConfig, Path]:
    from icepipe.xarray import to_icechunk

    repo = tmp_path / "fresh"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"repos": {"lab/fresh": {"url": str(repo)}}}))
    to_icechunk(_array("first", "plain values"), str(repo), group="g")
    return WebConfig(catalog=str(catalog)), repo


def _array(name: str, long_name: str) -> xr.Dataset:
    return xr.Dataset({name: (("y", "x"), np.zeros((2, 3)), {"long_name": long_name})})


def _paths(web: TestClient, q: str) -> list[str]:
    return [h["path"] for h in web.get("/api/search", params={"q": q}).json()["results"]]


FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_the_reindex_button_rebuilds_and_says_so(tmp_path: Path) -> None:
    from icepipe.xarray import to_icechunk

    config, repo = _fresh(tmp_path)
    app = create_app(config)
    index = search_index(app)
    assert index.wait(60) and index.state == "ready"
    index.check_interval = 3600  # no automatic refresh: only the button finds new commits
    with TestClient(app) as web:
        page = web.get("/search", params={"q": "echidna"}).text
        form = re.search(r'<form method="post" action="([^"]+)"[^>]*"reindex-form"', page)
        assert form and form.group(1) == "/api/reindex"
        assert 'name="q" value="echidna"' in page and 'data-testid="reindex"' in page
        assert _paths(web, "echidna") == []
        to_icechunk(_array("second", "echidna sightings"), str(repo), group="g", mode="a")
        assert _paths(web, "echidna") == []
        # What the browser sends for the form: its own origin, the query in the body.
        r = web.post(
            "/api/reindex",
            content="q=echidna",
            headers={**FORM, "origin": "http://testserver", "sec-fetch-site": "same-origin"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/search?q=echidna&reindexed=1"
        page = web.get(r.headers["location"]).text
        assert _paths(web, "echidna") == ["/g/second"]
        assert 'data-testid="search-result"' in page
        state = re.search(r'data-testid="index-state">(.*?)</span>', page, re.S)
        assert state and "Reindexed in" in state.group(1) and "branches at 20" in state.group(1)


def test_a_rebuild_in_progress_is_shown_and_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = _fresh(tmp_path)
    app = create_app(config)
    index = SearchIndex(config)
    app.state.search_index = index
    index.start()
    assert index.wait(60)
    monkeypatch.setattr(search_page, "REFRESH_WAIT", 0.05)
    with index._refresh_lock, TestClient(app) as web:  # the rebuild waits for the test
        r = web.post("/api/reindex", content="q=x", headers=FORM, follow_redirects=False)
        assert r.status_code == 303
        first = index.rebuild()
        assert index.rebuilding and index.rebuild() is first  # one rebuild, however many clicks
        page = web.get(r.headers["location"]).text
        assert "reindexing every repository..." in page
        assert re.search(r'data-testid="reindex" disabled', page)
    first.join(60)
    assert not index.rebuilding


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "https://testserver"},  # another scheme: another origin
        {"referer": "http://evil.example/page.html"},
        {"sec-fetch-site": "cross-site", "origin": "http://testserver"},
        {"sec-fetch-site": "same-site"},
    ],
)
def test_other_sites_cannot_make_the_browser_reindex(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    config, _ = _fresh(tmp_path)
    app = create_app(config)
    index = search_index(app)
    assert index.wait(60)
    built = index.built_at
    with TestClient(app) as web:
        for extra in (FORM, {}):
            r = web.post(
                "/api/reindex", content="q=x", headers={**extra, **headers}, follow_redirects=False
            )
            assert r.status_code == 403, r.text
            is_json = "json" in r.headers["content-type"]
            assert "refused" in (r.json()["error"] if is_json else r.text)
    assert index.built_at == built and not index.rebuilding


def test_a_loopback_server_answers_its_own_names_only(tmp_path: Path) -> None:
    config, _ = _fresh(tmp_path)
    names = ("127.0.0.1", "localhost", "::1")
    app = create_app(WebConfig(catalog=config.catalog, allowed_hosts=names))
    for base in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        assert TestClient(app, base_url=base).get("/api/repos").status_code == 200, base
    # DNS rebinding: another site's name resolving to 127.0.0.1 reaches the port, not the pages.
    for host in ("evil.example:8000", "127.0.0.1.evil.example", "localhost.:8000"):
        r = TestClient(app, base_url="http://127.0.0.1:8000").get(
            "/api/repos", headers={"host": host}
        )
        assert r.status_code == 421 and "127.0.0.1" in r.text, host


def test_group_results_link_to_their_row_in_the_tree(site: Any) -> None:
    app = create_app(WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog)))
    assert search_index(app).wait(120)
    with TestClient(app) as web:
        hits = web.get("/api/search", params={"q": "sst"}).json()["results"]
        (group,) = [h for h in hits if h["kind"] == "group" and h["path"] == "/sst"]
        url, anchor = group["url"].split("#")
        assert url == "/repo?name=demo%2Fnemo" and unquote(anchor) == "node-/sst"
        page = web.get(url).text
        row = re.search(rf'<tr data-testid="tree-group" id="{re.escape(anchor)}">', page)
        assert row, "no tree row with that id"
        # Every row of the tree has an id, each once.
        ids = re.findall(r'<tr data-testid="tree-(?:group|array)" id="([^"]+)"', page)
        assert len(ids) == len(set(ids)) == page.count('data-testid="tree-')
