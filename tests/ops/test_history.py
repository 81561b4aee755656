"""`icepipe tag | branch | diff | info` on a real repository with two ingest commits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import zarr

from icepipe import repository
from icepipe.cli import main
from tests.conftest import write_pipeline, write_series


def _json(capsys: Any) -> Any:
    return json.loads(capsys.readouterr().out)


def test_tag_branch_diff_and_info(tmp_path: Path, client: Any, capsys: Any) -> None:
    addr = client.scheduler.address
    write_series(tmp_path / "all", 3)
    (tmp_path / "src").mkdir()
    for name in ("f000.nc", "f001.nc"):
        (tmp_path / "all" / name).rename(tmp_path / "src" / name)
    spec = write_pipeline(tmp_path, name="hist", urls="src/*.nc")
    assert main(["run", str(spec), "--scheduler", addr]) == 0
    (tmp_path / "all" / "f002.nc").rename(tmp_path / "src" / "f002.nc")
    assert main(["run", str(spec), "--scheduler", addr]) == 0
    repo = str(tmp_path / "repo")
    capsys.readouterr()

    # Tags: immutable, never reusable; REF~N names ancestors.
    assert main(["tag", repo, "v1", "main~1"]) == 0
    assert main(["tag", repo, "v2"]) == 0
    assert main(["tag", repo, "v1"]) == 2
    assert "immutable" in capsys.readouterr().err
    r = repository.open_repo(repo)
    r.delete_tag("v2")
    assert main(["tag", repo, "v2"]) == 2
    assert "never reuses tag names" in capsys.readouterr().err
    assert main(["tag", repo]) == 0
    assert "v1" in capsys.readouterr().out

    # Branches.
    assert main(["branch", repo, "create", "dev", "v1"]) == 0
    assert main(["branch", repo, "create", "dev", "main"]) == 2
    assert main(["branch", repo, "list", "--json"]) == 0
    capsys.readouterr()
    assert main(["branch", repo, "--json"]) == 0
    refs = {(x["kind"], x["name"]): x["snapshot_id"] for x in _json(capsys)}
    assert refs[("branch", "dev")] == refs[("tag", "v1")] == r.lookup_tag("v1")
    assert main(["branch", repo, "delete", "main"]) == 2
    assert main(["branch", repo, "frobnicate"]) == 2
    capsys.readouterr()

    # Diff: what the second run changed, with its commit and files.
    assert main(["diff", repo, "dev", "main", "--json"]) == 0
    d = _json(capsys)
    assert d["updated_chunks"]["/g/tas"] == 4 and d["updated_chunks"]["/g/time"] == 1
    assert {"/g/tas", "/g/time"} <= set(d["updated_arrays"]) and not d["new_arrays"]
    assert [c["pipeline"] for c in d["commits"]] == ["hist"]
    assert d["files"] == [f"file://{tmp_path}/src/f002.nc"]
    assert main(["diff", repo, "main", "dev"]) == 2
    assert "is not an ancestor" in capsys.readouterr().err
    assert main(["diff", repo, "main~5", "main"]) == 2
    assert main(["diff", repo, "nope", "main"]) == 2
    assert main(["branch", repo, "delete", "dev"]) == 0
    assert "dev" not in repository.open_repo(repo).list_branches()
    capsys.readouterr()

    # Info: the tree, virtual data and inline coordinates.
    assert main(["info", repo, "--json"]) == 0
    nodes = {n["path"]: n for n in _json(capsys)["nodes"]}
    assert set(nodes) == {"/", "/g", "/g/lat", "/g/lon", "/g/tas", "/g/time"}
    tas = nodes["/g/tas"]
    assert tas["shape"] == [12, 5, 6] and tas["dims"] == ["time", "lat", "lon"]
    assert tas["virtual"] == 12 and tas["native"] == tas["inline"] == 0 and tas["grid"] == 12
    assert main(["info", repo, "--ref", "v1", "--exact", "--json"]) == 0
    assert {n["path"]: n for n in _json(capsys)["nodes"]}["/g/tas"]["virtual"] == 8
    assert main(["info", repo]) == 0
    out = capsys.readouterr().out
    assert (
        "tas (time, lat, lon) 12 x 5 x 6 float32 chunks 1x5x6: 12/12 stored (virtual 100%)" in out
    )


def test_info_on_a_sharded_native_array_of_1000_chunks(tmp_path: Path, capsys: Any) -> None:
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    root = zarr.group(session.store)
    a = root.create_array("big", shape=(1000, 64), chunks=(1, 64), dtype="f4")
    a[:] = np.random.default_rng(0).random((1000, 64), dtype="f4")
    b = root.create_array(
        "sub/sharded", shape=(100, 10), chunks=(5, 10), shards=(50, 10), dtype="i4"
    )
    b[:50] = 1  # half the grid written
    session.commit("arrays")
    cost = {}
    for exact in (False, True):
        t0 = time.perf_counter()
        nodes = {
            n.path: n for n in repository.tree_info(repo, repo.lookup_branch("main"), exact=exact)
        }
        cost[exact] = time.perf_counter() - t0
        big, sharded = nodes["/big"], nodes["/sub/sharded"]
        assert big.native + big.inline == 1000 and big.grid == 1000 and big.virtual == 0
        assert sharded.shards == (50, 10) and sharded.grid == 2 and sharded.empty == 1
    assert cost[False] < 2 and cost[True] < 5, cost
    assert main(["info", str(tmp_path / "repo")]) == 0
    assert "sharded (?)" not in capsys.readouterr().out
