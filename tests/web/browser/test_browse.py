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

TIMES = " \N{MULTIPLICATION SIGN} "  # between the sizes of a shape in the tree


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


# --- reading the site's repositories directly (icechunk, zarr, xarray) ---


def open_repo(path: Path) -> Any:
    """As every reader of a virtual repository: with its chunk containers authorized."""
    from icepipe.repository import open_repo as open_icepipe_repo

    return open_icepipe_repo(str(path))


def ancestry(path: Path, branch: str = "main") -> list[str]:
    """Snapshot ids of ``branch``, newest first (the initial empty snapshot included)."""
    return [s.id for s in open_repo(path).ancestry(branch=branch)]


def array_paths(path: Path, snapshot_id: str) -> dict[str, tuple[int, ...]]:
    """``/group/array`` -> shape of every array at ``snapshot_id``."""
    import zarr

    store = open_repo(path).readonly_session(snapshot_id=snapshot_id).store
    root = zarr.open_group(store, mode="r")
    return {
        "/" + name: tuple(obj.shape)
        for name, obj in root.members(max_depth=None)
        if isinstance(obj, zarr.Array)
    }


def query_of(href: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(href).query).items()}


def shown_tree(page: Any) -> dict[str, str]:
    """``/group/array`` -> the text of its tree row, as the repository page shows it."""
    out = {}
    for row in page.get_by_test_id("tree-array").all():
        href = row.locator("a.array-link").get_attribute("href")
        out[query_of(href)["path"]] = row.inner_text()
    return out


def test_catalog_to_repository(page: Any, server: Server, site: Any) -> None:
    """Catalog -> demo/nemo: branches, tree and log as icechunk has them."""
    page.goto(server.url + "/")
    page.locator("a.repo-link", has_text=re.compile("^demo/nemo$")).click()
    assert page.get_by_test_id("repo-title").inner_text() == "demo/nemo"
    repo = open_repo(site.nemo_repo)
    branches = page.get_by_test_id("branch").all_inner_texts()
    assert len(branches) == len(repo.list_branches())
    assert all(any(b in text for text in branches) for b in repo.list_branches())
    tip = ancestry(site.nemo_repo)
    assert page.get_by_test_id("snapshot-id").inner_text() == tip[0]
    shown_ids = [t.strip() for t in page.get_by_test_id("commit-id").all_inner_texts()]
    assert shown_ids == tip
    arrays = array_paths(site.nemo_repo, tip[0])
    assert set(shown_tree(page)) == set(arrays)


def test_ref_picker_reads_an_older_commit(page: Any, server: Server, site: Any) -> None:
    """The first ingest (two of the three files): the tree and log go back with it."""
    import xarray as xr

    history = ancestry(site.nemo_repo)
    older = history[1]  # the first run's commit
    page.goto(server.url + "/repo?name=" + urllib.parse.quote("demo/nemo"))
    form = page.get_by_test_id("ref-form")
    form.locator("[name=ref]").fill(older)
    form.locator("[type=submit]").click()
    page.wait_for_url(re.compile("ref=" + older))
    assert page.get_by_test_id("snapshot-id").inner_text() == older
    shown_ids = [t.strip() for t in page.get_by_test_id("commit-id").all_inner_texts()]
    assert shown_ids == history[1:]
    ds = xr.open_zarr(
        open_repo(site.nemo_repo).readonly_session(snapshot_id=older).store,
        group="sst",
        consolidated=False,
    )
    assert ds.sizes["time_counter"] == len(site.nemo_sources) - 1
    then, now = array_paths(site.nemo_repo, older), array_paths(site.nemo_repo, history[0])
    tree = shown_tree(page)
    assert set(tree) == set(then)
    changed = [p for p in then if then[p] != now[p]]
    assert changed  # the arrays along time_counter grew with the second run
    for p in changed:
        assert TIMES.join(map(str, then[p])) in tree[p]
        assert TIMES.join(map(str, now[p])) not in tree[p]


def test_diff_form_compares_the_two_runs(page: Any, server: Server, site: Any) -> None:
    """The diff form's defaults (main~1 -> main): the chunks the second run wrote."""
    history = ancestry(site.nemo_repo)
    page.goto(server.url + "/repo?name=" + urllib.parse.quote("demo/nemo"))
    page.get_by_test_id("diff-form").locator("[type=submit]").click()
    page.wait_for_url(re.compile(r"/diff\?"))
    page.get_by_test_id("diff").wait_for()
    diff = open_repo(site.nemo_repo).diff(from_snapshot_id=history[1], to_snapshot_id=history[0])
    assert diff.updated_chunks  # the third file: one more chunk along time_counter
    rows = {}
    for row in page.get_by_test_id("diff-chunk-row").all():
        path, n = row.locator("td").all_inner_texts()
        rows[path.strip()] = int(n)
    assert rows == {path: len(list(chunks)) for path, chunks in diff.updated_chunks.items()}
    shown_files = page.get_by_test_id("diff-file").all_inner_texts()
    assert [Path(f.removeprefix("file://")).name for f in shown_files] == [
        site.nemo_sources[-1].name
    ]


def quicklook_png(page: Any) -> Any:
    """The quicklook as the browser loaded it: decoded (naturalWidth > 0), fetched as PNG."""
    import io

    import numpy as np
    from PIL import Image

    img = page.get_by_test_id("quicklook")
    img.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete", arg=img.element_handle())
    assert img.evaluate("img => img.naturalWidth") > 0
    src = img.evaluate("img => img.currentSrc")
    response = page.request.get(src)
    assert response.status == 200 and response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def test_repository_to_array_and_its_quicklook(page: Any, server: Server, site: Any) -> None:
    """demo/nemo -> its 3-D array: metadata and attributes as zarr has them, and a picture
    that is not blank and changes with the index picked."""
    import numpy as np
    import zarr

    store = open_repo(site.nemo_repo).readonly_session(branch="main").store
    group = zarr.open_group(store, mode="r", path="sst")
    name, arr = next(  # the data: a map per time step
        (n, a)
        for n, a in group.arrays()
        if a.ndim == 3 and a.metadata.dimension_names[0] == "time_counter"
    )
    page.goto(server.url + "/repo?name=" + urllib.parse.quote("demo/nemo"))
    page.locator(
        '[data-testid="tree-array"] a.array-link', has_text=re.compile(f"^{name}$")
    ).click()
    assert page.get_by_test_id("array-title").inner_text() == f"/sst/{name}"
    shape = page.get_by_test_id("array-shape").inner_text()
    assert [int(n) for n in re.findall(r"\d+", shape)] == list(arr.shape)
    assert str(arr.dtype) in page.get_by_test_id("array-dtype").inner_text()
    attrs = {
        row.get_by_test_id("attr-name").inner_text(): row.get_by_test_id("attr-value").inner_text()
        for row in page.get_by_test_id("attr").all()
    }
    for key in ("long_name", "units", "standard_name"):
        if key in arr.attrs:
            assert attrs[key] == str(arr.attrs[key])
    first = quicklook_png(page)
    assert first.shape[0] > 100 and first.shape[1] > 100
    colours = np.unique(first.reshape(-1, 3), axis=0)
    assert len(colours) > 20  # a map, not a blank or a one-colour picture
    # The last time step: another picture.
    time_dim = arr.metadata.dimension_names[0]
    form = page.get_by_test_id("quicklook-form")
    form.get_by_test_id(f"index-{time_dim}").fill(str(arr.shape[0] - 1))
    form.locator("[type=submit]").click()
    page.wait_for_url(re.compile(f"{time_dim}={arr.shape[0] - 1}"))
    last = quicklook_png(page)
    assert last.shape == first.shape and not np.array_equal(last, first)


def test_rectilinear_array_shows_one_chunk_per_file(page: Any, server: Server, site: Any) -> None:
    """tas-native-files: one time chunk per source file, as the files' lengths say."""
    import xarray as xr

    lengths = []
    for f in sorted(Path(site.pipelines).glob("tas-native-files.yaml")):
        for url in yaml.safe_load(f.read_text())["source"]["urls"]:
            with xr.open_dataset(url, decode_times=False) as ds:
                lengths.append(ds.sizes["time"])
    page.goto(server.url + "/")
    page.locator("a.repo-link", has_text=re.compile("^tas-native-files$")).click()
    page.locator('[data-testid="tree-array"] a.array-link', has_text=re.compile("^tas$")).click()
    chunks = page.get_by_test_id("array-chunks")
    assert chunks.get_attribute("data-grid") == "rectilinear"
    assert f"[{', '.join(map(str, lengths))}]" in chunks.inner_text()
    assert quicklook_png(page).std() > 0


def test_unknown_repository_is_a_404_page(page: Any, server: Server) -> None:
    response = page.goto(server.url + "/repo?name=" + urllib.parse.quote("no/such<repo>"))
    assert response.status == 404
    assert page.get_by_test_id("error-status").inner_text() == "404"
    assert "no/such<repo>" in page.get_by_test_id("error-detail").inner_text()


def wait_for_search_index(server: Server, timeout: float = 60) -> None:
    """The index is built in the background when the server starts: until then the search
    page says "indexing..." (a person would reload in a moment)."""
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(server.url + "/api/search?q=x", timeout=10) as r:
            if json.load(r)["state"] == "ready":
                return
        time.sleep(0.2)
    raise AssertionError(f"the search index was not ready within {timeout}s")


def test_search_finds_an_array_by_its_long_name(page: Any, server: Server, site: Any) -> None:
    import zarr

    wait_for_search_index(server)

    store = open_repo(site.nemo_repo).readonly_session(branch="main").store
    group = zarr.open_group(store, mode="r", path="sst")
    name, long_name = next(  # the data variable (a map per time step)
        (n, str(a.attrs["long_name"]))
        for n, a in group.arrays()
        if a.ndim == 3 and a.metadata.dimension_names[0] == "time_counter"
    )
    page.goto(server.url + "/")
    box = page.get_by_test_id("search-input")
    box.fill(long_name)
    box.press("Enter")
    page.wait_for_url(re.compile(r"/search\?"))
    results = page.get_by_test_id("search-result")
    assert int(page.get_by_test_id("search-count").inner_text().split()[0]) == results.count()
    hit = results.filter(has=page.locator("a.result-link", has_text=f"/sst/{name}")).filter(
        has=page.get_by_test_id("result-kind").filter(has_text="array")
    )
    assert hit.count() == 1
    assert hit.get_by_test_id("result-repo").inner_text() == "demo/nemo"
    hit.locator("a.result-link").click()
    page.wait_for_url(re.compile(r"/array\?"))
    opened = query_of(page.url)
    assert (opened["name"], opened["path"]) == ("demo/nemo", f"/sst/{name}")
    assert page.get_by_test_id("array-title").inner_text() == f"/sst/{name}"
    attrs = dict(
        zip(
            page.get_by_test_id("attr-name").all_inner_texts(),
            page.get_by_test_id("attr-value").all_inner_texts(),
            strict=True,
        )
    )
    assert attrs["long_name"] == long_name


def test_pipelines_page_marks_the_failing_run(page: Any, server: Server, site: Any) -> None:
    import json

    page.goto(server.url + "/")
    page.get_by_test_id("nav-pipelines").click()
    rows = page.get_by_test_id("pipeline-row")
    names = sorted(p.stem for p in Path(site.pipelines).glob("*.yaml"))
    assert (
        sorted(t.split()[0] for t in rows.get_by_test_id("pipeline-name").all_inner_texts())
        == names
    )
    reports = sorted((Path(site.pipelines) / ".icepipe" / "runs" / "broken").glob("*.json"))
    error = json.loads(reports[-1].read_text())["error"]
    for row in rows.all():
        name = row.get_by_test_id("pipeline-name").inner_text().split()[0]
        failing = "failing" in (row.get_attribute("class") or "").split()
        assert failing == (name == "broken"), name
        shown_error = row.get_by_test_id("pipeline-error").inner_text()
        if name == "broken":
            assert error["message"].splitlines()[0] in shown_error
        else:
            assert not shown_error.strip()


def test_reindex_button_and_other_sites(page: Any, server: Server) -> None:
    """The search page's Reindex button works from the page (Chromium's own Origin and
    Sec-Fetch-Site headers pass), and the same form on another site's page is refused."""
    wait_for_search_index(server)
    page.goto(server.url + "/search?q=sst")
    page.get_by_test_id("reindex").click()
    page.wait_for_url(re.compile(r"/search\?q=sst&reindexed=1$"))
    state = page.get_by_test_id("index-state").inner_text()
    assert "Reindexed in" in state or "reindexing" in state, state
    assert page.get_by_test_id("search-result").count() > 0
    # Another site (served by the browser itself: no DNS) posting the same form.
    evil = (
        f'<form method="post" action="{server.url}/api/reindex">'
        '<input type="hidden" name="q" value="x"><button id="go">win</button></form>'
    )
    page.route(
        "http://evil.example/**", lambda route: route.fulfill(body=evil, content_type="text/html")
    )
    page.goto("http://evil.example/")
    with page.expect_navigation() as nav:
        page.locator("#go").click()
    response = nav.value
    assert response is not None and response.status == 403
    assert "refused" in response.json()["error"] and "evil.example" in response.json()["error"]


def test_group_result_opens_its_row_in_the_tree(page: Any, server: Server) -> None:
    wait_for_search_index(server)
    page.goto(server.url + "/")
    page.get_by_test_id("search-input").fill("sst")
    page.get_by_test_id("search-input").press("Enter")
    group = page.get_by_test_id("search-result").filter(
        has=page.get_by_test_id("result-kind").filter(has_text=re.compile("^group$"))
    )
    group.filter(has=page.locator("a.result-link", has_text=re.compile("^/sst$"))).locator(
        "a.result-link"
    ).click()
    page.wait_for_url(re.compile(r"/repo\?name=demo%2Fnemo#node-/sst$"))
    target = page.locator(":target")
    assert target.get_attribute("data-testid") == "tree-group"
    assert target.inner_text().strip() == "sst/"


def test_server_answers_its_loopback_names_only(server: Server) -> None:
    """DNS rebinding: a request for another site's name reaching 127.0.0.1 gets no page."""
    import http.client

    answers = {}
    for host in ("127.0.0.1", "localhost", "evil.example"):
        con = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        con.request("GET", "/api/repos", headers={"Host": f"{host}:{server.port}"})
        answers[host] = con.getresponse().status
        con.close()
    assert answers == {"127.0.0.1": 200, "localhost": 200, "evil.example": 421}
