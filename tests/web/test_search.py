"""Search: the FTS5 index of the site's repositories, groups, arrays and pipelines.

What the tests search for is read from the repositories themselves (an attribute of a NEMO
array), or written into a fresh repository by the test (a new commit, a ``<script>``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig
from icepipe.web.pages.search import search_index
from icepipe.web.search_index import SearchIndex, fts_query

NASTY = ['sea "surface', "a AND (", "*", "NEAR(", '"', "-x", "^", "col:val", "a OR", "NOT", "'"]


@pytest.fixture(scope="module")
def web(site: Any) -> Iterator[TestClient]:
    app = create_app(WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog)))
    index = search_index(app)
    assert index.wait(120) and index.state == "ready", index.error
    # The build time of the site's index (reported by the slice; printed with -s).
    print(f"\nsearch index of the site: {index.stats}")
    with TestClient(app) as client:
        yield client


def _search(web: TestClient, q: str, **params: Any) -> list[dict[str, Any]]:
    r = web.get("/api/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["count"] == len(doc["results"])
    results: list[dict[str, Any]] = doc["results"]
    return results


def _nemo_array_with(site: Any, attr: str) -> tuple[str, str]:
    """A NEMO array holding ``attr``, read from the repository: (path, value)."""
    from icepipe.xarray import open_dataset

    ds = open_dataset(str(site.nemo_repo), group="sst")
    for name, var in sorted(ds.variables.items()):
        if isinstance(var.attrs.get(attr), str) and var.attrs[attr].strip():
            return f"/sst/{name}", var.attrs[attr]
    raise AssertionError(f"no NEMO array with {attr}")


def test_attribute_value_in_the_data_finds_its_array(web: TestClient, site: Any) -> None:
    path, standard_name = _nemo_array_with(site, "standard_name")
    hits = _search(web, standard_name)
    arrays = [(h["repo"], h["path"]) for h in hits if h["kind"] == "array"]
    assert ("demo/nemo", path) in arrays
    hit = next(h for h in hits if h["path"] == path)
    assert hit["url"] == "/array?" + f"name=demo%2Fnemo&path={path.replace('/', '%2F')}"
    assert "<mark>" in hit["snippet"]
    # The last word is a prefix: the first four letters of the long_name's longest word.
    path, long_name = _nemo_array_with(site, "long_name")
    word = max(re.findall(r"[^\W_]+", long_name), key=len)
    assert len(word) > 4
    assert path in {h["path"] for h in _search(web, word[:4], limit=200)}


def test_pipeline_and_repo_description(web: TestClient, site: Any) -> None:
    hits = _search(web, "nemo-sst")
    top = (hits[0]["kind"], hits[0]["title"], hits[0]["repo"])
    assert top == ("pipeline", "nemo-sst", "demo/nemo")
    assert hits[0]["url"] == "/pipelines#pipeline-nemo-sst"
    hits = _search(web, "tas-native-files")
    pipelines = [(h["title"], h["repo"]) for h in hits if h["kind"] == "pipeline"]
    assert pipelines == [("tas-native-files", "tas-native-files")]
    description = yaml.safe_load(site.catalog.read_text())["repos"]["demo/nemo"]["description"]
    word = max(description.split(), key=len)
    repos = [h for h in _search(web, word) if h["kind"] == "repo"]
    assert [h["repo"] for h in repos] == ["demo/nemo"]
    assert repos[0]["url"] == "/repo?name=demo%2Fnemo"


def test_search_page_lists_the_api_results(web: TestClient, site: Any) -> None:
    _, standard_name = _nemo_array_with(site, "standard_name")
    hits = _search(web, standard_name)
    page = web.get("/search", params={"q": standard_name})
    assert page.status_code == 200
    assert page.text.count('data-testid="search-result"') == len(hits) > 0
    assert 'data-testid="search-count"' in page.text and "indexing..." not in page.text
    kinds = re.findall(r'data-testid="result-kind">(\w+)<', page.text)
    assert kinds == [h["kind"] for h in hits]
    assert web.get("/search").status_code == 200  # no query: the form and a hint


def test_fts_syntax_in_the_query_is_plain_text(web: TestClient) -> None:
    for q in NASTY:
        _search(web, q)
        assert web.get("/search", params={"q": q}).status_code == 200
    # Quotes, operators and stars are words or nothing: the same results as without them.
    assert _search(web, 'sea "surface') == _search(web, "sea surface") != []
    assert _search(web, "*") == []
    # NEAR is a word (a prefix, last): it finds tas's long_name "Near-Surface Air Temperature".
    assert "/mod1/rcp45/tas" in [h["path"] for h in _search(web, "NEAR(")]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(q=st.text(max_size=40) | st.lists(st.sampled_from([*NASTY, "sea", "temp"])).map(" ".join))
def test_no_query_text_breaks_the_search(web: TestClient, q: str) -> None:
    hits = _search(web, q, limit=5)
    assert len(hits) <= 5


_CON = sqlite3.connect(":memory:")
_CON.execute("CREATE VIRTUAL TABLE t USING fts5(a)")
_CON.execute("INSERT INTO t VALUES ('sea surface temperature')")


@settings(max_examples=200, deadline=None)
@given(q=st.text())
def test_fts_query_is_valid_fts5(q: str) -> None:
    con = _CON
    for any_word in (False, True):
        query = fts_query(q, any_word=any_word)
        if query is not None:
            con.execute("SELECT * FROM t WHERE t MATCH ?", (query,)).fetchall()
    assert fts_query("sea temp") == '"sea" AND "temp"*'
    assert fts_query('x" OR "y') == '"x" AND "OR" AND "y"*'


def _fresh_site(tmp_path: Path) -> tuple[WebConfig, Path]:
    repo = tmp_path / "fresh"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump({"repos": {"lab/fresh": {"url": str(repo), "description": "scratch"}}})
    )
    return WebConfig(catalog=str(catalog)), repo


def _array(name: str, long_name: str) -> xr.Dataset:
    return xr.Dataset({name: (("y", "x"), np.arange(6.0).reshape(2, 3), {"long_name": long_name})})


def test_new_commit_is_found_after_reindex_and_automatically(tmp_path: Path) -> None:
    from icepipe.xarray import to_icechunk

    config, repo = _fresh_site(tmp_path)
    to_icechunk(_array("first", "plain values"), str(repo), group="g")
    app = create_app(config)
    index = search_index(app)
    assert index.wait(60) and index.state == "ready"
    with TestClient(app) as web:
        assert _search(web, "quokka") == []
        to_icechunk(_array("second", "quokka density"), str(repo), group="g", mode="a")
        r = web.post("/api/reindex")
        assert r.status_code == 200 and r.json()["documents"] >= 3
        hits = _search(web, "quokka")
        assert [(h["kind"], h["path"]) for h in hits] == [("array", "/g/second")]
        # Without a reindex: the next search sees the moved branch tip.
        index.check_interval = 0
        to_icechunk(_array("third", "wombat density"), str(repo), group="h")
        assert [h["path"] for h in _search(web, "wombat")] == ["/h/third"]
        # Not read again when no tip moved.
        assert index.refresh().repos_read == 0


def test_other_branches_are_indexed_with_their_ref(tmp_path: Path) -> None:
    from icepipe.repository import create_branch, open_repo, resolve_ref
    from icepipe.xarray import to_icechunk

    config, repo = _fresh_site(tmp_path)
    to_icechunk(_array("first", "plain values"), str(repo))
    create_branch(open_repo(str(repo)), "dev", resolve_ref(open_repo(str(repo)), "main"))
    to_icechunk(_array("extra", "numbat counts"), str(repo), branch="dev", mode="a")
    index = SearchIndex(config)
    index.refresh()
    (hit,) = index.search("numbat")
    assert (hit.path, hit.ref) == ("/extra", "dev")
    (hit,) = index.search("plain values")
    assert (hit.path, hit.ref) == ("/first", "")  # on both branches: the default one


def test_snippets_and_titles_are_escaped(tmp_path: Path) -> None:
    from icepipe.xarray import to_icechunk

    config, repo = _fresh_site(tmp_path)
    to_icechunk(_array("evil", "<script>alert(1)</script> bandicoot"), str(repo))
    with TestClient(create_app(config)) as web:
        search_index(web.app).wait(60)  # type: ignore[arg-type]
        (hit,) = _search(web, "bandicoot")
        assert "<script>" not in hit["snippet"] and "&lt;script&gt;" in hit["snippet"]
        page = web.get("/search", params={"q": "bandicoot"}).text
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def test_page_says_indexing_until_ready(tmp_path: Path) -> None:
    config, _ = _fresh_site(tmp_path)
    app = create_app(config)
    index = SearchIndex(config)
    app.state.search_index = index
    with index._refresh_lock:  # the first build waits until the test lets it go
        index.start()
        with TestClient(app) as web:
            page = web.get("/search", params={"q": "anything"})
            assert page.status_code == 200 and "indexing..." in page.text
            assert web.get("/api/search", params={"q": "x"}).json()["state"] == "indexing"
    assert index.wait(60) and index.state == "ready"
    with TestClient(app) as web:
        assert "indexing..." not in web.get("/search", params={"q": "scratch"}).text
        assert [h["kind"] for h in _search(web, "scratch")] == ["repo"]


def test_the_index_starts_building_with_the_server(tmp_path: Path) -> None:
    from icepipe.web.pages.search import search_lifespan

    config, _ = _fresh_site(tmp_path)
    app = create_app(config)
    app.router.lifespan_context = search_lifespan  # as create_app(lifespan=...) sets it
    assert getattr(app.state, "search_index", None) is None
    with TestClient(app):  # starts the application (its lifespan), no request yet
        index: SearchIndex = app.state.search_index
        assert index.wait(60) and index.stats.repos == 1


def test_an_unreadable_repository_leaves_the_others_searchable(tmp_path: Path) -> None:
    import shutil

    from icepipe.xarray import to_icechunk

    config, repo = _fresh_site(tmp_path)
    other = tmp_path / "other"
    to_icechunk(_array("a", "koala counts"), str(repo))
    to_icechunk(_array("b", "platypus counts"), str(other))
    catalog = yaml.safe_load(Path(str(config.catalog)).read_text())
    catalog["repos"]["lab/other"] = {"url": str(other)}
    Path(str(config.catalog)).write_text(yaml.safe_dump(catalog))
    shutil.rmtree(other / "snapshots")  # its branch still points at a snapshot: now missing
    with TestClient(create_app(config)) as web:
        search_index(web.app).wait(60)  # type: ignore[arg-type]
        doc = web.get("/api/search", params={"q": "counts"}).json()
        assert [r["path"] for r in doc["results"]] == ["/a"] and doc["state"] == "ready"
        assert list(doc["unreadable"]) == ["lab/other"]
        assert 'data-testid="search-unreadable"' in web.get("/search?q=counts").text


def test_a_search_over_the_time_limit_is_a_504(tmp_path: Path) -> None:
    config, _ = _fresh_site(tmp_path)
    app = create_app(WebConfig(catalog=config.catalog, request_timeout=1e-6))
    search_index(app).wait(60)
    with TestClient(app) as web:
        r = web.get("/api/search", params={"q": "scratch"})
        assert r.status_code == 504 and "the search took more than" in r.json()["error"]
        page = web.get("/search", params={"q": "scratch"})
        assert page.status_code == 504 and 'data-testid="error-status"' in page.text


class _SqliteWithoutFts5:
    """A real SQLite connection that answers as a build without FTS5 does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.con = _CONNECT(":memory:")

    def execute(self, sql: str, *args: Any) -> Any:
        if "fts5" in sql.lower():
            raise sqlite3.OperationalError("no such module: fts5")
        return self.con.execute(sql, *args)

    def close(self) -> None:
        self.con.close()


_CONNECT = sqlite3.connect


def test_a_sqlite_without_fts5_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icepipe.errors import ConfigError
    from icepipe.web.search_index import check_fts5

    check_fts5()  # this Python has it
    monkeypatch.setattr(sqlite3, "connect", _SqliteWithoutFts5)
    with pytest.raises(ConfigError, match=r"has no FTS5 .*no such module: fts5"):
        check_fts5()
    config, _ = _fresh_site(tmp_path)
    app = create_app(config)
    index = search_index(app)
    assert index.wait(60) and index.state == "failed" and "FTS5" in str(index.error)
    with TestClient(app) as web:
        r = web.get("/api/search", params={"q": "scratch"})
        assert r.status_code == 503 and "FTS5" in r.json()["error"]
        page = web.get("/search", params={"q": "scratch"})
        assert page.status_code == 503 and "search index is unavailable" in page.text
