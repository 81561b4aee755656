"""``icepipe export kerchunk REPO s3://...``: a reference set written to an object store (moto
on 127.0.0.1) through icepipe's storage layer equals the same export written locally, reads
back as the repository, and no credential is ever printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import icepipe
from icepipe.cli import main
from icepipe.errors import ConfigError
from icepipe.ops.export import export_kerchunk
from icepipe.repository import open_repo, resolve_ref
from icepipe.sources.formats.kerchunk_refs import read_reference_set
from icepipe.storage import StorageOptions
from tests.conftest import S3_KEY_ID, S3_SECRET, write_pipeline, write_series


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    paths = write_series(tmp_path / "src", 2)
    p = write_pipeline(tmp_path, urls=[str(x) for x in paths], repo=str(tmp_path / "repo"))
    icepipe.run(icepipe.load_pipeline(p))
    return tmp_path / "repo"


def _flags(s3: Any) -> list[str]:
    return [
        "--endpoint", s3.endpoint, "--region", "us-east-1", "--force-path-style",
        "--allow-http", "--access-key-id-env", "ICEPIPE_TEST_KEY_ID",
        "--secret-access-key-env", "ICEPIPE_TEST_SECRET",
    ]  # fmt: skip


def _objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    return {k.removeprefix(prefix): v for k, v in s3.objects(bucket) if k.startswith(prefix)}


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_export_to_a_bucket_equals_the_local_export(
    tmp_path: Path, repo_path: Path, s3: Any, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    bucket = s3.bucket("export")
    name = "refs.json" if fmt == "json" else "refs.parq"
    local = tmp_path / name
    common = ["export", "kerchunk", str(repo_path), "--group", "g", "--format", fmt]
    common += ["--record-size", "3"]
    assert main([*common, str(local)]) == 0
    url = f"s3://{bucket}/out/{name}"
    assert main([*common, url, *_flags(s3)]) == 0
    printed = capsys.readouterr()
    assert url in printed.out
    for secret in (S3_SECRET, S3_KEY_ID):
        assert secret not in printed.out + printed.err
    stored = _objects(s3, bucket, f"out/{name}")
    if fmt == "json":
        assert list(stored) == [""]
        assert json.loads(stored[""]) == json.loads(local.read_bytes())  # keys in any order
    else:
        files = {"/" + f.relative_to(local).as_posix(): f for f in local.rglob("*") if f.is_file()}
        assert sorted(stored) == sorted(files) and len(stored) > 2  # .zmetadata and records
        for key, f in files.items():
            if key == "/.zmetadata":
                assert json.loads(stored[key]) == json.loads(f.read_bytes())
            else:
                assert stored[key] == f.read_bytes(), key
    # icepipe reads the set back from the bucket as it reads the local one.
    storage = StorageOptions(**s3.options())
    assert read_reference_set(url, storage).refs == read_reference_set(f"file://{local}").refs
    # Never over an existing set.
    assert main([*common, url, *_flags(s3)]) == 2
    assert f"{url!r} exists" in capsys.readouterr().err


def test_remote_refusals_name_the_fix_and_never_the_secret(
    repo_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = open_repo(str(repo_path))
    snap = resolve_ref(repo, "main")
    bucket = s3.bucket("refuse")
    options = StorageOptions(**s3.options())
    with pytest.raises(ConfigError, match="not to HTTP servers"):
        export_kerchunk(repo, snap, "https://example.org/refs.json", group="g")
    with pytest.raises(ConfigError) as info:
        export_kerchunk(repo, snap, f"s3://{S3_KEY_ID}:{S3_SECRET}@{bucket}/r.json", group="g")
    assert S3_SECRET not in str(info.value)
    monkeypatch.delenv("ICEPIPE_TEST_SECRET")
    with pytest.raises(ConfigError, match="secret_access_key_env is not set") as info:
        export_kerchunk(repo, snap, f"s3://{bucket}/r.json", group="g", storage=options)
    assert S3_SECRET not in str(info.value)
    monkeypatch.setenv("ICEPIPE_TEST_SECRET", S3_SECRET)
    with pytest.raises(ConfigError, match="bucket does not exist"):
        export_kerchunk(repo, snap, f"s3://{bucket}-gone/r.json", group="g", storage=options)
    summary = export_kerchunk(repo, snap, f"s3://{bucket}/r.json", group="g", storage=options)
    assert summary.references >= 2
    got = json.loads(dict(s3.objects(bucket))["r.json"])
    assert any(isinstance(v, list) for v in got["refs"].values())


def test_seaweedfs_checks_the_named_credentials(
    repo_path: Path,
    seaweedfs: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that checks credentials: the export signs with the variables it is told to
    use; a key that may not write is refused (exit 2) without showing the secret."""
    bucket = seaweedfs.bucket("export")
    monkeypatch.setenv("EXPORT_READER_KEY", "reader")
    monkeypatch.setenv("EXPORT_READER_SECRET", "reader-secret")
    url = f"s3://{bucket}/refs.json"
    base = ["export", "kerchunk", str(repo_path), "--group", "g", url]
    reach = ["--endpoint", seaweedfs.endpoint, "--region", "us-east-1"]
    reach += ["--force-path-style", "--allow-http"]
    reader = ["--access-key-id-env", "EXPORT_READER_KEY"]
    reader += ["--secret-access-key-env", "EXPORT_READER_SECRET"]
    assert main([*base, *reach, *reader]) == 2
    refused = capsys.readouterr()
    assert "access denied" in refused.err and url in refused.err
    assert "reader-secret" not in refused.out + refused.err
    assert main([*base, *_flags(seaweedfs)]) == 0
    printed = capsys.readouterr()
    assert S3_SECRET not in printed.out + printed.err
    stored = dict(seaweedfs.objects(bucket))
    assert json.loads(stored["refs.json"])["version"] == 1


def test_storage_option_errors_name_the_command_line_flags(
    repo_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The storage table's keys are spelt with hyphens on the command line: errors say so."""
    args = ["export", "kerchunk", str(repo_path), "s3://b/r.json"]
    assert main([*args, "--access-key-id-env", "ICEPIPE_TEST_KEY_ID"]) == 2
    err = capsys.readouterr().err
    assert "--secret-access-key-env: missing" in err and "--access-key-id-env is set" in err
    assert "--access_key_id_env" not in err
