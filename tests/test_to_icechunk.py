"""icepipe.to_icechunk: every mode, every kind of target, virtual datasets, concurrent writers.

Real repositories under ``tmp_path``; concurrent writers are separate processes
(``tests/concurrent_writer.py``) racing on one local repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe.errors import ConfigError
from icepipe.repository import RepoNotFoundError, open_repo

from .conftest import branch_tip

WRITER = Path(__file__).with_name("concurrent_writer.py")


def temperature(n: int = 24, *, start: int = 0, value: float | None = None) -> xr.Dataset:
    """``t2m(time, lat)`` plus a static ``mask(lat)``; values identify the time step."""
    times = np.arange(start, start + n)
    t2m = (
        np.full((n, 3), value)
        if value is not None
        else times[:, None] * 10.0 + np.arange(3)[None, :]
    )
    return xr.Dataset(
        {"t2m": (("time", "lat"), t2m), "mask": (("lat",), np.array([1, 0, 1], dtype="i1"))},
        coords={"time": times, "lat": [-10.0, 0.0, 10.0]},
        attrs={"title": "t"},
    )


ENCODING = {"t2m": {"chunks": (6, 3)}, "time": {"chunks": (6,)}}
Backing = Callable[[xr.Dataset], xr.Dataset]


def numpy_backed(ds: xr.Dataset) -> xr.Dataset:
    return ds


def dask_backed(ds: xr.Dataset) -> xr.Dataset:
    # Misaligned with the 6-step chunks on purpose.
    return ds.chunk({"time": 5})


BACKINGS = [pytest.param(numpy_backed, id="numpy"), pytest.param(dask_backed, id="dask")]


def repo_at(path: Path) -> icechunk.Repository:
    return open_repo(str(path))


def stored(path: Path, group: str | None = "era5", **kw: Any) -> xr.Dataset:
    return icepipe.open_dataset(str(path), group=group, **kw).load()


def history(path: Path, branch: str = "main") -> list[Any]:
    return list(repo_at(path).ancestry(branch=branch))


# ----------------------------------------------------------------------------------------------
# Writing and committing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backing", BACKINGS)
def test_create_commit_and_read_back(tmp_path: Path, client: Any, backing: Backing) -> None:
    path = tmp_path / "repo"
    snap = icepipe.to_icechunk(backing(temperature()), path, group="era5", encoding=ENCODING)
    assert snap == branch_tip(path)
    xr.testing.assert_identical(stored(path), temperature())
    info = history(path)[0]
    assert info.message == "icepipe.to_icechunk: write mask, t2m into era5"
    assert info.metadata["icepipe"] == {
        "version": icepipe.__version__,
        "mode": "native",
        "api": "to_icechunk",
        "group": "era5",
    }


@pytest.mark.parametrize("backing", BACKINGS)
def test_append_along_time(tmp_path: Path, client: Any, backing: Backing) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    # 24 steps end on a chunk boundary; 7 more leave the last chunk partial for the next one.
    for start, n in [(24, 7), (31, 10)]:
        icepipe.to_icechunk(
            backing(temperature(n, start=start)), path, group="era5", append_dim="time"
        )
    xr.testing.assert_identical(stored(path), temperature(41))
    assert history(path)[0].message == "icepipe.to_icechunk: append mask, t2m to era5 along time"


@pytest.mark.parametrize("backing", BACKINGS)
def test_region_write_r_plus(tmp_path: Path, client: Any, backing: Backing) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    part = temperature(12, start=6, value=-1.0)[["t2m"]].drop_vars(["time", "lat"])
    icepipe.to_icechunk(backing(part), path, group="era5", region={"time": slice(6, 18)})
    expected = temperature()
    expected["t2m"][6:18] = -1.0
    xr.testing.assert_identical(stored(path), expected)
    # The same write located by coordinate values, in mode "a".
    auto = temperature(6, start=18, value=-2.0)[["t2m"]].drop_vars("lat")
    icepipe.to_icechunk(backing(auto), path, group="era5", region="auto", mode="a")
    expected["t2m"][18:24] = -2.0
    np.testing.assert_array_equal(stored(path)["t2m"].values, expected["t2m"].values)


def test_mode_w_replaces_and_w_minus_refuses(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    tip = branch_tip(path)
    with pytest.raises(ConfigError, match=r"already holds data.*mode='w'"):
        icepipe.to_icechunk(temperature(), path, group="era5")
    with pytest.raises(ConfigError, match="already holds data"):
        icepipe.to_icechunk(temperature(), path, group="era5", mode="w-")
    assert branch_tip(path) == tip
    icepipe.to_icechunk(temperature(5, start=100), path, group="era5", mode="w")
    xr.testing.assert_identical(stored(path), temperature(5, start=100))


def test_mode_a_adds_and_overwrites_variables(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    extra = xr.Dataset({"mask": (("lat",), np.array([0, 0, 0], dtype="i1")), "z": ((), 5.0)})
    icepipe.to_icechunk(extra, path, group="era5", mode="a")
    back = stored(path)
    assert back["mask"].values.tolist() == [0, 0, 0] and float(back["z"]) == 5.0
    np.testing.assert_array_equal(back["t2m"].values, temperature()["t2m"].values)


def test_mode_a_minus_appends_only_variables_along_append_dim(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    more = temperature(6, start=24)
    more["mask"] = more["mask"] * 0  # not along time: "a-" must leave it alone
    icepipe.to_icechunk(more, path, group="era5", mode="a-", append_dim="time")
    back = stored(path)
    assert back.sizes["time"] == 30 and back["mask"].values.tolist() == [1, 0, 1]


def test_r_plus_refuses_new_variables(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    with pytest.raises(ConfigError, match=r"non-pre-existing variables.*mode='a'"):
        icepipe.to_icechunk(
            xr.Dataset({"new": (("lat",), np.zeros(3))}), path, group="era5", mode="r+"
        )


def test_misaligned_dask_region_is_rejected_with_the_aligned_one(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    tip = branch_tip(path)
    part = temperature(9, start=3, value=-1.0)[["t2m"]].drop_vars(["time", "lat"])
    with pytest.raises(ConfigError, match=r"slice\(3, 12\).*widen it to slice\(0, 12\)"):
        icepipe.to_icechunk(part.chunk(time=3), path, group="era5", region={"time": slice(3, 12)})
    assert branch_tip(path) == tip
    # Numpy data, written by this process, may cut through chunks.
    icepipe.to_icechunk(part, path, group="era5", region={"time": slice(3, 12)})
    expected = temperature()
    expected["t2m"][3:12] = -1.0
    xr.testing.assert_identical(stored(path), expected)


def test_misaligned_dask_chunks_are_rechunked(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "repo"
    ds = temperature(50).chunk({"time": (1, 13, 20, 16), "lat": (2, 1)})
    icepipe.to_icechunk(ds, path, group="era5", encoding={"t2m": {"chunks": (4, 2)}})
    xr.testing.assert_identical(stored(path), temperature(50))
    assert stored(path, chunks={})["t2m"].encoding["chunks"] == (4, 2)


def test_appends_and_regions_never_create_a_repository(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    with pytest.raises(RepoNotFoundError, match="to append to; create it first"):
        icepipe.to_icechunk(temperature(), path, group="era5", append_dim="time")
    with pytest.raises(RepoNotFoundError, match="to write into"):
        icepipe.to_icechunk(temperature(), path, group="era5", region={"time": slice(0, 6)})
    assert not path.exists()


def test_unknown_append_dim_names_the_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    with pytest.raises(ConfigError, match=r"no dimension 'step'.*lat \(3\), time \(24\)"):
        icepipe.to_icechunk(temperature(), path, group="era5", append_dim="step")


def test_message_metadata_and_branch(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    main = branch_tip(path)
    snap = icepipe.to_icechunk(
        temperature(6, start=24),
        path,
        branch="dev",
        group="era5",
        append_dim="time",
        message="day 2",
        metadata={"run": 7, "icepipe": {"forged": True}},
    )
    assert branch_tip(path) == main and branch_tip(path, "dev") == snap
    info = history(path, "dev")[0]
    assert info.message == "day 2" and info.metadata["run"] == 7
    assert info.metadata["icepipe"]["api"] == "to_icechunk"
    assert "forged" not in info.metadata["icepipe"]


def test_bad_arguments_create_nothing(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    with pytest.raises(ConfigError, match=r"metadata.*JSON"):
        icepipe.to_icechunk(temperature(), path, metadata={"when": object()})
    with pytest.raises(ConfigError, match="max_attempts"):
        icepipe.to_icechunk(temperature(), path, max_attempts=0)
    with pytest.raises(ConfigError, match=r"repository path, an icechunk\.Repository"):
        icepipe.to_icechunk(temperature(), 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected one of"):
        icepipe.to_icechunk(temperature(), path, mode="x")  # type: ignore[arg-type]
    assert not path.exists()


# ----------------------------------------------------------------------------------------------
# Given a Repository or a Session
# ----------------------------------------------------------------------------------------------


def test_given_a_repository(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "repo"
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    snap = icepipe.to_icechunk(dask_backed(temperature()), repo, group="era5", encoding=ENCODING)
    assert snap == repo.lookup_branch("main")
    xr.testing.assert_identical(stored(path), temperature())


def test_given_an_in_memory_repository(client: Any) -> None:
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    snap = icepipe.to_icechunk(dask_backed(temperature()), repo, encoding=ENCODING)
    assert isinstance(snap, str)
    back = xr.open_zarr(repo.readonly_session("main").store, consolidated=False, chunks=None)
    xr.testing.assert_identical(back, temperature())


@pytest.mark.parametrize("backing", BACKINGS)
def test_given_a_session_writes_without_committing(
    tmp_path: Path, client: Any, backing: Backing
) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5", encoding=ENCODING)
    repo = repo_at(path)
    tip = repo.lookup_branch("main")
    session = repo.writable_session("main")
    more = backing(temperature(6, start=24))
    assert icepipe.to_icechunk(more, session, group="era5", append_dim="time") is None
    assert session.has_uncommitted_changes and repo.lookup_branch("main") == tip
    # The caller may write more into the same session, then commits it.
    icepipe.to_icechunk(backing(temperature(6, start=30)), session, group="era5", append_dim="time")
    session.commit("two appends, one commit")
    xr.testing.assert_identical(stored(path), temperature(36))


def test_read_only_session_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(temperature(), path, group="era5")
    with pytest.raises(ConfigError, match="writable"):
        icepipe.to_icechunk(temperature(), repo_at(path).readonly_session("main"), group="x")


# ----------------------------------------------------------------------------------------------
# Virtual datasets
# ----------------------------------------------------------------------------------------------


def open_virtual(path: Path) -> xr.Dataset:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file:///": LocalStore("/")})
    vds: xr.Dataset = open_virtual_dataset(
        f"file://{path}", registry=registry, parser=HDFParser(), decode_times=False
    )
    return vds.drop_encoding()


def test_virtual_dataset_create_and_append(
    tmp_path: Path, series: Callable[..., list[Path]]
) -> None:
    files = series(2, steps=3)
    path = tmp_path / "repo"
    icepipe.to_icechunk(open_virtual(files[0]), path, group="v")
    assert history(path)[0].metadata["icepipe"]["mode"] == "virtual"
    icepipe.to_icechunk(open_virtual(files[1]), path, group="v", append_dim="time")
    expected = xr.open_mfdataset(files, combine="by_coords").load()
    back = stored(path, "v")
    np.testing.assert_array_equal(back["tas"].values, expected["tas"].values)
    np.testing.assert_array_equal(back["time"].values, expected["time"].values)


def test_virtual_dataset_needs_a_container(
    tmp_path: Path, series: Callable[..., list[Path]]
) -> None:
    (file,) = series(1, steps=2)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    with pytest.raises(ConfigError, match=r"no virtual chunk container.*pass the repository as"):
        icepipe.to_icechunk(open_virtual(file), repo, group="v")


# ----------------------------------------------------------------------------------------------
# Concurrent writers: separate processes racing on one local repository
# ----------------------------------------------------------------------------------------------


def race(tmp_path: Path, jobs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Run one writer process per job at once; return each writer's per-round results."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                json.dumps({**job, "barrier": str(barrier), "parties": len(jobs)}),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    return results


def test_concurrent_disjoint_region_writes_both_land(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    base = xr.Dataset({"a": (("x",), np.zeros(60))}, coords={"x": np.arange(60)})
    icepipe.to_icechunk(base, path, group="g", encoding={"a": {"chunks": (10,)}})
    common = {"repo": str(path), "group": "g", "chunk": 10}
    rounds = {
        "left": [{"op": "region", "start": s, "stop": s + 10, "value": s + 1} for s in (0, 20, 40)],
        "right": [
            {"op": "region", "start": s, "stop": s + 10, "value": s + 1} for s in (10, 30, 50)
        ],
    }
    results = race(tmp_path, [{**common, "name": n, "rounds": r} for n, r in rounds.items()])
    assert all("ok" in r for writer in results for r in writer), results
    a = stored(path, "g")["a"].values
    np.testing.assert_array_equal(a, np.repeat(np.arange(0, 60, 10) + 1.0, 10))
    commits = history(path)[:6]
    assert all(c.metadata["icepipe"]["api"] == "to_icechunk" for c in commits)
    # The race really happened: the later commits were rebased, not redone.
    assert any(c.metadata["__icechunk"]["rebase_attempts"] >= 1 for c in commits)
    assert all(r["blocks"] == 1 for writer in results for r in writer), "no write was redone"


def test_concurrent_appends_all_land_once(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    base = xr.Dataset({"a": (("x",), np.arange(10.0))}, coords={"x": np.arange(10)})
    icepipe.to_icechunk(base, path, group="g", encoding={"a": {"chunks": (4,)}})
    common = {"repo": str(path), "group": "g", "chunk": 3}
    rounds = {
        "one": [{"op": "append", "start": s, "n": 5} for s in (100, 110, 120)],
        "two": [{"op": "append", "start": s, "n": 5} for s in (200, 210, 220)],
    }
    results = race(tmp_path, [{**common, "name": n, "rounds": r} for n, r in rounds.items()])
    assert all("ok" in r for writer in results for r in writer), results
    back = stored(path, "g")
    x, a = back["x"].values, back["a"].values
    appended = [r["start"] + i for rs in rounds.values() for r in rs for i in range(5)]
    expected = sorted([*range(10), *appended])
    assert sorted(x.tolist()) == expected, "every append landed exactly once"
    np.testing.assert_array_equal(a, x.astype("f8"))  # data rows stayed with their coordinates
    # Each append is one block of 3 and one of 2 when written once: more blocks = redone.
    assert sum(r["blocks"] for writer in results for r in writer) > 2 * 6, "no race happened"


def test_concurrent_writes_of_the_same_chunks_one_wins_one_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    base = xr.Dataset({"a": (("x",), np.zeros(20))}, coords={"x": np.arange(20)})
    icepipe.to_icechunk(base, path, group="g", encoding={"a": {"chunks": (10,)}})
    common = {"repo": str(path), "group": "g", "chunk": 10}
    jobs = [
        {**common, "name": name, "rounds": [{"op": "region", "start": 0, "stop": 10, "value": v}]}
        for name, v in (("one", 1.0), ("two", 2.0))
    ]
    (one,), (two,) = race(tmp_path, jobs)
    winner, loser = (one, two) if "ok" in one else (two, one)
    assert "ok" in winner and loser.get("error") == "ConflictError", (one, two)
    assert "/g/a" in loser["message"] and "Chunk double update" in loser["message"]
    assert loser["conflicts"]["conflicts"] == ["/g/a: Chunk double update, chunks [[0]]"]
    value = 1.0 if winner is one else 2.0
    assert (stored(path, "g")["a"].values[:10] == value).all(), "the winner's data stands"
    assert branch_tip(path) == winner["ok"]
