"""Storage options, credentials and repository settings (icepipe.storage), without a server.

The S3 behaviour itself is tested against real servers in tests/test_s3.py; here: the
pipeline schema (every mistake names the field and never echoes a secret), canonical URLs,
and what pickles (options and file handles travel to workers, secrets never do).
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import icechunk
import pytest
import yaml

from icepipe.errors import ConfigError
from icepipe.repository.repo import EnvS3Credentials, repo_config, storage_for
from icepipe.sources.stores import RemoteFile, zarr_store
from icepipe.spec import load_pipeline
from icepipe.storage import (
    StorageOptions,
    coerce_storage_options,
    parse_repo_config,
    resolve_s3_credentials,
)

S3: dict[str, Any] = {
    "name": "s3",
    "source": {"urls": "s3://bucket/data/*.nc", "concat_dim": "time"},
    "target": {"repo": "s3://lake/repos/era5"},
}
PASTED = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def load(tmp_path: Path, edit: dict[str, Any]) -> Any:
    doc = copy.deepcopy(S3)
    for dotted, value in edit.items():
        *parents, key = dotted.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            del node[key]
        else:
            node[key] = value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_pipeline(path)


def test_full_storage_schema_loads(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        {
            "source.storage": {
                "endpoint": "http://127.0.0.1:9000/",
                "allow_http": True,
                "force_path_style": True,
                "access_key_id_env": "SRC_KEY",
                "secret_access_key_env": "SRC_SECRET",
            },
            "target.region": "eu-west-1",
            "target.session_token_env": "TOKEN",
            "target.access_key_id_env": "KEY",
            "target.secret_access_key_env": "SECRET",
            "target.config": {"inline_chunk_threshold_bytes": 0},
        },
    )
    assert p.source.storage == StorageOptions(
        endpoint="http://127.0.0.1:9000",
        allow_http=True,
        force_path_style=True,
        access_key_id_env="SRC_KEY",
        secret_access_key_env="SRC_SECRET",
    )
    assert p.source.storage.effective_region == "us-east-1"
    assert p.target.storage.region == "eu-west-1"
    assert p.target.config == {"inline_chunk_threshold_bytes": 0}
    assert p.target.repo == "s3://lake/repos/era5"


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("s3://bucket//data/./x/../f.nc", "s3://bucket/data/f.nc"),
        ("s3://bucket/data/*.nc", "s3://bucket/data/*.nc"),
        ("https://host:8080/a//b.nc", "https://host:8080/a/b.nc"),
    ],
)
def test_object_urls_are_canonical(tmp_path: Path, value: str, canonical: str) -> None:
    assert load(tmp_path, {"source.urls": [value]}).source.urls == (canonical,)


@pytest.mark.parametrize(
    ("edit", "field", "expected"),
    [
        ({"target.secret_access_key": PASTED}, "target.secret_access_key", ["never go into"]),
        ({"source.storage": {"password": PASTED}}, "source.storage.password", ["_env"]),
        ({"target.secret_access_key_env": PASTED}, "target.secret_access_key_env", ["NAME"]),
        ({"target.endpoint": "http://minio:9000"}, "target.endpoint", ["allow_http: true"]),
        ({"target.endpoint": "minio:9000"}, "target.endpoint", ["http:// or https://"]),
        ({"target.anonymous": "yes"}, "target.anonymous", ["true or false", "'yes'"]),
        (
            {"target.anonymous": True, "target.access_key_id_env": "K"},
            "target.anonymous",
            ["no credentials"],
        ),
        ({"target.access_key_id_env": "K"}, "target.secret_access_key_env", ["both"]),
        ({"source.storage": {"region": 3}}, "source.storage.region", ["non-empty string"]),
        ({"source.storage": {"bucket": "x"}}, "source.storage.bucket", ["unknown key"]),
        ({"source.storage": "anonymous"}, "source.storage", ["mapping"]),
        ({"target.endpointt": "x"}, "target.endpointt", ["unknown key", "endpoint"]),
        (
            {"source.urls": "data/*.nc", "source.storage": {"anonymous": True}},
            "source.storage",
            ["local files"],
        ),
        ({"target.repo": "repo", "target.region": "x"}, "target.region", ["local path"]),
        ({"target.repo": "s3://lake"}, "target.repo", ["BUCKET/PATH"]),
        ({"target.repo": "gopher://x/y"}, "target.repo", ["gopher:", "nor a URL scheme"]),
    ],
)
def test_storage_mistakes_name_the_field_and_never_echo_secrets(
    tmp_path: Path, edit: dict[str, Any], field: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, edit)
    assert info.value.field == field, str(info.value)
    for text in expected:
        assert text in str(info.value)
    assert PASTED not in str(info.value)


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"inline_chunk_threshold": 1}, "target.config.inline_chunk_threshold", ["unknown"]),
        (
            {"get_partial_values_concurrency": 0},
            "target.config.get_partial_values_concurrency",
            [">= 1"],
        ),
        ({"max_concurrent_requests": "8"}, "target.config.max_concurrent_requests", ["integer"]),
        (
            {"storage": {"retries": {"max_tries": True}}},
            "target.config.storage.retries.max_tries",
            ["integer"],
        ),
        (
            {"storage": {"unsafe_use_conditional_update": False}},
            "target.config.storage.unsafe_use_conditional_update",
            ["conditional writes"],
        ),
        (
            {"manifest": {"preload": {"names": "("}}},
            "target.config.manifest.preload.names",
            ["regular expression"],
        ),
        ({"manifest": {"splitting": {"time": 2}}}, "target.config.manifest.splitting", ["list of"]),
        (
            {"manifest": {"splitting": [{"dims": {"time": 0}}]}},
            "target.config.manifest.splitting[0].dims.time",
            [">= 1"],
        ),
        (
            {"manifest": {"splitting": [{"array": "x", "dims": {"t": 1}}]}},
            "target.config.manifest.splitting[0].array",
            ["arrays, dims"],
        ),
        ([1], "target.config", ["mapping"]),
    ],
)
def test_repository_settings_are_validated(
    tmp_path: Path, config: Any, field: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"target.config": config})
    assert info.value.field == field, str(info.value)
    for text in expected:
        assert text in str(info.value)


def test_repository_settings_build_an_icechunk_config() -> None:
    settings = parse_repo_config(
        {
            "inline_chunk_threshold_bytes": 100,
            "compression": {"level": 5},
            "caching": {"num_chunk_refs": 10},
            "storage": {
                "concurrency": {"max_concurrent_requests_for_object": 3},
                "timeouts": {"connect_timeout_ms": 1000},
                "storage_class": "STANDARD_IA",
            },
            "manifest": {
                "preload": {"max_total_refs": 5, "names": "^time$"},
                "splitting": [
                    {"arrays": "^tas$", "dims": {"time": 10, "*": 1}},
                    {"dims": {"x": 2}},
                ],
            },
        }
    )
    cfg = repo_config(settings)
    assert cfg.inline_chunk_threshold_bytes == 100
    assert cfg.compression is not None and cfg.compression.level == 5
    assert cfg.caching is not None and cfg.caching.num_chunk_refs == 10
    assert cfg.storage is not None and cfg.storage.storage_class == "STANDARD_IA"
    assert cfg.storage.concurrency is not None
    assert cfg.storage.concurrency.max_concurrent_requests_for_object == 3
    assert cfg.manifest is not None and cfg.manifest.preload is not None
    assert cfg.manifest.preload.max_total_refs == 5
    assert cfg.manifest.splitting is not None and len(cfg.manifest.splitting.split_sizes) == 2
    preload_off = repo_config(parse_repo_config({"manifest": {"preload": False}}))
    assert preload_off.manifest is not None and preload_off.manifest.preload is not None


def test_named_credentials_are_read_where_they_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    options = StorageOptions(access_key_id_env="MY_KEY", secret_access_key_env="MY_SECRET")
    monkeypatch.delenv("MY_SECRET", raising=False)
    monkeypatch.setenv("MY_KEY", "key")
    # The message names the key, never its value: a secret pasted into a *_env key can look
    # like a variable name (issue 11, item 6).
    with pytest.raises(ConfigError, match="named by secret_access_key_env") as info:
        resolve_s3_credentials(options)
    assert "MY_SECRET" not in str(info.value)
    assert "key" not in str(info.value).replace("secret_access_key_env", "")
    assert "MY_SECRET" not in repr(options) and "MY_KEY" not in repr(options)
    monkeypatch.setenv("MY_SECRET", PASTED)
    secrets = resolve_s3_credentials(options)
    assert secrets is not None and secrets.secret_access_key == PASTED
    assert PASTED not in repr(secrets)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(secrets)
    assert resolve_s3_credentials(StorageOptions()) is None
    assert resolve_s3_credentials(StorageOptions(anonymous=True)) is None
    # Icechunk's callback: names only when pickled, the secret when called.
    callback = EnvS3Credentials.from_options(options)
    assert callback is not None and PASTED.encode() not in pickle.dumps(callback)
    assert pickle.loads(pickle.dumps(callback))().secret_access_key == PASTED
    assert PASTED not in repr(storage_for("s3://bucket/repo", options))


def test_missing_named_variable_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    options = StorageOptions(access_key_id_env="NOPE_KEY", secret_access_key_env="NOPE_SECRET")
    with pytest.raises(ConfigError, match="named by access_key_id_env") as info:
        storage_for("s3://bucket/repo", options)
    assert "NOPE_KEY" not in str(info.value)


def test_object_store_handles_pickle_as_location_and_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_KEY", "key")
    monkeypatch.setenv("MY_SECRET", PASTED)
    options = StorageOptions(
        endpoint="http://127.0.0.1:1",
        allow_http=True,
        force_path_style=True,
        access_key_id_env="MY_KEY",
        secret_access_key_env="MY_SECRET",
    )
    for obj in (
        RemoteFile("s3://bucket/a.nc", options),
        zarr_store("s3://bucket/a.zarr", options),
    ):
        data = pickle.dumps(obj)
        assert PASTED.encode() not in data
        assert type(pickle.loads(data)) is type(obj)
    assert pickle.loads(pickle.dumps(options)) == options


def test_python_api_takes_pipeline_style_storage_mappings() -> None:
    assert coerce_storage_options(None, "storage") == StorageOptions()
    assert coerce_storage_options({"anonymous": True}, "storage").anonymous
    with pytest.raises(ConfigError, match="unknown key"):
        coerce_storage_options({"anonymus": True}, "source_storage")
    with pytest.raises(ConfigError, match="never go into"):
        coerce_storage_options({"secret_access_key": PASTED}, "storage")


def test_gcs_and_azure_repositories_pass_through_to_icechunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Constructed with Icechunk's own constructors; never connected to (not tested here)."""
    assert "type: GCS" in repr(storage_for("gs://bucket/prefix"))
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        storage_for("az://container/prefix")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    assert "type: Azure" in repr(storage_for("az://container/prefix"))
    assert isinstance(storage_for("s3://bucket/prefix"), icechunk.Storage)
