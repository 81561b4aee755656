"""The array page and its quicklook picture, checked against the repositories read directly.

Two sets of repositories: the shared ``site`` (NEMO virtual netCDF4; tas native on a
rectilinear grid) and a generated one (``gen/grid``): a native array of 40 x 40 chunks per
time step (one step a gradient along x, one all missing, one a gradient along y), a 1-D
series of 40 chunks, a string array, attributes with ``<script>`` and a long value.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig
from icepipe.web.pages.array import ATTR_SHOWN

GEN = "gen/grid"
SCRIPT = "<script>alert('x')</script>"
LONG = "history " * 200


def _web(site: Any, **kw: Any) -> TestClient:
    config = WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog), **kw)
    return TestClient(create_app(config))


@pytest.fixture(scope="module")
def web(site: Any) -> TestClient:
    return _web(site)


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """A catalog holding one generated repository, and a client of it."""
    import icechunk
    import xarray as xr

    root = tmp_path_factory.mktemp("web-array-gen")
    repo_path = root / "repo"
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(repo_path)),
        config=icechunk.RepositoryConfig(inline_chunk_threshold_bytes=0),  # native chunks
    )
    n = 200
    v = np.full((3, n, n), np.nan, dtype="float32")
    v[0] = np.arange(n, dtype="float32")[None, :]  # grows along x
    v[2] = -np.arange(n, dtype="float32")[:, None]  # falls along y
    small = np.full((3, 40, 40), np.nan, dtype="float32")
    small[0] = np.arange(40, dtype="float32")[None, :]  # grows along lon
    small[2] = -np.arange(40, dtype="float32")[:, None]  # falls along lat
    ds = xr.Dataset(
        {
            "v": (("time", "y", "x"), v, {"units": "K", "note": SCRIPT, "history": LONG}),
            "small": (("time", "lat", "lon"), small, {"units": "m"}),
            "sharded": (("lat", "lon"), small[0]),
            "series": (("step",), np.sin(np.arange(n) / 10.0)),
            "labels": (("label",), np.array(["a", "bb", "ccc"])),
        },
        coords={
            "time": [0, 1, 2],
            "x": np.arange(n) * 0.5,
            "y": np.arange(n) * 0.5,
            "lat": np.linspace(-60, 60, 40),
            "lon": np.linspace(0, 351, 40),
        },
    )
    ds.time.attrs["units"] = "days since 2000-01-01"
    session = repo.writable_session("main")
    ds.to_zarr(
        session.store,
        group="grid",
        zarr_format=3,
        consolidated=False,
        encoding={
            "v": {"chunks": (1, 5, 5)},
            "small": {"chunks": (1, 20, 20)},
            "sharded": {"chunks": (10, 10), "shards": (20, 20)},
            "series": {"chunks": (5,)},
        },
    )
    session.commit("generated")
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"repos": {GEN: {"url": str(repo_path)}}}))
    with TestClient(create_app(WebConfig(catalog=str(catalog)))) as client:
        yield client, repo_path


def _png(content: bytes) -> np.ndarray[Any, Any]:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"), dtype="float64")


def _open_direct(repo_path: Path, group: str) -> tuple[Any, Any]:
    import xarray as xr

    from icepipe.repository import open_repo

    session = open_repo(str(repo_path)).readonly_session(branch="main")
    ds = xr.open_zarr(session.store, group=group, consolidated=False)
    return session, ds


def test_tas_page_shows_what_zarr_reads(site: Any, web: TestClient) -> None:
    import zarr

    from icepipe.repository.grids import read_chunk_grid

    session, ds = _open_direct(site.tas_repo, "mod1/rcp45")
    arr = zarr.open_array(session.store, path="mod1/rcp45/tas", mode="r")
    got = web.get("/api/array", params={"name": "tas-native-files", "path": "/mod1/rcp45/tas"})
    assert got.status_code == 200, got.text
    info = got.json()
    grid = read_chunk_grid(session.store, "mod1/rcp45/tas")
    assert grid is not None and isinstance(grid[0], tuple)  # rectilinear along time
    assert info["shape"] == list(arr.shape) and info["dtype"] == str(arr.dtype)
    assert info["dims"] == list(ds.tas.dims)
    assert info["grid"]["kind"] == "rectilinear"
    assert info["grid"]["chunks"] == [list(g) if isinstance(g, tuple) else g for g in grid]
    assert tuple(info["grid"]["edges"][0]) == ds.tas.encoding["chunks"][0]
    assert info["codecs"] == json.loads(json.dumps(arr.metadata.to_dict()["codecs"]))
    assert info["attributes"] == dict(arr.attrs)
    s = info["storage"]
    assert s["objects"] == 2 and s["native"] + s["inline"] + s["virtual"] + s["missing"] == 2
    time = next(c for c in info["coordinates"] if c["name"] == "time")
    first, last = (str(np.datetime_as_string(t, unit="s")) for t in ds.time.values[[0, -1]])
    assert (time["first"], time["last"], time["length"]) == (first, last, ds.sizes["time"])
    page = web.get("/array", params={"name": "tas-native-files", "path": "/mod1/rcp45/tas"})
    assert page.status_code == 200
    for testid in ("array-title", "array-meta", "array-attrs", "array-storage", "quicklook"):
        assert f'data-testid="{testid}"' in page.text
    assert "[56, 93]" in page.text and f">{first}<" in page.text


def test_nemo_page_counts_virtual_chunks_as_tree_info(site: Any, web: TestClient) -> None:
    from icepipe.repository import open_repo, resolve_ref, tree_info

    repo = open_repo(str(site.nemo_repo))
    node = next(n for n in tree_info(repo, resolve_ref(repo, "main")) if n.path == "/sst/tos")
    info = web.get("/api/array", params={"name": "demo/nemo", "path": "/sst/tos"}).json()
    s = info["storage"]
    assert (s["virtual"], s["native"], s["inline"]) == (node.virtual, node.native, node.inline)
    assert s["virtual"] == 3 and s["exact"]
    _, ds = _open_direct(site.nemo_repo, "sst")
    centered = next(c for c in info["coordinates"] if c["name"] == "time_centered")
    assert centered["first"] == str(ds.time_centered.values[0])
    assert centered["last"] == str(ds.time_centered.values[-1])
    # An older ref: the first commit held two of the three files.
    old = web.get("/api/array", params={"name": "demo/nemo", "path": "/sst/tos", "ref": "main~1"})
    assert old.json()["shape"][0] == 2


def test_quicklooks_of_site_arrays_decode_and_differ(web: TestClient) -> None:
    q = {"name": "demo/nemo", "path": "/sst/tos"}
    first = web.get("/quicklook.png", params={**q, "index": "time_counter:0"})
    third = web.get("/quicklook.png", params={**q, "index": "time_counter:2"})
    for r in (first, third):
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = _png(r.content)
        assert img.shape == (500, 800, 3) and img.std() > 10
    assert np.abs(_png(first.content) - _png(third.content)).mean() > 0.1
    assert int(first.headers["X-Icepipe-Chunks-Read"]) == 1
    again = web.get("/quicklook.png", params={**q, "index": "time_counter:0"})
    assert again.headers["X-Icepipe-Cache"] == "hit" and again.content == first.content
    series = web.get(
        "/quicklook.png", params={"name": "tas-native-files", "path": "/mod1/rcp45/tas"}
    )
    assert series.status_code == 200 and _png(series.content).std() > 5
    assert series.headers["X-Icepipe-Values"] == "149 of 149 not missing"


def _luminance(img: np.ndarray[Any, Any], row: float, col: float) -> float:
    y, x = int(img.shape[0] * row), int(img.shape[1] * col)
    return float(img[y - 3 : y + 3, x - 3 : x + 3].mean())


def test_quicklook_pixels_track_the_data(gen: tuple[TestClient, Path]) -> None:
    """Viridis grows brighter with the value: a gradient along lon gets brighter to the
    right, one falling along lat darker upwards (lat grows upwards); an all-missing slice is
    blank."""
    web, _ = gen
    q = {"name": GEN, "path": "/grid/small"}
    along_x = _png(web.get("/quicklook.png", params={**q, "index": "time:0"}).content)
    left, mid, right = (_luminance(along_x, 0.5, c) for c in (0.2, 0.45, 0.7))
    assert left < mid < right
    along_y = _png(web.get("/quicklook.png", params={**q, "index": "time:2"}).content)
    top, bottom = _luminance(along_y, 0.25, 0.45), _luminance(along_y, 0.8, 0.45)
    assert top < bottom
    empty = web.get("/quicklook.png", params={**q, "index": "time:1"})
    assert empty.status_code == 200
    assert empty.headers["X-Icepipe-Values"].startswith("0 of ")
    blank = _png(empty.content)
    assert blank.shape == along_x.shape and blank.std() < along_x.std() / 2


def test_quicklook_reads_a_bounded_number_of_chunks(gen: tuple[TestClient, Path]) -> None:
    """A slice spanning 40 x 40 chunks is decimated: the picture reads at most
    ``max_quicklook_chunks`` of them (counted by a store wrapper around the session's)."""
    import zarr
    from zarr.storage import WrapperStore

    from icepipe.repository import open_repo
    from icepipe.web.quicklook import quicklook_png

    web, repo_path = gen
    reads: list[str] = []

    class Counting(WrapperStore[Any]):
        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            reads.append(key)
            return await self._store.get(key, prototype, byte_range)

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
            key_ranges = list(key_ranges)
            reads.extend(k for k, _ in key_ranges)
            return await self._store.get_partial_values(prototype, key_ranges)

    session = open_repo(str(repo_path)).readonly_session(branch="main")
    arr = zarr.open_array(session.store, path="grid/v", mode="r")
    assert arr.cdata_shape == (3, 40, 40)
    limit = WebConfig().max_quicklook_chunks
    edges = [[c] * math.ceil(n / c) for n, c in zip(arr.shape, arr.chunks, strict=True)]
    look = quicklook_png(
        Counting(session.store),
        group="grid",
        name="v",
        edges=edges,
        index={"time": 2},
        max_chunks=limit,
    )
    chunk_reads = [k for k in reads if k.startswith("grid/v/c/")]
    assert 1 <= len(chunk_reads) <= limit
    assert all(k.startswith("grid/v/c/2/") for k in chunk_reads)  # only the chosen step
    assert look.selection.decimated and look.selection.chunks_spanned == 1600
    img = _png(look.png)
    assert img.std() > 10
    grey = np.all(np.abs(img - 0xDD) < 2, axis=-1).mean()  # the chunks not read
    assert grey > 0.2
    served = web.get("/quicklook.png", params={"name": GEN, "path": "/grid/v", "index": "time:2"})
    assert int(served.headers["X-Icepipe-Chunks-Read"]) == len(chunk_reads)
    reads.clear()
    line = quicklook_png(
        Counting(session.store),
        group="grid",
        name="series",
        edges=[[5] * 40],
        index={},
        max_chunks=limit,
    )
    assert 1 <= len([k for k in reads if k.startswith("grid/series/c/")]) <= limit
    assert line.selection.plot_dims == ("step",) and line.finite == line.values > 0


def test_many_chunks_counted_from_manifest_statistics(gen: tuple[TestClient, Path]) -> None:
    """4800 chunks are more than the page asks one by one: counts come from the manifests'
    statistics (equal to ``tree_info``'s), native bytes are an estimate, and the page says so."""
    from icepipe.repository import open_repo, resolve_ref, tree_info

    web, repo_path = gen
    repo = open_repo(str(repo_path))
    node = next(n for n in tree_info(repo, resolve_ref(repo, "main")) if n.path == "/grid/v")
    info = web.get("/api/array", params={"name": GEN, "path": "/grid/v"}).json()
    s = info["storage"]
    assert (s["native"], s["inline"], s["virtual"]) == (node.native, node.inline, node.virtual)
    assert s["objects"] == node.grid == 4800 and s["missing"] == node.empty == 1600
    assert not s["exact"] and "estimated" in s["method"] and s["native"] == 3200
    stored = sum(p.stat().st_size for p in (repo_path / "chunks").iterdir())
    assert stored * 0.8 < s["native_bytes"] < stored * 1.2  # estimated from 2000 of 3200
    page = web.get("/array", params={"name": GEN, "path": "/grid/v"})
    assert "estimated" in page.text


def test_shards_shown_as_zarr_reads_them(gen: tuple[TestClient, Path]) -> None:
    import zarr

    web, repo_path = gen
    session, _ = _open_direct(repo_path, "grid")
    arr = zarr.open_array(session.store, path="grid/sharded", mode="r")
    info = web.get("/api/array", params={"name": GEN, "path": "/grid/sharded"}).json()
    assert info["grid"]["chunks"] == list(arr.chunks) == [10, 10]
    assert info["grid"]["shards"] == list(arr.shards) == [20, 20]
    assert info["grid"]["count"] == 16 and info["storage"]["objects"] == 4
    assert info["codecs"] == json.loads(json.dumps(arr.metadata.to_dict()["codecs"]))
    page = web.get("/array", params={"name": GEN, "path": "/grid/sharded"})
    assert 'data-testid="array-shards"' in page.text and "sharding_indexed" in page.text
    look = web.get("/quicklook.png", params={"name": GEN, "path": "/grid/sharded"})
    assert look.status_code == 200 and _png(look.content).std() > 10


@pytest.mark.parametrize(
    ("edges", "max_chunks"),
    [
        ([[1] * 3, [5] * 40, [5] * 40], 16),
        ([[1] * 3, [5] * 40, [5] * 40], 1),
        ([[2] * 5, [7] * 3, [100] * 9], 4),
        ([[56, 93], [1], [1], [1]], 1),
        ([[3] * 1000], 16),
    ],
)
def test_plan_selection_stays_within_the_budget(edges: list[list[int]], max_chunks: int) -> None:
    """Pure: the chunks picked fit the budget, positions lie inside the array and inside the
    picked chunks, and at most MAX_CELLS positions per plotted dimension."""
    from icepipe.web.quicklook import MAX_CELLS, plan_selection

    shape = [sum(e) for e in edges]
    dims = [f"d{i}" for i in range(len(edges))]
    sel = plan_selection(dims, shape, edges, {}, max_chunks=max_chunks)
    assert 1 <= sel.chunks_read <= max_chunks
    assert sel.chunks_spanned == math.prod(len(edges[dims.index(d)]) for d in sel.plot_dims)
    touched = 1
    for d, pos in sel.positions.items():
        e = edges[dims.index(d)]
        assert 0 < len(pos) <= MAX_CELLS and pos.min() >= 0 and pos.max() < shape[dims.index(d)]
        bounds = np.cumsum([0, *e])
        touched *= len(set(np.searchsorted(bounds, pos, side="right") - 1))
    assert touched <= sel.chunks_read


def test_attributes_escaped_truncated_in_html_whole_in_json(gen: tuple[TestClient, Path]) -> None:
    web, _ = gen
    page = web.get("/array", params={"name": GEN, "path": "/grid/v"})
    assert page.status_code == 200
    assert SCRIPT not in page.text and "&lt;script&gt;" in page.text
    # Cut in the cell, whole when unfolded (under ATTR_PAGE characters): the first
    # ATTR_SHOWN in the summary, all of it in the details.
    summary = re.search(r"<summary>(history [^<]*)…", page.text)
    assert summary and len(summary.group(1)) == ATTR_SHOWN and LONG.strip() in page.text
    attrs = web.get("/api/array", params={"name": GEN, "path": "/grid/v"}).json()["attributes"]
    assert attrs["note"] == SCRIPT and attrs["history"] == LONG


@pytest.mark.parametrize(
    ("url", "params", "status", "words"),
    [
        ("/array", {"name": "no/such", "path": "/a"}, 404, ["no/such"]),
        ("/api/array", {"name": GEN, "path": "/grid/nope"}, 404, ["/grid/nope"]),
        ("/api/array", {"name": GEN, "path": "/grid/v", "ref": "nope"}, 404, ["nope"]),
        ("/api/array", {"name": GEN, "path": "/grid"}, 400, ["group"]),
        ("/api/array", {"name": GEN, "path": "/grid/../grid/v"}, 404, [".."]),
        ("/api/array", {"name": GEN}, 400, ["path"]),
        (
            "/quicklook.png",
            {"name": GEN, "path": "/grid/v", "index": "time:3"},
            400,
            ["time", "length 3"],
        ),
        ("/quicklook.png", {"name": GEN, "path": "/grid/v", "index": "depth:0"}, 400, ["depth"]),
        ("/quicklook.png", {"name": GEN, "path": "/grid/v", "index": "x:0"}, 400, ["plotted"]),
        ("/quicklook.png", {"name": GEN, "path": "/grid/v", "index": "time=1"}, 400, ["DIM"]),
        ("/quicklook.png", {"name": GEN, "path": "/grid/labels"}, 400, ["labels", "not numbers"]),
        ("/quicklook.png", {"name": GEN, "path": "/grid/zz"}, 404, ["/grid/zz"]),
        ("/array", {"name": GEN, "path": "/grid/v", "i.time": "7"}, 400, ["length 3"]),
        ("/quicklook.png", {"name": GEN, "path": "/grid/v", "plot": "depth"}, 400, ["depth"]),
        ("/quicklook.png", {"name": GEN, "path": "/grid/v", "plot": "time,y,x"}, 400, ["two"]),
    ],
)
def test_errors_are_clean(
    gen: tuple[TestClient, Path], url: str, params: dict[str, str], status: int, words: list[str]
) -> None:
    web, _ = gen
    r = web.get(url, params=params)
    assert r.status_code == status, r.text
    text = r.json()["error"] if url.startswith("/api/") else r.text
    for w in words:
        assert w in text


def test_index_picker_drives_the_picture(gen: tuple[TestClient, Path]) -> None:
    web, _ = gen
    page = web.get("/array", params={"name": GEN, "path": "/grid/v", "i.time": "2"})
    assert page.status_code == 200
    assert 'data-testid="quicklook-form"' in page.text
    assert 'name="i.time" value="2" min="0"' in page.text and 'max="2"' in page.text
    assert "index=time%3A2" in page.text
    assert 'name="i.x"' not in page.text and 'name="i.y"' not in page.text


def test_time_series_at_a_point(web: TestClient) -> None:
    """``plot=DIM``: a line along DIM at the chosen index of the others (here a time series
    of the NEMO field at one ocean point), its picker asking for the other dimensions."""
    q = {"name": "demo/nemo", "path": "/sst/tos", "plot": "time_counter"}
    look = web.get("/quicklook.png", params={**q, "index": "y:150,x:200"})
    assert look.status_code == 200, look.text
    assert look.headers["X-Icepipe-Values"] == "3 of 3 not missing"
    assert int(look.headers["X-Icepipe-Chunks-Read"]) == 3
    assert _png(look.content).std() > 5
    page = web.get("/array", params={**q, "i.y": "150", "i.x": "200"})
    assert 'name="i.y" value="150"' in page.text and 'name="i.time_counter"' not in page.text
    assert "plot=time_counter" in page.text and "index=y%3A150%2Cx%3A200" in page.text


def test_slow_reads_are_504s_naming_the_array(gen: tuple[TestClient, Path]) -> None:
    _, repo_path = gen
    catalog = repo_path.parent / "catalog.yaml"
    web = TestClient(create_app(WebConfig(catalog=str(catalog), request_timeout=1e-9)))
    for url in ("/api/array", "/quicklook.png"):
        r = web.get(url, params={"name": GEN, "path": "/grid/v"})
        assert r.status_code == 504 and "/grid/v" in r.text and GEN in r.text


def test_virtual_chunks_read_through_containers_and_a_lost_source_is_a_502(
    tmp_path: Path,
) -> None:
    """A virtual reference is read from its file (the container authorised by open_repo);
    once the file is gone the picture is a 502 naming the array and the file, not a 500."""
    import zarr

    from icepipe.repository import open_repo

    src = tmp_path / "src"
    src.mkdir()
    raw = src / "raw.bin"
    raw.write_bytes(np.arange(16, dtype="<f4").tobytes())
    repo = open_repo(str(tmp_path / "repo"), create=True, containers=[src.as_uri() + "/"])
    session = repo.writable_session("main")
    arr = zarr.create_array(
        session.store,
        name="virt",
        shape=(4, 4),
        chunks=(4, 4),
        dtype="<f4",
        compressors=None,
        dimension_names=("lat", "lon"),
    )
    session.store.set_virtual_ref("virt/c/0/0", raw.as_uri(), offset=0, length=64)
    assert arr.shape == (4, 4)
    session.commit("virtual")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"repos": {"v/repo": {"url": str(tmp_path / "repo")}}}))
    q = {"name": "v/repo", "path": "/virt"}
    web = TestClient(create_app(WebConfig(catalog=str(catalog))))
    storage = web.get("/api/array", params=q).json()["storage"]
    assert (storage["virtual"], storage["native"], storage["missing"]) == (1, 0, 0)
    look = web.get("/quicklook.png", params=q)
    assert look.status_code == 200 and look.headers["X-Icepipe-Values"] == "16 of 16 not missing"
    raw.unlink()
    fresh = TestClient(create_app(WebConfig(catalog=str(catalog))), raise_server_exceptions=False)
    lost = fresh.get("/quicklook.png", params=q)
    assert lost.status_code == 502 and "/virt" in lost.text and "raw.bin" in lost.text
