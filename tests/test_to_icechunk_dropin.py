"""icepipe.to_icechunk as a drop-in superset of icechunk.xarray.to_icechunk (issue 15).

Metamorphic checks: the same call through both functions gives the same stored data and the
same kind of exception; where icepipe differs (Dask chunks straddling target chunks are
aligned), icechunk's result is checked to be the one that can lose data. Icechunk's own tests,
run against icepipe, are in tests/icechunk_port/.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icechunk
import icechunk.xarray
import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe.errors import (
    ArgumentTypeError,
    ConfigError,
    TargetExistsError,
    TargetNotFoundError,
    WriteKeyError,
)

Writer = Callable[..., Any]
WRITERS = [
    pytest.param(icechunk.xarray.to_icechunk, id="icechunk"),
    pytest.param(icepipe.to_icechunk, id="icepipe"),
]


def new_session(tmp_path: Path, name: str = "repo") -> icechunk.Session:
    storage = icechunk.local_filesystem_storage(str(tmp_path / name))
    return icechunk.Repository.create(storage).writable_session("main")


def series(n: int = 20, value: float | None = None, start: int = 0) -> xr.Dataset:
    a = np.arange(n * 3, dtype="f8").reshape(n, 3) if value is None else np.full((n, 3), value)
    x = np.arange(start, start + n)
    return xr.Dataset({"a": (("x", "y"), a)}, coords={"x": x, "y": [10, 20, 30]}, attrs={"t": "s"})


ENCODING = {"a": {"chunks": (5, 3)}}


def read(session: icechunk.Session, group: str | None = None) -> xr.Dataset:
    return xr.open_zarr(session.store, group=group, consolidated=False, chunks=None).load()


# ----------------------------------------------------------------------------------------------
# The same calls, the same results
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dask", [False, True], ids=["numpy", "dask"])
def test_session_writes_equal_icechunks_and_commit_nothing(tmp_path: Path, dask: bool) -> None:
    data = series().chunk(x=5) if dask else series()
    results = []
    for name, write in (("ic", icechunk.xarray.to_icechunk), ("ip", icepipe.to_icechunk)):
        session = new_session(tmp_path, name)
        base = session.snapshot_id
        assert write(data, session=session, group="g", encoding=ENCODING) is None
        write(series(4, -1.0, start=20), session, group="g", append_dim="x", split_every=2)
        write(series(3, value=7.0).isel(x=slice(0, 3)), session, group="g", region="auto")
        # Nothing committed: the session still sits on the snapshot it started from.
        assert session.snapshot_id == base and session.has_uncommitted_changes
        session.commit("caller commits")
        results.append(read(session, "g"))
    xr.testing.assert_identical(results[0], results[1])
    assert results[1]["a"][:3].values.tolist() == [[7.0] * 3] * 3


@pytest.mark.parametrize(
    "name", [None, "temperature", "x"], ids=["unnamed", "named", "named-like-its-dim"]
)
def test_dataarrays_are_written_as_icechunk_writes_them(tmp_path: Path, name: str | None) -> None:
    da = series()["a"].rename(name)
    stored = []
    for writer in ("ic", "ip"):
        session = new_session(tmp_path, writer)
        write = icechunk.xarray.to_icechunk if writer == "ic" else icepipe.to_icechunk
        write(da, session)
        session.commit("a DataArray")
        stored.append(read(session))
        back = xr.open_dataarray(session.store, engine="zarr", consolidated=False)
        xr.testing.assert_identical(back, da)
    xr.testing.assert_identical(stored[0], stored[1])


def test_a_dataarray_into_a_repository_path_is_committed(tmp_path: Path) -> None:
    snapshot = icepipe.to_icechunk(series()["a"], tmp_path / "repo", group="g")
    back = icepipe.open_dataset(str(tmp_path / "repo"), group="g")
    assert isinstance(snapshot, str)
    xr.testing.assert_identical(back["a"].load(), series()["a"])


def _exists(write: Writer, session: icechunk.Session) -> None:
    write(series(), session, group="g")


def _missing_group(write: Writer, session: icechunk.Session) -> None:
    write(series(), session, group="nowhere", mode="r+")


def _auto_region_values_missing(write: Writer, session: icechunk.Session) -> None:
    write(series(3).assign_coords(x=[100, 101, 102]), session, group="g", region="auto")


def _region_not_slices(write: Writer, session: icechunk.Session) -> None:
    write(series(3), session, group="g", region={"x": 3})


def _unknown_append_dim(write: Writer, session: icechunk.Session) -> None:
    write(series(3), session, group="g", append_dim="time")


CASES = {
    "exists": (_exists, FileExistsError, TargetExistsError),
    "missing group": (_missing_group, FileNotFoundError, TargetNotFoundError),
    "auto region values missing": (_auto_region_values_missing, KeyError, WriteKeyError),
    "region not slices": (_region_not_slices, TypeError, ArgumentTypeError),
    "unknown append_dim": (_unknown_append_dim, ValueError, ConfigError),
}


@pytest.mark.parametrize("case", list(CASES))
def test_errors_keep_the_builtin_type_xarray_raises(tmp_path: Path, case: str) -> None:
    call, builtin, ours = CASES[case]
    for name, write in (("ic", icechunk.xarray.to_icechunk), ("ip", icepipe.to_icechunk)):
        session = new_session(tmp_path, name)
        icechunk.xarray.to_icechunk(series(), session, group="g", encoding=ENCODING)
        with pytest.raises(builtin) as info:
            call(write, session)
        if write is icepipe.to_icechunk:
            assert type(info.value) is ours and isinstance(info.value, ConfigError)
            assert info.value.exit_code == 2
            copy = pickle.loads(pickle.dumps(info.value))
            assert type(copy) is ours and str(copy) == str(info.value)
            assert not str(info.value).startswith("'")  # KeyError's quoting is not kept


def test_the_same_writes_through_a_repository_path_keep_the_types(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    icepipe.to_icechunk(series(), path, group="g", encoding=ENCODING)
    with pytest.raises(FileExistsError, match="already holds data"):
        icepipe.to_icechunk(series(), path, group="g")
    with pytest.raises(KeyError, match="Not all values of coordinate 'x'"):
        icepipe.to_icechunk(
            series(3).assign_coords(x=[100, 101, 102]), path, group="g", region="auto"
        )


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


def test_repo_or_session_not_both_not_neither(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    with pytest.raises(ConfigError, match="not both"):
        icepipe.to_icechunk(series(), tmp_path / "other", session=session)
    with pytest.raises(TypeError, match="where to write"):
        icepipe.to_icechunk(series())
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    with pytest.raises(TypeError, match="second argument instead"):
        icepipe.to_icechunk(series(), session=repo)  # type: ignore[arg-type]
    assert not (tmp_path / "other").exists() and not session.has_uncommitted_changes


def test_icechunk_keywords_reach_the_write(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "repo"
    store_kwargs: dict[str, Any] = {}
    icepipe.to_icechunk(
        series(40).chunk(x=5),
        path,
        group="g",
        encoding=ENCODING,
        safe_chunks=True,
        align_chunks=False,
        split_every=2,
        chunkmanager_store_kwargs=store_kwargs,
    )
    assert store_kwargs == {}  # the repository path hands dask a copy per attempt
    xr.testing.assert_identical(icepipe.open_dataset(str(path), group="g").load(), series(40))
    # Into a session the mapping reaches dask.array.store as in Icechunk (which adds its keys
    # to it), and a key xarray sets itself fails the same way.
    for name, write in (("ic", icechunk.xarray.to_icechunk), ("ip", icepipe.to_icechunk)):
        session, given = new_session(tmp_path, name), {"scheduler": "threads"}
        write(series().chunk(x=5), session, group="g", chunkmanager_store_kwargs=given)
        assert given == {"scheduler": "threads", "load_stored": False, "return_stored": True}
        with pytest.raises(TypeError, match="multiple values for keyword argument 'lock'"):
            write(series().chunk(x=5), session, group="h", chunkmanager_store_kwargs={"lock": 0})
    # align_chunks=False keeps xarray's check of Dask chunks straddling target chunks.
    with pytest.raises(ValueError, match="overlap multiple Dask chunks"):
        icepipe.to_icechunk(
            series(40).chunk(x=3), path, group="h", encoding=ENCODING, align_chunks=False
        )


# ----------------------------------------------------------------------------------------------
# Where icepipe differs: nothing that can lose data
# ----------------------------------------------------------------------------------------------


def test_numpy_region_cutting_chunks_is_written_like_icechunk(tmp_path: Path) -> None:
    results = []
    for name, write in (("ic", icechunk.xarray.to_icechunk), ("ip", icepipe.to_icechunk)):
        session = new_session(tmp_path, name)
        write(series(), session, group="g", encoding=ENCODING)
        part = series(9, value=-1.0).drop_vars(["x", "y"])
        write(part, session, group="g", region={"x": slice(3, 12)})
        session.commit("a region across chunk boundaries")
        results.append(read(session, "g"))
    xr.testing.assert_identical(results[0], results[1])
    assert (results[1]["a"][3:12] == -1).all() and (results[1]["a"][12:] >= 0).all()


def test_dask_region_cutting_chunks_in_r_plus_is_refused_like_xarray(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    icepipe.to_icechunk(series(), session=session, group="g", encoding=ENCODING)
    part = series(9, value=-1.0).drop_vars(["x", "y"]).chunk(x=9)
    with pytest.raises(ValueError, match=r"slice\(3, 12\).*slice\(0, 15\).*safe_chunks=False"):
        icepipe.to_icechunk(part, session=session, group="g", region={"x": slice(3, 12)})
    with pytest.raises(ValueError):  # icechunk refuses it too (xarray's safe_chunks)
        icechunk.xarray.to_icechunk(part, session, group="g", region={"x": slice(3, 12)})


def test_safe_chunks_false_never_loses_data(tmp_path: Path, client: Any) -> None:
    """Dask chunks of 3 over target chunks of 5, written by several worker processes: icepipe
    aligns them (one task per chunk), where icechunk lets two tasks race on one chunk and the
    fork merge keep one of the two."""
    n = 60
    data = series(n).chunk(x=3)
    session = new_session(tmp_path)
    icepipe.to_icechunk(data, session=session, group="g", encoding=ENCODING, safe_chunks=False)
    part = series(n - 2, value=-1.0).drop_vars(["x", "y"]).chunk(x=3)
    icepipe.to_icechunk(part, session, group="g", region={"x": slice(1, n - 1)}, safe_chunks=False)
    session.commit("unsafe chunks, written safely")
    expected = series(n)
    expected["a"][1 : n - 1] = -1.0
    xr.testing.assert_identical(read(session, "g"), expected)
