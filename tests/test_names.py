"""One name, everywhere (issue 15): ``catalog:org/name`` and bare ``org/name`` in the Python API,
pipelines and every command; unknown ``xxx:`` prefixes refused; ``open_repo`` and
``get_or_create_repo``; ``icepipe repo create`` with object-storage options (moto)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import icepipe
from icepipe.catalog import UnknownSchemeError, check_prefix, resolve_repo
from icepipe.cli import main
from icepipe.errors import ConfigError
from icepipe.repository import RepoNotFoundError
from tests.conftest import S3_SECRET, S3Server, write_pipeline, write_series


def _ds(n: int = 4, start: str = "2020-01-01") -> xr.Dataset:
    rng = np.random.default_rng(n)
    return xr.Dataset(
        {"tas": (("time", "lat"), rng.random((n, 3)).astype("f4"), {"units": "K"})},
        coords={"time": pd.date_range(start, periods=n, freq="D"), "lat": [-10.0, 0.0, 10.0]},
    )


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty catalog for this test, and a working folder to run in (relative paths)."""
    path = tmp_path / "conf" / "catalog.yaml"
    monkeypatch.setenv("ICEPIPE_CATALOG", str(path))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return path


def _register(catalog: Path, name: str, url: Path | str, **entry: Any) -> None:
    doc = yaml.safe_load(catalog.read_text()) if catalog.exists() else None
    doc = doc or {"repos": {}}
    doc["repos"][name] = {"url": str(url), **entry}
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(yaml.safe_dump(doc))


def test_to_icechunk_writes_into_the_catalog_entry(catalog: Path, tmp_path: Path) -> None:
    """The issue's case: the entry points elsewhere; nothing named `catalog:...` appears."""
    elsewhere = tmp_path / "elsewhere" / "tiny"
    _register(catalog, "acme/tiny", elsewhere)
    ds = _ds()
    snapshot = icepipe.to_icechunk(ds, "catalog:acme/tiny", group="g")
    assert snapshot and (elsewhere / "repo").exists()
    assert sorted(os.listdir(tmp_path / "work")) == []  # no folder literally named catalog:...
    for name in ("catalog:acme/tiny", "acme/tiny", str(elsewhere)):
        back = icepipe.open_dataset(name, group="g")
        xr.testing.assert_identical(back.load(), ds)
    # Appends through the bare name land in the same repository.
    icepipe.to_icechunk(_ds(2, "2020-01-05"), "acme/tiny", group="g", append_dim="time")
    assert icepipe.open_dataset(str(elsewhere), group="g").sizes["time"] == 6
    repo = icepipe.open_repo("acme/tiny")
    assert repo.lookup_branch("main") != snapshot


def test_unknown_prefixes_are_refused_everywhere(catalog: Path, tmp_path: Path) -> None:
    ds = _ds()
    for call in (
        lambda: icepipe.to_icechunk(ds, "katalog:acme/tiny"),
        lambda: icepipe.open_dataset("katalog:acme/tiny"),
        lambda: icepipe.open_repo("katalog:acme/tiny"),
    ):
        with pytest.raises(UnknownSchemeError) as info:
            call()
        assert info.value.value == "katalog:acme/tiny" and info.value.exit_code == 2
        assert "catalog:acme/tiny" in str(info.value) and "./katalog:acme/tiny" in str(info.value)
    assert os.listdir(tmp_path / "work") == []
    with pytest.raises(UnknownSchemeError, match="did you mean s3://bucket/x"):
        icepipe.open_dataset("s3:bucket/x")
    # A pipeline's target and every command taking a repository.
    write_series(tmp_path / "src", 1)
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo="xyz:acme/tiny")
    with pytest.raises(UnknownSchemeError) as exc:
        icepipe.load_pipeline(spec)
    assert exc.value.field == "target.repo"
    for argv in (["log", "xyz:r"], ["info", "xyz:r"], ["tag", "xyz:r"], ["branch", "xyz:r"]):
        assert main(argv) == 2, argv
    assert main(["repo", "create", "acme/x", "xyz:somewhere"]) == 2
    assert os.listdir(tmp_path / "work") == []


def test_check_prefix_lets_urls_paths_and_catalog_names_through() -> None:
    for ok in ("s3://b/p", "gs://b/p", "az://c/p", "file:///tmp/x", "https://h/p", "memory://x"):
        check_prefix(ok)
    for ok in ("catalog:acme/x", "repos/nemo", "/abs/path", "./a:b", "C"):
        check_prefix(ok)
    for bad in ("cat:acme/x", "s3:b/p", "arraylake:acme/x", "ab:"):
        with pytest.raises(UnknownSchemeError):
            check_prefix(bad)


def test_bare_names_and_paths(catalog: Path, tmp_path: Path) -> None:
    """A bare org/name is the catalog's when no folder of that name exists; a Path object is
    always a path; a folder and an entry of the same name is refused as ambiguous."""
    _register(catalog, "acme/tiny", tmp_path / "elsewhere")
    assert resolve_repo("acme/tiny").url == str(tmp_path / "elsewhere")
    assert resolve_repo(Path("acme/tiny")).url == "acme/tiny"
    assert resolve_repo("other/name").url == "other/name"  # not in the catalog: a path
    (tmp_path / "work" / "acme" / "tiny").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"catalog:acme/tiny for the entry or ./acme/tiny"):
        resolve_repo("acme/tiny")
    assert resolve_repo("./acme/tiny").url == "./acme/tiny"
    assert resolve_repo("catalog:acme/tiny").url == str(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="from the catalog"):
        resolve_repo("catalog:acme/tiny", storage=icepipe.storage.StorageOptions(region="x"))
    with pytest.raises(ConfigError, match="no repository named 'acme/nope'"):
        icepipe.open_dataset("catalog:acme/nope")


def test_pipeline_targets_a_bare_catalog_name(catalog: Path, tmp_path: Path) -> None:
    target = tmp_path / "named"
    _register(catalog, "acme/series", target)
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo="acme/series", group="g")
    pipeline = icepipe.load_pipeline(spec)
    assert pipeline.target.repo == str(target)
    result = icepipe.run(pipeline)  # a small run: scanned in this process, no cluster
    assert result.status == "committed" and (target / "repo").exists()
    assert not (tmp_path / "acme").exists()
    assert main(["log", "acme/series"]) == 0
    assert icepipe.open_dataset("acme/series", group="g").sizes["time"] == 8


def test_get_or_create_repo(catalog: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass url="):
        icepipe.get_or_create_repo("acme/new")
    repo = icepipe.get_or_create_repo("acme/new", url=str(tmp_path / "new"), description="d")
    assert repo.lookup_branch("main")
    entry = yaml.safe_load(catalog.read_text())["repos"]["acme/new"]
    assert entry == {"url": str(tmp_path / "new"), "description": "d"}
    icepipe.to_icechunk(_ds(), "acme/new")
    again = icepipe.get_or_create_repo("catalog:acme/new")
    assert again.lookup_branch("main") == icepipe.open_repo("acme/new").lookup_branch("main")
    assert icepipe.get_or_create_repo("acme/new", url=str(tmp_path / "new")).lookup_branch("main")
    with pytest.raises(ConfigError, match=r"not '.*other'"):
        icepipe.get_or_create_repo("acme/new", url=str(tmp_path / "other"))
    with pytest.raises(ConfigError, match="other storage options"):
        icepipe.get_or_create_repo("acme/new", storage={"region": "eu-west-1"})
    with pytest.raises(ConfigError, match="object-store repositories"):
        icepipe.get_or_create_repo("acme/bad", url=str(tmp_path / "bad"), storage={"region": "x"})
    with pytest.raises(RepoNotFoundError):
        icepipe.open_repo(str(tmp_path / "missing"))
    # An entry whose repository was removed is created again where the catalog says.
    _register(catalog, "acme/gone", tmp_path / "gone")
    assert icepipe.get_or_create_repo("acme/gone").lookup_branch("main")
    assert (tmp_path / "gone" / "repo").exists()


def test_repo_create_with_storage_options_on_s3(
    catalog: Path, s3: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3.bucket("names")
    argv = ["repo", "create", "acme/s3", f"s3://{bucket}/tiny", "--endpoint", s3.endpoint]
    argv += ["--region", "us-east-1", "--path-style", "--allow-http"]
    argv += ["--access-key-id-env", "ICEPIPE_TEST_KEY_ID"]
    argv += ["--secret-access-key-env", "ICEPIPE_TEST_SECRET"]
    assert main(argv) == 0, capsys.readouterr().err
    text = catalog.read_text()
    assert S3_SECRET not in text and "ICEPIPE_TEST_SECRET" in text
    entry = yaml.safe_load(text)["repos"]["acme/s3"]
    assert entry["storage"] == {
        "access_key_id_env": "ICEPIPE_TEST_KEY_ID",
        "allow_http": True,
        "endpoint": s3.endpoint,
        "force_path_style": True,
        "region": "us-east-1",
        "secret_access_key_env": "ICEPIPE_TEST_SECRET",
    }
    ds = _ds()
    snapshot = icepipe.to_icechunk(ds, "catalog:acme/s3", group="g")
    xr.testing.assert_identical(icepipe.open_dataset("acme/s3", group="g").load(), ds)
    assert icepipe.open_repo("acme/s3").lookup_branch("main") == snapshot
    capsys.readouterr()
    assert main(["log", "acme/s3"]) == 0
    assert "to_icechunk" in capsys.readouterr().out
    # Storage options for a local path, or a secret's value instead of its name: refused.
    assert main(["repo", "create", "acme/loc", "somewhere", "--region", "x"]) == 2
    assert main(["repo", "create", "acme/s", f"s3://{bucket}/x", "--access-key-id-env", "a=b"]) == 2
    assert "acme/loc" not in catalog.read_text()


def test_icechunk_cli_aliases(
    catalog: Path, tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``icechunk:ALIAS`` reads the aliases of icechunk's own command line; the file is the
    one icechunk's CLI reads (it lists the same aliases)."""
    import subprocess
    import sys

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    local, bucket = tmp_path / "local-repo", s3.bucket("alias")
    config = tmp_path / "xdg" / "icechunk" / "cli-config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f"""repos:
  loc: !LocalFileSystem
    path: {local}
    config: {{}}
  lake: !S3
    location: {{bucket: {bucket}, prefix: cube}}
    object_store_config: {{region: us-east-1, endpoint_url: "{s3.endpoint}",
      anonymous: false, allow_http: true, force_path_style: true}}
    credentials: {{s3_credential_type: from_env}}
    config: {{}}
  secret: !S3
    location: {{bucket: {bucket}, prefix: other}}
    object_store_config: {{region: us-east-1, anonymous: false, allow_http: false,
      force_path_style: false}}
    credentials: {{s3_credential_type: static, access_key_id: AK, secret_access_key: SK}}
    config: {{}}
"""
    )
    # icechunk's CLI (installed with its wheel) parses the same file; one it cannot parse it
    # lists as `repos: {}`.
    cli = Path(sys.executable).parent / "icechunk"
    listed = subprocess.run([str(cli), "config", "list"], capture_output=True, text=True)
    assert all(f"{a}: !" in listed.stdout for a in ("loc", "lake", "secret")), listed.stdout
    ds = _ds()
    icepipe.to_icechunk(ds, "icechunk:loc", group="g")
    assert (local / "repo").exists()
    xr.testing.assert_identical(icepipe.open_dataset(str(local), group="g").load(), ds)
    icepipe.to_icechunk(ds, "icechunk:lake")
    entry = resolve_repo("icechunk:lake")
    assert entry.url == f"s3://{bucket}/cube" and entry.storage.endpoint == s3.endpoint
    xr.testing.assert_identical(xr.open_dataset("icechunk:lake", engine="icepipe").load(), ds)
    assert main(["log", "icechunk:lake"]) == 0
    with pytest.raises(ConfigError, match="static credentials"):
        icepipe.open_repo("icechunk:secret")
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo="icechunk:loc")
    assert icepipe.load_pipeline(spec).target.repo == str(local)
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo="icechunk:lake")
    target = icepipe.load_pipeline(spec).target
    assert (target.repo, target.storage) == (entry.url, entry.storage)
    with pytest.raises(ConfigError, match=r"no repository alias 'nope'.*known: lake, loc, secret"):
        icepipe.open_dataset("icechunk:nope")


def test_repo_create_reads_credentials_from_the_named_variables_on_seaweedfs(
    catalog: Path, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS checks credentials: the standard variables hold wrong ones, so writes and reads
    through the catalog name succeed only with the variables the entry names."""
    bucket = seaweedfs.bucket("names")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    reach = ["--endpoint", seaweedfs.endpoint, "--path-style", "--allow-http"]
    named = ["--access-key-id-env", "ICEPIPE_TEST_KEY_ID"]
    named += ["--secret-access-key-env", "ICEPIPE_TEST_SECRET"]
    assert main(["repo", "create", "acme/sw", f"s3://{bucket}/sw", *reach, *named]) == 0
    ds = _ds()
    icepipe.to_icechunk(ds, "acme/sw", group="g")
    xr.testing.assert_identical(icepipe.open_dataset("catalog:acme/sw", group="g").load(), ds)
    # The same location without the names: the wrong standard credentials are refused (exit 2).
    assert main(["repo", "create", "acme/sw2", f"s3://{bucket}/sw2", *reach]) == 2
    assert "acme/sw2" not in catalog.read_text()
