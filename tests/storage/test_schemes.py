"""The dispatch on the URL and the per-scheme facts icepipe relies on (no server needed)."""

from __future__ import annotations

import pickle

import pytest

from icepipe.errors import ConfigError
from icepipe.repository.schemes import icechunk_scheme
from icepipe.storage import (
    OBJECT_SCHEMES,
    REPO_SCHEMES,
    SCHEMES,
    SOURCE_SCHEMES,
    StorageOptions,
    find_scheme,
    scheme_for,
)


@pytest.mark.parametrize(
    ("url", "name", "remote", "listable", "repos"),
    [
        ("/data/a.nc", "file", False, True, True),
        ("file:///data/a.nc", "file", False, True, True),
        ("s3://b/a.nc", "s3", True, True, True),
        ("S3://b/a.nc", "s3", True, True, True),
        ("gs://b/a.nc", "gs", True, True, True),
        ("az://c/a.nc", "az", True, True, True),
        ("https://h/a.nc", "http", True, False, False),
        ("http://h/a.nc", "http", True, False, False),
    ],
)
def test_one_scheme_serves_each_url(
    url: str, name: str, remote: bool, listable: bool, repos: bool
) -> None:
    scheme = scheme_for(url)
    assert (scheme.name, scheme.remote, scheme.listable, scheme.holds_repositories) == (
        name,
        remote,
        listable,
        repos,
    )
    assert pickle.loads(pickle.dumps(scheme)) == scheme
    assert icechunk_scheme(scheme).name == name  # every scheme has its Icechunk half


def test_unsupported_schemes_are_refused_with_the_supported_ones() -> None:
    assert find_scheme("ftp://h/a.nc") is None
    with pytest.raises(ConfigError, match=r"unsupported URL scheme 'ftp'.*file://, s3://") as e:
        scheme_for("ftp://h/a.nc")
    assert e.value.field == "source.urls"


def test_the_scheme_lists_are_what_the_pipeline_schema_accepts() -> None:
    assert SOURCE_SCHEMES == ("file", "s3", "gs", "az", "http", "https")
    assert REPO_SCHEMES == ("file", "s3", "gs", "az")
    assert OBJECT_SCHEMES == ("s3", "gs", "az")
    assert len({s.name for s in SCHEMES}) == len(SCHEMES)


def test_http_without_allow_http_is_refused_naming_the_setting() -> None:
    scheme = scheme_for("http://h/a.nc")
    with pytest.raises(ConfigError, match="allow_http: true") as e:
        scheme.validate_options("http://h/a.nc", StorageOptions(), "source.storage")
    assert e.value.field == "source.storage.allow_http"
    scheme.validate_options("https://h/a.nc", StorageOptions(), "source.storage")
    # Readers reach the servers the references name, whatever they pass.
    assert scheme.reader_options(StorageOptions(), {}).allow_http


def test_s3_records_how_it_reaches_a_container_without_credential_names() -> None:
    options = StorageOptions(
        endpoint="http://127.0.0.1:9000",
        allow_http=True,
        force_path_style=True,
        access_key_id_env="KEY",
        secret_access_key_env="SECRET",
    )
    record = scheme_for("s3://b/k").container_reach(options)
    assert record == {
        "endpoint": "http://127.0.0.1:9000",
        "region": "us-east-1",  # what Icechunk was given for a custom endpoint
        "force_path_style": True,
        "allow_http": True,
        "anonymous": False,
    }
    reader = StorageOptions(anonymous=True)
    assert scheme_for("s3://b/k").reader_options(reader, record) == StorageOptions(
        endpoint="http://127.0.0.1:9000",
        region="us-east-1",
        force_path_style=True,
        allow_http=True,
        anonymous=True,
    )
    for scheme in ("file:///a/", "gs://b/", "az://c/"):
        assert scheme_for(scheme).container_reach(options) == {}


@pytest.mark.parametrize(
    "record", [["endpoint"], {"access_key_id_env": "X"}, {"anonymous": "yes"}, {"region": 3}]
)
def test_a_record_icepipe_did_not_write_is_refused(record: object) -> None:
    with pytest.raises(ConfigError, match="not a record of storage options"):
        StorageOptions().with_reach(record)  # type: ignore[arg-type]
