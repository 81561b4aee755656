"""repository/native.py: writing Datasets into sessions, and the commit policy under concurrency.

Real repositories under ``tmp_path``; distributed writes on the session's ``LocalCluster``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icepipe.errors import ConfigError, ConflictError, StaleWriteError, StorageError
from icepipe.repository import (
    commit,
    local_path,
    location_of,
    open_repo,
    write_and_commit,
    write_dataset,
)

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def new_repo(tmp_path: Path, name: str = "repo") -> tuple[str, icechunk.Repository]:
    path = str(tmp_path / name)
    return path, open_repo(path, create=True)


def read(repo: icechunk.Repository, path: str, *, branch: str = "main") -> np.ndarray:
    return np.asarray(zarr.open_array(repo.readonly_session(branch).store, path=path, mode="r")[:])


def grid(n: int = 40, value: float = 0.0) -> xr.Dataset:
    """``a(x, y)`` and ``b(x)`` chunked by 10 along x, with an index coordinate ``x``."""
    return xr.Dataset(
        {"a": (("x", "y"), np.full((n, 4), value)), "b": (("x",), np.full(n, value))},
        coords={"x": np.arange(n)},
        attrs={"title": "grid"},
    )


META = np.array((), dtype="f8")  # map_blocks must not call hooks to infer the output
GRID_ENCODING = {"a": {"chunks": (10, 4)}, "b": {"chunks": (10,)}, "x": {"chunks": (10,)}}


def base_repo(tmp_path: Path, n: int = 40) -> tuple[str, icechunk.Repository]:
    path, repo = new_repo(tmp_path)
    session = repo.writable_session("main")
    write_dataset(session, grid(n), group="g", encoding=GRID_ENCODING)
    commit(session, message="base", metadata={}, lock=path)
    return path, repo


def region_of(value: float, start: int, stop: int, var: str = "a") -> xr.Dataset:
    n = stop - start
    if var == "a":
        return xr.Dataset({"a": (("x", "y"), np.full((n, 4), value))})
    return xr.Dataset({var: (("x",), np.full(n, value))})


def appended(value: float, n: int = 5) -> xr.Dataset:
    start = int(1000 + value * 10)
    return xr.Dataset(
        {"a": (("x", "y"), np.full((n, 4), value)), "b": (("x",), np.full(n, value))},
        coords={"x": np.arange(start, start + n)},
    )


# ----------------------------------------------------------------------------------------------
# write_dataset
# ----------------------------------------------------------------------------------------------


def test_write_leaves_the_session_uncommitted(tmp_path: Path) -> None:
    _, repo = new_repo(tmp_path)
    tip = repo.lookup_branch("main")
    session = repo.writable_session("main")
    write_dataset(session, grid().chunk({"x": 7}), group="g", encoding=GRID_ENCODING)
    assert session.has_uncommitted_changes
    assert repo.lookup_branch("main") == tip
    session.commit("by the caller")
    np.testing.assert_array_equal(read(repo, "g/a"), np.zeros((40, 4)))


def test_misaligned_dask_chunks_are_rechunked_onto_chunks_and_shards(
    tmp_path: Path, client: Any
) -> None:
    _, repo = new_repo(tmp_path)
    data = np.arange(53 * 6, dtype="f8").reshape(53, 6)
    ds = xr.Dataset({"a": (("t", "y"), data), "c": (("t", "y"), -data)}).chunk(
        {"t": (4, 30, 19), "y": (1, 5)}
    )
    enc = {"a": {"chunks": (5, 3)}, "c": {"chunks": (2, 3), "shards": (8, 6)}}
    session = repo.writable_session("main")
    write_dataset(session, ds, encoding=enc)
    session.commit("x")
    snap = repo.readonly_session("main")
    a = zarr.open_array(snap.store, path="a", mode="r")
    c = zarr.open_array(snap.store, path="c", mode="r")
    assert a.chunks == (5, 3) and c.chunks == (2, 3) and c.shards == (8, 6)
    np.testing.assert_array_equal(a[:], data)
    np.testing.assert_array_equal(c[:], -data)


def test_append_with_misaligned_dask_chunks_after_a_partial_last_chunk(
    tmp_path: Path, client: Any
) -> None:
    _, repo = new_repo(tmp_path)
    full = np.random.default_rng(1).random((53, 6))
    session = repo.writable_session("main")
    write_dataset(
        session,
        xr.Dataset({"a": (("t", "y"), full[:17])}).chunk({"t": 5}),
        encoding={"a": {"chunks": (5, 3)}},
    )
    session.commit("first 17 rows: the last chunk is partial")
    session = repo.writable_session("main")
    more = xr.Dataset({"a": (("t", "y"), full[17:])}).chunk({"t": (7, 11, 18), "y": (1, 5)})
    write_dataset(session, more, append_dim="t")
    session.commit("append")
    np.testing.assert_array_equal(read(repo, "a"), full)


def test_dask_regions_must_cover_whole_chunks(tmp_path: Path) -> None:
    # xarray's mode="r+" rule: the rest of a cut chunk is usually written by another task
    # into another fork, and merging forks keeps only one of the two writes.
    _, repo = base_repo(tmp_path)
    session = repo.writable_session("main")
    with pytest.raises(ConfigError, match=r"'a' along 'x': slice\(5, 20\).*slice\(0, 20\)"):
        write_dataset(
            session, region_of(1, 5, 20).chunk(x=5), group="g", region={"x": slice(5, 20)}
        )
    with pytest.raises(ConfigError, match=r"slice\(0, 15\).*slice\(0, 20\)"):
        write_dataset(
            session, region_of(1, 0, 15).chunk(x=5), group="g", region={"x": slice(0, 15)}
        )
    assert not session.has_uncommitted_changes
    # The array's end is a boundary even when the last chunk is partial.
    _, repo = base_repo(tmp_path / "short", n=35)
    session = repo.writable_session("main")
    write_dataset(session, region_of(7, 30, 35).chunk(x=2), group="g", region={"x": slice(30, 35)})
    session.commit("last partial chunk")
    assert (read(repo, "g/a")[30:] == 7).all() and (read(repo, "g/a")[:30] == 0).all()


def test_numpy_regions_and_safe_chunks_false_may_cut_through_chunks(tmp_path: Path) -> None:
    _, repo = base_repo(tmp_path)
    session = repo.writable_session("main")
    write_dataset(session, region_of(1, 5, 17), group="g", region={"x": slice(5, 17)})
    # Dask chunks of 3 cut the chunks of 10: icepipe aligns them, so one task owns each chunk.
    write_dataset(
        session,
        region_of(2, 23, 38).chunk(x=3),
        group="g",
        region={"x": slice(23, 38)},
        safe_chunks=False,
    )
    session.commit("cut chunks")
    expected = np.zeros((40, 4))
    expected[5:17] = 1
    expected[23:38] = 2
    np.testing.assert_array_equal(read(repo, "g/a"), expected)


def test_region_auto_is_checked_against_the_chunks(tmp_path: Path) -> None:
    _, repo = base_repo(tmp_path)
    part = grid().isel(x=slice(12, 20)).drop_vars("b").chunk(x=4)
    with pytest.raises(ConfigError, match=r"slice\(12, 20\).*slice\(10, 20\)"):
        write_dataset(repo.writable_session("main"), part, group="g", region="auto")
    session = repo.writable_session("main")
    write_dataset(
        session, (grid().isel(x=slice(10, 20)) + 3).drop_vars("b"), group="g", region="auto"
    )
    session.commit("auto region")
    assert (read(repo, "g/a")[10:20] == 3).all() and (read(repo, "g/a")[20:] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"append_dim": "time"}, r"no dimension 'time'.*dimensions are: x \(40\), y \(4\)"),
        ({"mode": "w-"}, "already holds data.*mode='w'"),
        ({"mode": "r"}, "expected one of w, w-, a, a-, r\\+"),
        ({"region": {"x": slice(0, 10, 2)}}, "contiguous"),
        ({"region": {"x": 3}}, "expected a slice or 'auto'"),
    ],
)
def test_bad_arguments_raise_config_errors_with_the_fix(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    _, repo = base_repo(tmp_path)
    with pytest.raises(ConfigError, match=match):
        write_dataset(repo.writable_session("main"), appended(1), group="g", **kwargs)


def test_appending_to_a_missing_group_says_create_it_first(tmp_path: Path) -> None:
    _, repo = new_repo(tmp_path)
    with pytest.raises(ConfigError, match=r"does not exist.*create it first"):
        write_dataset(repo.writable_session("main"), appended(1), group="g", append_dim="x")


def test_read_only_sessions_and_dataarrays_are_rejected(tmp_path: Path) -> None:
    _, repo = base_repo(tmp_path)
    with pytest.raises(ConfigError, match="writable"):
        write_dataset(repo.readonly_session("main"), grid(), group="h")
    with pytest.raises(ConfigError, match="to_dataset"):
        write_dataset(repo.writable_session("main"), grid()["a"], group="h")  # type: ignore[arg-type]


def test_a_failing_task_on_a_worker_surfaces_and_nothing_is_committed(
    tmp_path: Path, client: Any
) -> None:
    _, repo = new_repo(tmp_path)
    tip = repo.lookup_branch("main")

    def boom(block: np.ndarray) -> np.ndarray:
        if block.size and block.flat[0] >= 20:
            raise ValueError("bad block from the source")
        return block

    data = da.arange(40, chunks=10, dtype="f8").map_blocks(boom, dtype="f8")
    with pytest.raises(ConfigError, match="bad block from the source") as info:
        write_and_commit(
            repo,
            xr.Dataset({"a": (("x",), data)}),
            message="m",
            metadata={},
            encoding={"a": {"chunks": (10,)}},
        )
    assert repo.lookup_branch("main") == tip
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args


# ----------------------------------------------------------------------------------------------
# Property: a distributed write through icepipe == a serial write
# ----------------------------------------------------------------------------------------------


def _partition(draw: st.DrawFn, size: int) -> tuple[int, ...]:
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=4))) if size > 1 else []
    bounds = [0, *cuts, size]
    return tuple(bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1))


@st.composite
def datasets(draw: st.DrawFn) -> tuple[xr.Dataset, dict[str, Any], str | None, int]:
    """(numpy dataset, encoding, append dim or None, rows written before the append)."""
    n_dims = draw(st.integers(1, 3))
    sizes = {f"d{i}": draw(st.integers(1, 12)) for i in range(n_dims)}
    names = list(sizes)
    data_vars: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    for v in range(draw(st.integers(1, 3))):
        # The first variable always has the first dimension, which appends go along.
        dims = [d for d in names if (v == 0 and d == names[0]) or draw(st.booleans())]
        dims = dims or [names[0]]
        shape = tuple(sizes[d] for d in dims)
        dtype = draw(st.sampled_from(["f8", "i4"]))
        values = (np.arange(int(np.prod(shape))) * (v + 1)).reshape(shape).astype(dtype)
        data_vars[f"v{v}"] = (dims, values)
        chunks = tuple(draw(st.integers(1, sizes[d])) for d in dims)
        enc: dict[str, Any] = {"chunks": chunks}
        if draw(st.booleans()):
            enc["shards"] = tuple(c * draw(st.integers(1, 3)) for c in chunks)
        encoding[f"v{v}"] = enc
    ds = xr.Dataset(data_vars)
    first = names[0]
    append_dim = first if sizes[first] > 1 and draw(st.booleans()) else None
    split = draw(st.integers(1, sizes[first] - 1)) if append_dim else sizes[first]
    if append_dim:
        # Every variable must have the append dimension to be appended.
        ds = ds[[v for v in ds.data_vars if append_dim in ds[v].dims]]
        encoding = {v: encoding[v] for v in ds.data_vars}
    return ds, encoding, append_dim, split


@st.composite
def dask_chunked(draw: st.DrawFn, ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with random, per-variable (so mutually inconsistent) Dask chunks."""
    out = {}
    for name, var in ds.data_vars.items():
        out[name] = var.chunk({d: _partition(draw, n) for d, n in var.sizes.items()})
    return xr.Dataset(out)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), case=datasets())
def test_distributed_write_equals_serial_write(
    tmp_path_factory: pytest.TempPathFactory,
    client: Any,
    data: st.DataObject,
    case: tuple[xr.Dataset, dict[str, Any], str | None, int],
) -> None:
    ds, encoding, append_dim, split = case
    tmp = tmp_path_factory.mktemp("prop")
    parts = (
        [ds.isel({append_dim: slice(0, split)}), ds.isel({append_dim: slice(split, None)})]
        if append_dim
        else [ds]
    )
    # Distributed, through icepipe, with misaligned Dask chunks.
    path, repo = new_repo(tmp, "distributed")
    for i, part in enumerate(parts):
        write_and_commit(
            repo,
            data.draw(dask_chunked(part)),
            message=f"part {i}",
            metadata={},
            encoding=encoding if i == 0 else None,
            append_dim=append_dim if i else None,
        )
    # Serial reference: plain to_zarr of numpy data into a second repository.
    serial = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp / "serial")))
    for i, part in enumerate(parts):
        session = serial.writable_session("main")
        part.to_zarr(
            session.store,
            zarr_format=3,
            consolidated=False,
            encoding=encoding if i == 0 else None,
            append_dim=append_dim if i else None,
            mode="a" if i else "w-",
        )
        session.commit(f"part {i}")
    assert local_path(repo) == path
    for name in ds.data_vars:
        got = zarr.open_array(repo.readonly_session("main").store, path=str(name), mode="r")
        want = zarr.open_array(serial.readonly_session("main").store, path=str(name), mode="r")
        assert (got.chunks, got.shards, got.shape) == (want.chunks, want.shards, want.shape)
        np.testing.assert_array_equal(got[:], want[:])
        np.testing.assert_array_equal(got[:], ds[name].values)


def _stored(repo: icechunk.Repository) -> dict[str, Any]:
    """Every node of the tip: metadata documents, and each array's values and chunk count."""
    root = zarr.open_group(repo.readonly_session("main").store, mode="r", zarr_format=3)
    out: dict[str, Any] = {"/": root.metadata.to_dict()}
    for path, node in root.members(max_depth=None):
        out[path] = node.metadata.to_dict()
        if isinstance(node, zarr.Array):
            out[path + " values"] = node[:].tobytes()
            out[path + " chunks"] = node.nchunks_initialized
    return out


def test_dask_writes_store_what_icechunks_own_to_icechunk_stores(
    tmp_path: Path, client: Any
) -> None:
    """write_dataset merges the forks itself (without icechunk.dask's per-call closures): the
    create, append and region writes store exactly what icechunk.xarray.to_icechunk stores,
    on the distributed client, with several variables, groups and merge levels."""
    import icechunk.xarray

    enc = {"a": {"chunks": (4, 4)}, "b": {"chunks": (4,)}}
    first = grid(40, 1.0).assign(a=lambda d: d.a + np.arange(4)).chunk({"x": 4})
    more = appended(2.0, n=9).chunk({"x": 4})
    region = region_of(3.0, 8, 16).chunk({"x": 4})
    writes: list[tuple[xr.Dataset, dict[str, Any]]] = [
        (first, {"mode": "w-", "encoding": enc}),
        (more, {"append_dim": "x"}),
        (region, {"region": {"x": slice(8, 16)}}),
    ]
    ours, theirs = new_repo(tmp_path, "ours")[1], new_repo(tmp_path, "theirs")[1]
    for ds, kwargs in writes:
        for repo, write in ((ours, write_dataset), (theirs, icechunk.xarray.to_icechunk)):
            session = repo.writable_session("main")
            if write is write_dataset:
                write_dataset(session, ds, group="g/h", **kwargs)
            else:
                write(ds, session, group="g/h", align_chunks=True, **kwargs)
            session.commit("write")
        assert _stored(ours) == _stored(theirs)
    assert _stored(ours)["g/h/a chunks"] == 13  # 49 rows in chunks of 4
    np.testing.assert_array_equal(read(ours, "g/h/a")[8:16], np.full((8, 4), 3.0))


# ----------------------------------------------------------------------------------------------
# The commit policy: two sessions from the same tip, the first commits, then the second
# ----------------------------------------------------------------------------------------------

Write = Callable[[icechunk.Session], None]


def region_write(value: float, start: int, stop: int, var: str = "a") -> Write:
    return lambda s: write_dataset(
        s, region_of(value, start, stop, var), group="g", region={"x": slice(start, stop)}
    )


def append_write(value: float) -> Write:
    return lambda s: write_dataset(s, appended(value), group="g", append_dim="x")


def new_variable(name: str) -> Write:
    return lambda s: write_dataset(s, xr.Dataset({name: (("y",), np.ones(4))}), group="g", mode="a")


def create_group(group: str, value: float) -> Write:
    return lambda s: write_dataset(
        s, xr.Dataset({"c": (("z",), np.full(3, value))}), group=group, mode="w-"
    )


REBASED, REDO, CONFLICT = "rebased", "redo", "conflict"
Check = Callable[[icechunk.Repository], bool]


def rows(var: str, start: int, stop: int, value: float) -> Check:
    return lambda repo: bool((read(repo, var)[start:stop] == value).all())


def length(var: str, n: int) -> Check:
    return lambda repo: read(repo, var).shape[0] == n


# name: (first write, second write, whether the second appends, outcome for the second,
#        what must hold once both landed, or once the first stands alone for conflicts)
MATRIX: dict[str, tuple[Write, Write, bool, str, list[Check]]] = {
    "regions in disjoint chunks": (
        region_write(1, 0, 10),
        region_write(2, 20, 30),
        False,
        REBASED,
        [rows("g/a", 0, 10, 1), rows("g/a", 20, 30, 2), rows("g/a", 10, 20, 0)],
    ),
    "same rows, different arrays": (
        region_write(1, 0, 10),
        region_write(2, 0, 10, "b"),
        False,
        REBASED,
        [rows("g/a", 0, 10, 1), rows("g/b", 0, 10, 2)],
    ),
    "region, then an append": (
        region_write(1, 0, 10),
        append_write(2),
        True,
        REBASED,
        [rows("g/a", 0, 10, 1), rows("g/a", 40, 45, 2), length("g/a", 45)],
    ),
    "different new groups": (
        create_group("g2", 1),
        create_group("g3", 2),
        False,
        REBASED,
        [rows("g2/c", 0, 3, 1), rows("g3/c", 0, 3, 2)],
    ),
    "two appends": (
        append_write(1),
        append_write(2),
        True,
        REDO,
        [rows("g/b", 40, 45, 1), rows("g/b", 45, 50, 2), length("g/b", 50)],
    ),
    "append, then a region": (
        append_write(1),
        region_write(2, 0, 10),
        False,
        REDO,
        [rows("g/a", 0, 10, 2), rows("g/a", 40, 45, 1), length("g/a", 45)],
    ),
    "region on the partial last chunk, then an append": (
        region_write(1, 30, 35),
        append_write(2),
        True,
        REDO,
        [rows("g/a", 30, 35, 1), rows("g/a", 35, 40, 2), length("g/a", 40)],
    ),
    "new variables in one group (mode a)": (
        new_variable("c"),
        new_variable("d"),
        False,
        REDO,
        [rows("g/c", 0, 4, 1), rows("g/d", 0, 4, 1)],
    ),
    "the same chunks": (
        region_write(1, 0, 10),
        region_write(2, 0, 10),
        False,
        CONFLICT,
        [rows("g/a", 0, 10, 1)],
    ),
    "the same new group": (
        create_group("g2", 1),
        create_group("g2", 2),
        False,
        CONFLICT,
        [rows("g2/c", 0, 3, 1)],
    ),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_conflict_matrix(tmp_path: Path, case: str) -> None:
    first, second, appending, expected, checks = MATRIX[case]
    path, repo = base_repo(tmp_path, n=35 if "partial" in case else 40)
    s1, s2 = repo.writable_session("main"), repo.writable_session("main")
    first(s1)
    second(s2)
    tip = commit(s1, message="first", metadata={}, group="g", lock=path)

    def commit_second(session: icechunk.Session) -> str:
        return commit(
            session, message="second", metadata={}, group="g", appending=appending, lock=path
        )

    if expected == REBASED:
        snap = commit_second(s2)
        assert repo.lookup_snapshot(snap).metadata["__icechunk"]["rebase_attempts"] >= 1
    else:
        with pytest.raises(ConflictError) as info:
            commit_second(s2)
        assert type(info.value) is (StaleWriteError if expected == REDO else ConflictError)
        assert repo.lookup_branch("main") == tip, "a failed commit must leave the branch alone"
        assert pickle.loads(pickle.dumps(info.value)).conflicts == info.value.conflicts
        if expected == CONFLICT:
            assert info.value.conflicts and "another writer changed /g" in str(info.value)
        else:
            # Redo on the tip: as if the second writer had started after the first.
            s3 = repo.writable_session("main")
            second(s3)
            commit_second(s3)
    assert all(check(repo) for check in checks)


def test_same_chunk_conflict_names_the_array_and_chunks(tmp_path: Path) -> None:
    path, repo = base_repo(tmp_path)
    s1, s2 = repo.writable_session("main"), repo.writable_session("main")
    region_write(1, 10, 20)(s1)
    region_write(2, 10, 20)(s2)
    commit(s1, message="first", metadata={}, group="g", lock=path)
    with pytest.raises(ConflictError, match=r"/g/a.*chunks \[\[1, 0\]\]") as info:
        commit(s2, message="second", metadata={}, group="g", lock=path)
    assert info.value.conflicts == ("/g/a: Chunk double update, chunks [[1, 0]]",)
    assert (read(repo, "g/a")[10:20] == 1).all(), "the first writer's data stands"


def test_appends_redo_until_they_land(tmp_path: Path) -> None:
    """write_and_commit redoes an append that lost the race, on the new tip."""
    path, repo = base_repo(tmp_path)
    racer = repo.writable_session("main")
    append_write(1)(racer)
    calls = []

    def on_tip(ds: xr.Dataset) -> xr.Dataset:
        # Let the racer commit once, while our first attempt is in flight.
        if not calls:
            commit(racer, message="racer", metadata={}, group="g", lock=path)
        calls.append(1)
        return ds

    data = appended(2)
    data["b"] = data["b"].copy(data=da.from_array(data["b"].values).map_blocks(on_tip, meta=META))
    with dask.config.set(scheduler="threads"):  # the hook needs the racer's session in-process
        write_and_commit(repo, data, group="g", append_dim="x", message="m", metadata={})
    assert len(calls) >= 2, "the append was redone"
    b = read(repo, "g/b")
    assert b.shape == (50,) and list(b[40:45]) == [1] * 5 and list(b[45:]) == [2] * 5


def test_max_attempts_bounds_the_redo(tmp_path: Path) -> None:
    path, repo = base_repo(tmp_path)

    def someone_else_appends(ds: xr.Dataset) -> xr.Dataset:
        racer = repo.writable_session("main")
        append_write(9)(racer)
        commit(racer, message="racer", metadata={}, group="g", lock=path)
        return ds

    data = appended(2)
    data["b"] = data["b"].copy(
        data=da.from_array(data["b"].values).map_blocks(someone_else_appends, meta=META)
    )
    with (
        dask.config.set(scheduler="threads"),
        pytest.raises(ConflictError, match="gave up after 2 attempts"),
    ):
        write_and_commit(
            repo, data, group="g", append_dim="x", message="m", metadata={}, max_attempts=2
        )
    with pytest.raises(ConfigError, match="max_attempts"):
        write_and_commit(repo, data, message="m", metadata={}, max_attempts=0)
    with pytest.raises(ConfigError, match="JSON"):
        write_and_commit(repo, grid(), group="h", message="m", metadata={"x": object()})


# ----------------------------------------------------------------------------------------------
# Pickling: what crosses to workers, and errors coming back
# ----------------------------------------------------------------------------------------------


def test_forks_pickle_writable_sessions_do_not(tmp_path: Path) -> None:
    _, repo = base_repo(tmp_path)
    session = repo.writable_session("main")
    write_dataset(session, region_of(5, 0, 10), group="g", region={"x": slice(0, 10)})
    fork = pickle.loads(pickle.dumps(session.fork()))
    zarr.open_array(fork.store, path="g/b", mode="a")[10:20] = 6
    session.merge(fork)
    session.commit("merged")
    b = read(repo, "g/b")
    assert (b[10:20] == 6).all()
    with pytest.raises(ValueError, match="fork"):
        pickle.dumps(repo.writable_session("main"))


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("bad region", field="region"),
        ConflictError("same chunks", conflicts=["/g/a: Chunk double update, chunks [[0, 0]]"]),
        StaleWriteError("moved", conflicts=["/g: Zarr metadata double update"]),
        StorageError("disk full; retry"),
    ],
)
def test_errors_pickle_with_their_attributes(error: Exception) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and back.args == error.args
    assert back.__dict__ == error.__dict__


def test_local_path_is_the_folder_commit_lock_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    repo = open_repo("relative/repo with space", create=True)
    assert local_path(repo) == str(tmp_path / "relative" / "repo with space")
    assert local_path(icechunk.Repository.create(icechunk.in_memory_storage())) is None


def test_in_memory_sessions_cannot_reach_workers_and_say_so(client: Any) -> None:
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    with pytest.raises(StorageError, match=r"in-memory repository.*threaded scheduler"):
        write_dataset(repo.writable_session("main"), grid().chunk({"x": 10}))
    # write_and_commit knows the storage and keeps the forks in-process.
    write_and_commit(repo, grid().chunk({"x": 10}), message="m", metadata={})
    np.testing.assert_array_equal(read(repo, "a"), np.zeros((40, 4)))


def test_local_path_of_an_opened_repository_is_where_icepipe_opened_it(tmp_path: Path) -> None:
    # A trailing space is lost when the folder is read back from Icechunk's description of the
    # storage; icepipe knows where it opened the repository.
    path = str(tmp_path / "repo ")
    repo = open_repo(path, create=True)
    assert location_of(repo) == path
    assert local_path(repo) == path
    assert location_of(icechunk.Repository.open(icechunk.local_filesystem_storage(path))) is None
    ds = xr.Dataset({"v": ("x", np.arange(4.0))})
    write_and_commit(repo, ds, message="one", metadata={})
    xr.testing.assert_identical(
        xr.open_zarr(open_repo(path).readonly_session("main").store, consolidated=False).load(),
        ds,
    )
