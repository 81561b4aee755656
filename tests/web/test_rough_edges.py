"""What a user trips over: text that is not UTF-8, huge and long attribute values, TeX-like
units, arrays written without dimension names, empty and odd arrays, a repository deleted
or a branch deleted while the server shows them, and empty sites."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig
from icepipe.web.pages.array import ATTR_PAGE
from icepipe.web.pages.search import search_index

PNG = b"\x89PNG\r\n\x1a\n"
NOT_UTF8 = "caf\udce9 \udcb2 wallaby"  # b"caf\xe9 \xb2" decoded with surrogateescape
HUGE = "y" * 3_000_000
LONG = "history line. " * 400  # 5,600 characters


def _site(tmp_path: Path, **repos: Path) -> WebConfig:
    catalog = tmp_path / "catalog.yaml"
    entries = {f"lab/{k}": {"url": str(v)} for k, v in repos.items()}
    catalog.write_text(yaml.safe_dump({"repos": entries}))
    return WebConfig(catalog=str(catalog))


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """``lab/odd``: a group written by xarray with odd attributes, and a root written with
    plain zarr (arrays without dimension names, scalars, empty, strings)."""
    from icepipe.xarray import to_icechunk

    tmp = tmp_path_factory.mktemp("odd")
    path = tmp / "odd"
    attrs = {
        "long_name": NOT_UTF8,
        "units": "m\udcb2",
        "huge": HUGE,
        "history": LONG,
        "title": "T" * 10_000,
    }
    values = np.arange(20.0).reshape(4, 5)
    to_icechunk(xr.Dataset({"w": (("y", "x"), values, attrs)}), str(path), group="xr")
    to_icechunk(
        xr.Dataset({"tex": (("y", "x"), values, {"units": "$\\frac{$", "long_name": "$x_$"})}),
        str(path),
        group="xr",
        mode="a",
    )
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="a")
    plain = root.create_array("plain", shape=(6, 7), chunks=(3, 7), dtype="f4")
    plain[:] = np.arange(42).reshape(6, 7)
    root.create_array("empty", shape=(0, 5), dtype="f4", dimension_names=["a", "b"])
    root.create_array("scalar", shape=(), dtype="f8")[()] = 3.5
    root.create_array("labels", shape=(3,), dtype=str, dimension_names=["n"])[:] = ["a", "b", "c"]
    named = root.create_array("named", shape=(4,), dtype="i2", dimension_names=["n4"])
    named[:] = [1, 2, 3, 4]
    session.commit("plain zarr arrays")
    with TestClient(create_app(_site(tmp, odd=path))) as web:
        yield web, path


def _get(web: TestClient, url: str, **params: str) -> Any:
    return web.get(url, params={"name": "lab/odd", **params})


def test_text_that_is_not_utf8_is_shown_escaped(odd: tuple[TestClient, Path]) -> None:
    web, _ = odd
    page = _get(web, "/array", path="/xr/w")
    assert page.status_code == 200, page.text[-500:]
    assert "caf\\xe9 \\xb2 wallaby" in page.text
    api = _get(web, "/api/array", path="/xr/w")
    assert api.status_code == 200
    assert api.json()["attributes"]["long_name"] == "caf\\xe9 \\xb2 wallaby"
    picture = _get(web, "/quicklook.png", path="/xr/w")
    assert picture.status_code == 200 and picture.content.startswith(PNG)
    # The search index took the repository (one bad string failed the whole refresh before).
    index = search_index(web.app)  # type: ignore[arg-type]
    assert index.wait(60) and index.state == "ready" and not index.repo_errors
    (hit,) = web.get("/api/search", params={"q": "wallaby"}).json()["results"]
    assert hit["path"] == "/xr/w" and "caf\\xe9" in hit["title"]
    assert "wallaby" in web.get("/search", params={"q": "wallaby"}).text


def test_huge_and_long_attribute_values(odd: tuple[TestClient, Path]) -> None:
    web, _ = odd
    page = _get(web, "/array", path="/xr/w")
    assert len(page.content) < 100_000  # the 3 MB attribute is not sent whole
    cells = dict(
        re.findall(
            r'class="wrap" data-testid="attr-name">([^<]+)</th>\s*<td[^>]*>(.*?)</td>',
            page.text,
            re.S,
        )
    )
    assert "(3,000,000 characters)" in cells["huge"]
    assert f"the first {ATTR_PAGE:,}" in cells["huge"] and "/api/array?" in cells["huge"]
    assert LONG.strip() in cells["history"] and "(5,600 characters)" in cells["history"]
    assert "first" not in cells["history"]  # whole when unfolded: no link to the JSON
    assert _get(web, "/api/array", path="/xr/w").json()["attributes"]["huge"] == HUGE
    # A title of 10,000 characters does not make the picture fail or grow.
    picture = _get(web, "/quicklook.png", path="/xr/w")
    assert picture.status_code == 200 and len(picture.content) < 200_000


def test_tex_like_labels_draw_as_text(odd: tuple[TestClient, Path]) -> None:
    web, _ = odd
    picture = _get(web, "/quicklook.png", path="/xr/tex")
    assert picture.status_code == 200 and picture.content.startswith(PNG), picture.text[:300]


def test_arrays_without_dimension_names(odd: tuple[TestClient, Path]) -> None:
    """A group holding an array written without dimension names (plain zarr): xarray opens
    none of its arrays; each still gets its page and picture, reading only what it shows."""
    web, _ = odd
    for name in ("plain", "named"):
        page = _get(web, "/array", path=f"/{name}")
        assert page.status_code == 200
        assert 'data-testid="quicklook"' in page.text and "quicklook-none" not in page.text
        picture = _get(web, "/quicklook.png", path=f"/{name}")
        assert picture.status_code == 200 and picture.content.startswith(PNG), picture.text
        assert 'name="i.dim_0"' not in page.text  # a 2-D map: nothing to pick
    # The picture shows the stored values: a line of the 1-D array, a map of the 2-D one.
    line = _get(web, "/quicklook.png", path="/plain", plot="dim_1", index="dim_0:5")
    assert line.status_code == 200 and line.headers["x-icepipe-chunks-read"] == "1"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/scalar", "a single value"),
        ("/empty", "no values (shape (0, 5))"),
        ("/labels", "not numbers"),
    ],
)
def test_no_broken_picture_for_what_cannot_be_drawn(
    odd: tuple[TestClient, Path], path: str, why: str
) -> None:
    web, _ = odd
    page = _get(web, "/array", path=path)
    assert page.status_code == 200
    assert 'data-testid="quicklook"' not in page.text
    note = re.search(r'data-testid="quicklook-none">(.*?)</p>', page.text)
    assert note and why in note.group(1)
    picture = _get(web, "/quicklook.png", path=path)  # a 400 naming it, not a 502
    assert picture.status_code == 400 and path in picture.text


def test_a_repository_deleted_while_served(tmp_path: Path) -> None:
    from icepipe.xarray import to_icechunk

    path = tmp_path / "gone"
    to_icechunk(xr.Dataset({"bilby": ("x", np.arange(3.0))}), str(path), group="g")
    app = create_app(_site(tmp_path, gone=path))
    index = search_index(app)
    assert index.wait(60)
    index.check_interval = 0
    with TestClient(app) as web:
        assert web.get("/repo", params={"name": "lab/gone"}).status_code == 200
        assert [h["path"] for h in web.get("/api/search?q=bilby").json()["results"]] == ["/g/bilby"]
        shutil.rmtree(path)
        page = web.get("/repo", params={"name": "lab/gone"})
        assert page.status_code == 404 and "deleted or moved since" in page.text
        assert web.get("/array", params={"name": "lab/gone", "path": "/g/bilby"}).status_code == 404
        (row,) = web.get("/api/repos").json()["repos"]
        assert row["exists"] is False and row["problem"] is None
        # The search forgets its arrays (its catalog entry stays findable).
        assert web.get("/api/search?q=bilby").json()["results"] == []


def test_a_branch_deleted_while_its_page_is_open(tmp_path: Path) -> None:
    from icepipe.repository import create_branch, open_repo, resolve_ref
    from icepipe.xarray import to_icechunk

    path = tmp_path / "br"
    ds = xr.Dataset({"quoll": (("y", "x"), np.ones((2, 3)))})
    to_icechunk(ds, str(path), group="g")
    repo = open_repo(str(path))
    create_branch(repo, "dev", resolve_ref(repo, "main"))
    to_icechunk(ds.rename(quoll="dunnart"), str(path), group="g", branch="dev", mode="a")
    with TestClient(create_app(_site(tmp_path, br=path))) as web:
        array = {"name": "lab/br", "path": "/g/quoll", "ref": "dev"}
        assert web.get("/repo", params={"name": "lab/br", "ref": "dev"}).status_code == 200
        assert web.get("/array", params=array).status_code == 200
        open_repo(str(path)).delete_branch("dev")
        for url in ("/array", "/repo", "/quicklook.png"):
            page = web.get(url, params=array)
            assert page.status_code == 404 and "'dev'" in page.text.replace("&#39;", "'")
        page = web.get("/array", params=array)
        links = re.findall(r'<a href="([^"]+)" data-testid="error-link">', page.text)
        assert links == ["/array?name=lab%2Fbr&amp;path=%2Fg%2Fquoll", "/repo?name=lab%2Fbr"]
        for link in links:
            assert web.get(link.replace("&amp;", "&")).status_code == 200
        assert web.get("/api/array", params=array).json()["error"].startswith("repository")


def test_empty_sites_and_repositories(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(empty)))
    (tmp_path / "none").mkdir()
    with TestClient(create_app(_site(tmp_path / "none"))) as web:
        assert "No repositories" in web.get("/").text
        assert "No pipelines" in web.get("/pipelines").text
        page = web.get("/search", params={"q": "anything"})
        assert page.status_code == 200 and 'data-testid="search-empty"' in page.text
    with TestClient(create_app(_site(tmp_path, empty=empty))) as web:
        page = web.get("/repo", params={"name": "lab/empty"})
        assert page.status_code == 200 and "Empty: nothing has been written" in page.text
        # One snapshot, no parent: the diff form and the default diff compare it to itself.
        assert '<input name="a" value="main"' in page.text
        diff = web.get("/api/diff", params={"name": "lab/empty"})
        assert diff.status_code == 200 and diff.json()["a"] == diff.json()["b"] == "main"
        assert web.get("/diff", params={"name": "lab/empty"}).status_code == 200
        (row,) = web.get("/api/repos").json()["repos"]
        assert row["exists"] and row["virtual_share"] is None
