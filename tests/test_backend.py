"""The xarray engine (issue 15): ``xr.open_dataset(REPO, engine="icepipe")`` and
``xr.open_datatree`` return what :func:`icepipe.open_dataset` returns, on repositories made
from the real NEMO sample files (virtual and native) and by ``to_icechunk``, with the same
source-access checks on a real S3 server (moto)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import icepipe
from icepipe import repository
from icepipe.backend import IcepipeBackendEntrypoint, is_repository
from icepipe.catalog import UnknownSchemeError
from icepipe.errors import ConfigError, SourceError
from icepipe.repository import RepoNotFoundError
from tests.conftest import REPO_ROOT, S3Server
from tests.test_s3 import _ingest_private


def _nemo_repos(folder: Path, sample_data: Path, client: Any) -> Path:
    """One repository with the NEMO series twice: virtual references (group ``sst``) and
    native chunks (group ``native/sst``)."""
    for name, mode, group in (("v", "virtual", "sst"), ("n", "native", "native/sst")):
        doc = {
            "name": f"nemo-{name}",
            "source": {
                "urls": str(sample_data / "nemo" / "nemo_1m_*_grid-T.nc"),
                "concat_dim": "time_counter",
                "order_by": "time_centered",
            },
            "mode": mode,
            "target": {"repo": str(folder / "nemo"), "group": group},
        }
        spec = folder / f"{name}.yaml"
        spec.write_text(yaml.safe_dump(doc))
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    return folder / "nemo"


@pytest.fixture(scope="module")
def nemo(tmp_path_factory: pytest.TempPathFactory, sample_data: Path, client: Any) -> Path:
    return _nemo_repos(tmp_path_factory.mktemp("backend"), sample_data, client)


@pytest.mark.parametrize("group", ["sst", "native/sst"])
def test_engine_equals_icepipe_open_dataset(nemo: Path, group: str) -> None:
    expected = icepipe.open_dataset(str(nemo), group=group).load()
    got = xr.open_dataset(str(nemo), engine="icepipe", group=group)
    xr.testing.assert_identical(got.load(), expected)
    assert expected.sizes["time_counter"] == 3
    # Without engine=: xarray guesses icepipe for a repository folder.
    xr.testing.assert_identical(xr.open_dataset(nemo, group=group).load(), expected)
    # Dask chunks follow the stored chunks, as icepipe.open_dataset(chunks={}).
    lazy = xr.open_dataset(str(nemo), engine="icepipe", group=group, chunks={})
    ref = icepipe.open_dataset(str(nemo), group=group, chunks={})
    for name, var in ref.data_vars.items():
        assert lazy[name].chunks == var.chunks, name
    xr.testing.assert_identical(lazy.load(), expected)


def test_engine_decoding_options(nemo: Path) -> None:
    raw = xr.open_dataset(nemo, engine="icepipe", group="sst", decode_times=False)
    expected = icepipe.open_dataset(str(nemo), group="sst", decode_times=False)
    xr.testing.assert_identical(raw.load(), expected.load())
    assert not np.issubdtype(raw["time_centered"].dtype, np.datetime64)
    names = sorted(str(n) for n in expected.data_vars)
    dropped = xr.open_dataset(nemo, engine="icepipe", group="sst", drop_variables=names[:1])
    assert names[0] not in dropped and names[1] in dropped


def test_engine_datatree(nemo: Path) -> None:
    tree = xr.open_datatree(str(nemo), engine="icepipe")
    assert {"/sst", "/native/sst"} <= set(tree.groups)
    for group in ("sst", "native/sst"):
        expected = icepipe.open_dataset(str(nemo), group=group).load()
        xr.testing.assert_identical(tree[group].to_dataset().load(), expected)
    sub = xr.open_datatree(str(nemo), engine="icepipe", group="native")
    xr.testing.assert_identical(
        sub["sst"].to_dataset().load(), icepipe.open_dataset(str(nemo), group="native/sst").load()
    )


def test_engine_versions_and_catalog_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """branch=, tag=, snapshot_id= read what icepipe.open_dataset reads; catalog names too."""
    import icechunk  # the test sets a tag with icechunk itself

    repo = tmp_path / "repo"
    first = xr.Dataset(
        {"t": (("time",), np.arange(4.0))}, coords={"time": pd.date_range("2020", periods=4)}
    )
    snap1 = icepipe.to_icechunk(first, str(repo), group="g")
    second = first.assign_coords(time=pd.date_range("2020-01-05", periods=4))
    icepipe.to_icechunk(second, str(repo), group="g", append_dim="time")
    ic = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    ic.create_tag("v1", snapshot_id=snap1)
    ic.create_branch("old", snapshot_id=snap1)
    for kw in ({"tag": "v1"}, {"snapshot_id": snap1}, {"branch": "old"}):
        got = xr.open_dataset(repo, engine="icepipe", group="g", **kw)
        xr.testing.assert_identical(got.load(), icepipe.open_dataset(str(repo), group="g", **kw))
        assert got.sizes["time"] == 4
    assert xr.open_dataset(repo, engine="icepipe", group="g").sizes["time"] == 8

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"repos": {"acme/tiny": {"url": str(repo)}}}))
    monkeypatch.setenv("ICEPIPE_CATALOG", str(catalog))
    monkeypatch.chdir(tmp_path)
    for name in ("catalog:acme/tiny", "acme/tiny"):
        assert is_repository(name)
        xr.testing.assert_identical(
            xr.open_dataset(name, engine="icepipe", group="g", tag="v1").load(), first
        )
        assert xr.open_datatree(name, engine="icepipe")["g"].sizes["time"] == 8
    with pytest.raises(UnknownSchemeError):
        xr.open_dataset("katalog:acme/tiny", engine="icepipe")
    with pytest.raises(ConfigError, match="no group 'nope'"):
        xr.open_dataset(repo, engine="icepipe", group="nope")
    with pytest.raises(ConfigError, match="tag 'v9'"):
        xr.open_dataset(repo, engine="icepipe", group="g", tag="v9")
    with pytest.raises(RepoNotFoundError):
        xr.open_dataset(tmp_path / "missing", engine="icepipe")


def test_guess_can_open(tmp_path: Path, nemo: Path, sample_data: Path) -> None:
    engine = IcepipeBackendEntrypoint()
    assert engine.guess_can_open(str(nemo)) and engine.guess_can_open(nemo)
    assert engine.guess_can_open("catalog:acme/anything")
    assert not engine.guess_can_open(str(tmp_path))  # a plain folder
    nc = next((sample_data / "nemo").glob("*.nc"))
    assert not engine.guess_can_open(str(nc)) and not engine.guess_can_open(b"\x89HDF")
    assert not engine.guess_can_open(str(tmp_path / "missing"))
    assert xr.backends.list_engines()["icepipe"].__class__ is IcepipeBackendEntrypoint


def test_engine_checks_source_access_like_open_dataset(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    """Virtual references into a private bucket: a reader without access gets icepipe's
    error at open, for both entry points; a deleted source file is a SourceError."""
    p = _ingest_private(tmp_path, s3, s3_client)
    t = p.target
    expected = icepipe.open_dataset(t.repo, group="g", storage=t.storage).load()
    got = xr.open_dataset(t.repo, engine="icepipe", group="g", storage=t.storage)
    xr.testing.assert_identical(got.load(), expected)
    anonymous = {"anonymous": True}
    for opener in (xr.open_dataset, xr.open_datatree):
        with pytest.raises(ConfigError, match=r"may not read the source files.*access denied"):
            opener(t.repo, engine="icepipe", group="g", storage=t.storage, source_storage=anonymous)
    with pytest.raises(ConfigError, match=r"may not read the source files"):
        xr.open_datatree(t.repo, engine="icepipe", storage=t.storage, source_storage=anonymous)
    r = icepipe.open_repo(t.repo, storage=t.storage)
    url = sorted(repository.read_ledger(r, r.lookup_branch("main"), "g"))[0]
    s3.delete(url)
    with pytest.raises(SourceError, match="no longer exists"):
        xr.open_dataset(t.repo, engine="icepipe", group="g", storage=t.storage)


def test_entry_point_is_declared_for_a_fresh_install() -> None:
    """`make venv` (pip install -e) registers the engine from pyproject.toml; a new Python
    process finds it through importlib.metadata without importing icepipe first."""
    code = (
        "import importlib.metadata as m;"
        "eps = m.entry_points(group='xarray.backends');"
        "print([e.value for e in eps if e.name == 'icepipe'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "['icepipe.backend:IcepipeBackendEntrypoint']"


def test_engine_ref_reads_what_the_commands_name(tmp_path: Path) -> None:
    """ref= takes `REF~N`, `branch:NAME`, `tag:NAME` as `icepipe info --ref` does, and
    refuses to be combined with branch=, tag= or snapshot_id= (in icepipe.open_dataset too)."""
    import icechunk  # the test sets a tag with icechunk itself

    repo = tmp_path / "repo"
    first = xr.Dataset(
        {"t": (("time",), np.arange(4.0))}, coords={"time": pd.date_range("2020", periods=4)}
    )
    snap1 = icepipe.to_icechunk(first, str(repo), group="g")
    second = first.assign_coords(time=pd.date_range("2020-01-05", periods=4))
    icepipe.to_icechunk(second, str(repo), group="g", append_dim="time")
    ic = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    ic.create_tag("v2", snapshot_id=ic.lookup_branch("main"))
    ic.create_branch("v2", snapshot_id=snap1)  # a branch named like the tag
    for ref, n in (("main~1", 4), ("main", 8), ("tag:v2", 8), ("branch:v2", 4), ("v2", 4)):
        got = xr.open_dataset(repo, engine="icepipe", group="g", ref=ref)
        assert got.sizes["time"] == n, ref
        xr.testing.assert_identical(got.load(), icepipe.open_dataset(str(repo), group="g", ref=ref))
    xr.testing.assert_identical(
        xr.open_dataset(repo, engine="icepipe", group="g", ref="tag:v2~1").load(), first
    )
    tree = xr.open_datatree(repo, engine="icepipe", ref="main~1")
    assert tree["g"].sizes["time"] == 4

    for other in ({"branch": "main"}, {"tag": "v2"}, {"snapshot_id": snap1}):
        for opener in (
            lambda **kw: xr.open_dataset(repo, engine="icepipe", group="g", **kw),
            lambda **kw: xr.open_datatree(repo, engine="icepipe", **kw),
            lambda **kw: icepipe.open_dataset(str(repo), group="g", **kw),
        ):
            with pytest.raises(ConfigError, match="either ref= or") as info:
                opener(ref="main~1", **other)
            assert info.value.field == "ref"
    with pytest.raises(ConfigError, match="fewer than 9 ancestors"):
        xr.open_dataset(repo, engine="icepipe", group="g", ref="main~9")
