"""The catalog, repository, log and diff pages and their JSON API, checked against the
repositories of the shared ``site`` read directly with icechunk and zarr."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import icechunk
import pytest
import zarr
from starlette.testclient import TestClient

from icepipe.repository.ledger import read_record
from icepipe.web.app import create_app
from icepipe.web.config import WebConfig
from icepipe.web.data import DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT


@pytest.fixture(scope="module")
def web(site: Any) -> Iterator[TestClient]:
    config = WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog))
    with TestClient(create_app(config)) as client:
        yield client


def _repo(path: Any) -> icechunk.Repository:
    return icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))


def _history(path: Any, branch: str = "main") -> list[icechunk.SnapshotInfo]:
    return list(_repo(path).ancestry(branch=branch))


def _testids(html: str, testid: str) -> list[str]:
    """The text of every element with ``data-testid=testid`` (tags stripped, spaces folded)."""
    out = []
    for m in re.finditer(rf'<(\w+)[^>]*data-testid="{testid}"[^>]*>(.*?)</\1>', html, re.S):
        out.append(" ".join(re.sub(r"<[^>]+>", " ", m.group(2)).split()))
    return out


def test_catalog_rows_match_the_repositories(web: TestClient, site: Any) -> None:
    rows = {r["key"]: r for r in web.get("/api/repos").json()["repos"]}
    assert set(rows) == {"demo/nemo", "tas-native-files", "broken"}
    pipelines = {"demo/nemo": "nemo-sst", "tas-native-files": "tas-native-files"}
    for key, path in (("demo/nemo", site.nemo_repo), ("tas-native-files", site.tas_repo)):
        repo, row = _repo(path), rows[key]
        assert row["exists"] is True and row["problem"] is None
        assert row["branches"] == sorted(repo.list_branches()) == ["main"]
        tip = repo.lookup_snapshot(repo.lookup_branch("main"))
        record = read_record(tip.metadata, snapshot_id=tip.id)
        assert record is not None
        last = row["last_commit"]
        assert last["id"] == tip.id and last["pipeline"] == record.pipeline == pipelines[key]
        assert last["n_files"] == len(record.files)
        assert last["files"] == [f.url for f in record.files]
        stats = repo.chunk_storage_stats()
        assert row["native_bytes"] == stats.native_bytes + stats.inlined_bytes
        assert row["virtual_bytes"] == stats.virtual_bytes
        # The share of virtual chunks, counted chunk by chunk (not from manifest statistics).
        session = repo.readonly_session(branch="main")
        kinds = {"native": 0, "inline": 0, "virtual": 0}
        for path_, node in zarr.open_group(session.store, mode="r").members(max_depth=None):
            if isinstance(node, zarr.Array):
                for c in _coords(session, "/" + path_):
                    kinds[str(session.chunk_type("/" + path_, list(c))).rsplit(".", 1)[-1]] += 1
        assert row["chunks"] == kinds
        assert row["virtual_share"] == pytest.approx(kinds["virtual"] / sum(kinds.values()))
    assert (
        rows["demo/nemo"]["virtual_share"] > 0.5 and rows["tas-native-files"]["virtual_share"] == 0
    )
    assert rows["demo/nemo"]["description"].startswith("NEMO")
    assert rows["broken"]["exists"] is False and rows["broken"]["last_commit"] is None

    page = web.get("/")
    assert page.status_code == 200
    assert page.text.count('data-testid="repo-row"') == 3
    assert _testids(page.text, "repo-branches") == ["not created yet", "main", "main"]
    last = _testids(page.text, "repo-last-commit")
    assert "nemo-sst · 1 file(s)" in last[1] and "tas-native-files · 2 file(s)" in last[2]
    shares = _testids(page.text, "repo-virtual-share")
    assert shares == ["-", f"{rows['demo/nemo']['virtual_share']:.0%}", "0%"]
    assert _testids(page.text, "repo-native-size")[2].endswith(("B", "KiB"))


def _coords(session: icechunk.Session, path: str) -> list[tuple[int, ...]]:
    import asyncio

    async def coords() -> list[tuple[int, ...]]:
        return [tuple(c) async for c in session.chunk_coordinates(path)]

    return asyncio.run(coords())


def test_catalog_reads_a_snapshot_once(site: Any) -> None:
    config = WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog))
    app = create_app(config)
    with TestClient(app) as client:
        first = client.get("/api/repos").json()
        misses = app.state.snapshot_cache.misses
        assert client.get("/api/repos").json() == first
        assert app.state.snapshot_cache.misses == misses and app.state.snapshot_cache.hits >= 4


def test_repo_tree_matches_the_snapshot(web: TestClient, site: Any) -> None:
    for key, path in (("demo/nemo", site.nemo_repo), ("tas-native-files", site.tas_repo)):
        got = web.get("/api/repo", params={"name": key}).json()
        repo = _repo(path)
        assert got["ref"] == "main" and got["snapshot_id"] == repo.lookup_branch("main")
        root = zarr.open_group(repo.readonly_session(branch="main").store, mode="r")
        want = {"/" + p: n for p, n in root.members(max_depth=None)}
        nodes = {n["path"]: n for n in got["tree"]}
        assert set(nodes) == {"/", *want}
        for p, node in want.items():
            if isinstance(node, zarr.Array):
                assert nodes[p]["shape"] == list(node.shape) and not nodes[p]["is_group"]
                assert nodes[p]["dims"] == list(node.metadata.dimension_names or ())
            else:
                assert nodes[p]["is_group"]
        page = web.get("/repo", params={"name": key})
        assert page.status_code == 200
        assert _testids(page.text, "repo-title") == [key]
        arrays = [p for p, n in want.items() if isinstance(n, zarr.Array)]
        assert page.text.count('data-testid="tree-array"') == len(arrays)
        for p in arrays:
            assert f'href="/array?name={key}&amp;path={p}&amp;ref=main"' in page.text
        assert _testids(page.text, "branch")[0].startswith("branch main (default)")
    tas = web.get("/api/repo", params={"name": "tas-native-files"}).json()
    (tas_data,) = [n for n in tas["tree"] if n["path"] == "/mod1/rcp45/tas"]
    assert tas_data["chunks"].startswith("(56,93)x")  # one chunk per file along time


def test_repo_at_an_older_ref(web: TestClient, site: Any) -> None:
    history = _history(site.nemo_repo)
    older = web.get("/api/repo", params={"name": "demo/nemo", "ref": "main~1"}).json()
    assert older["snapshot_id"] == history[1].id
    (tos,) = [n for n in older["tree"] if n["path"] == "/sst/tos"]
    assert tos["shape"][0] == 2  # the first run's two files
    by_id = web.get("/api/repo", params={"name": "demo/nemo", "ref": history[1].id}).json()
    assert by_id["tree"] == older["tree"]
    page = web.get("/repo", params={"name": "demo/nemo", "ref": "main~1"})
    assert "/array?name=demo/nemo&amp;path=/sst/tos&amp;ref=main~1" in page.text
    assert page.text.count('data-testid="commit"') == 2  # the log of main~1


def test_log_shows_each_commits_pipeline_and_files(web: TestClient, site: Any) -> None:
    history = _history(site.nemo_repo)
    log = web.get("/api/log", params={"name": "demo/nemo"}).json()
    assert [c["id"] for c in log["commits"]] == [s.id for s in history]
    assert log["limit"] == DEFAULT_LOG_LIMIT and log["more"] is False
    for c, snap in zip(log["commits"], history, strict=True):
        record = read_record(snap.metadata, snapshot_id=snap.id)
        assert c["message"] == snap.message
        assert c["pipeline"] == (record.pipeline if record else None)
        assert c["files"] == [f.url for f in (record.files if record else ())]
    sources = [s.as_uri() for s in site.nemo_sources]
    assert [c["files"] for c in log["commits"]] == [sources[2:], sources[:2], []]

    page = web.get("/repo", params={"name": "demo/nemo"}).text
    assert _testids(page, "commit-pipeline") == ["nemo-sst → sst", "nemo-sst → sst", "-"]
    assert [re.sub(r"\s", "", t) for t in _testids(page, "commit-id")] == [s.id for s in history]
    assert _testids(page, "commit-file") == sources[2:] + sources[:2]
    assert page.count("<details>") == 2  # the files are an expandable list


def test_log_length_is_bounded(web: TestClient, site: Any) -> None:
    history = _history(site.nemo_repo)
    one = web.get("/api/log", params={"name": "demo/nemo", "limit": 1}).json()
    assert [c["id"] for c in one["commits"]] == [history[0].id] and one["more"] is True
    huge = web.get("/api/log", params={"name": "demo/nemo", "limit": 10**9}).json()
    assert huge["limit"] == MAX_LOG_LIMIT and len(huge["commits"]) == len(history)
    for bad in ("0", "-3", "many"):
        r = web.get("/api/log", params={"name": "demo/nemo", "limit": bad})
        assert r.status_code == 400 and "limit" in r.json()["error"]
    page = web.get("/repo", params={"name": "demo/nemo", "limit": 1})
    assert page.text.count('data-testid="commit"') == 1 and "show more" in page.text


def test_diff_lists_the_third_files_changes(web: TestClient, site: Any) -> None:
    repo = _repo(site.nemo_repo)
    history = _history(site.nemo_repo)
    want = repo.diff(from_snapshot_id=history[1].id, to_snapshot_id=history[0].id)
    d = web.get("/api/diff", params={"name": "demo/nemo", "a": "main~1", "b": "main"}).json()
    assert (d["from_id"], d["to_id"]) == (history[1].id, history[0].id)
    assert d["files"] == [site.nemo_sources[2].as_uri()] and d["n_files"] == 1
    assert d["updated_arrays"] == sorted(want.updated_arrays) and "/sst/tos" in d["updated_arrays"]
    assert d["updated_chunks"] == {k: len(v) for k, v in want.updated_chunks.items()}
    assert [c["id"] for c in d["commits"]] == [history[0].id]
    assert web.get("/api/diff", params={"name": "demo/nemo"}).json() == d  # the defaults

    page = web.get("/diff", params={"name": "demo/nemo", "a": "main~1", "b": "main"})
    assert page.status_code == 200 and 'data-testid="diff"' in page.text
    assert _testids(page.text, "diff-file") == [site.nemo_sources[2].as_uri()]
    rows = _testids(page.text, "diff-chunk-row")
    assert "/sst/tos 1" in rows and len(rows) == len(want.updated_chunks)
    # The repository page's diff form submits to this page.
    form = web.get("/repo", params={"name": "demo/nemo"}).text
    assert 'data-testid="diff-form"' in form and 'name="a" value="main~1"' in form


def test_unknown_repos_refs_and_bad_diffs(web: TestClient) -> None:
    for url, params, status, words in (
        ("/repo", {"name": "no/such"}, 404, "no repository named 'no/such'"),
        ("/repo", {"name": "demo/nemo", "ref": "nope"}, 404, "'nope'"),
        ("/repo", {"name": "broken"}, 404, "not created yet"),
        ("/repo", {}, 400, "'name'"),
        ("/diff", {"name": "demo/nemo", "a": "main", "b": "main~1"}, 400, "not an ancestor"),
        ("/diff", {"name": "demo/nemo", "a": "main~9", "b": "main"}, 404, "fewer than 9"),
    ):
        page = web.get(url, params=params)
        assert page.status_code == status, (url, params, page.text)
        assert words in " ".join(_testids(page.text, "error-detail")).replace("&#39;", "'")
        api = web.get("/api" + url, params=params)
        assert api.status_code == status and words in api.json()["error"]
    assert web.get("/api/log", params={"name": "demo/nemo", "ref": "nope"}).status_code == 404
    # A repository its pipeline never created: the page leads to the pipeline's failing runs.
    page = web.get("/repo", params={"name": "broken"}).text
    assert '<a href="/pipelines#pipeline-broken" data-testid="error-link">' in page
    assert 'id="pipeline-broken"' in web.get("/pipelines").text


@pytest.mark.timeout(120, method="thread")
def test_pages_of_an_s3_repository_served_in_this_process(
    s3: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto answers from a thread of this process: Icechunk calls that wait for storage while
    holding the GIL (the sync ``inspect_snapshot``) would hang here, and stall every request
    of a real server meanwhile. Checked: with ``tree_info``'s sync calls back, this test hangs
    (not even pytest-timeout's thread gets the GIL to end it)."""
    import numpy as np
    import xarray as xr
    import yaml

    from icepipe.xarray import to_icechunk

    url = f"s3://{s3.bucket('webpages')}/repo"
    storage = s3.options()
    ds = xr.Dataset({"t": ("x", np.arange(4.0))})
    to_icechunk(ds, url, group="g", storage=storage)
    to_icechunk(ds + 1, url, group="g", storage=storage, mode="a")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"repos": {"s3/repo": {"url": url, "storage": storage}}}))
    monkeypatch.setenv("ICEPIPE_CATALOG", str(catalog))
    with TestClient(create_app(WebConfig(catalog=str(catalog)))) as client:
        (row,) = client.get("/api/repos").json()["repos"]
        assert row["exists"] and row["problem"] is None and row["virtual_share"] == 0
        assert sum(row["chunks"].values()) == 1  # t: one chunk, written twice
        tree = client.get("/api/repo", params={"name": "s3/repo"}).json()["tree"]
        assert [n["path"] for n in tree] == ["/", "/g", "/g/t"]
        assert len(client.get("/api/log", params={"name": "s3/repo"}).json()["commits"]) == 3
        assert client.get("/diff", params={"name": "s3/repo"}).status_code == 200
