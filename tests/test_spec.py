"""Pipeline YAML validation (icepipe.spec) and how the CLI reports a bad definition.

Every invalid definition must raise ConfigError naming the dotted field, what was expected and
what was found, before any file is listed or any repository is touched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from icepipe.cli import main
from icepipe.errors import ConfigError
from icepipe.spec import CHUNK_RULES, Pipeline, load_pipeline, pipeline_from_dict

VALID: dict[str, Any] = {
    "name": "era5-t2m",
    "source": {"urls": "src/*.nc", "concat_dim": "time"},
    "target": {"repo": "repo"},
}


def write_yaml(folder: Path, doc: object, name: str = "pipeline.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def load_doc(folder: Path, doc: object) -> Pipeline:
    return load_pipeline(write_yaml(folder, doc))


def edited(edit: dict[str, Any]) -> dict[str, Any]:
    """VALID with dotted keys set (value ``...`` deletes the key)."""
    doc = copy.deepcopy(VALID)
    for dotted, value in edit.items():
        *parents, key = dotted.split(".")
        node = doc
        for p in parents:
            node = node[p]
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return doc


def assert_config_error(exc: ConfigError, field: str, *expected: str) -> None:
    msg = str(exc)
    assert exc.field == field
    assert msg.startswith(f"{field}: "), msg
    for text in expected:
        assert text in msg, f"{text!r} not in {msg!r}"


# --- invalid definitions --------------------------------------------------------------------

UNKNOWN_KEYS = [
    pytest.param(
        {"targets": {"repo": "r"}}, "targets", ["'targets'", "allowed", "target"], id="top"
    ),
    pytest.param({"source.pattern": "*.nc"}, "source.pattern", ["'pattern'", "urls"], id="source"),
    pytest.param({"target.bucket": "b"}, "target.bucket", ["'bucket'", "repo"], id="target"),
    pytest.param(
        {"source.concat": "t", "source.Format": "auto"},
        "source.Format",  # the first in sorted order; the message names both
        ["'Format'", "'concat'", "concat_dim"],
        id="two-unknown",
    ),
]

WRONG_TYPES = [
    pytest.param({"name": 123}, "name", ["expected a non-empty string", "int 123"], id="name-int"),
    pytest.param({"name": ""}, "name", ["expected a non-empty string", "''"], id="name-empty"),
    pytest.param({"source": "src/*.nc"}, "source", ["expected a mapping", "str"], id="source-str"),
    pytest.param({"target": ["repo"]}, "target", ["expected a mapping", "list"], id="target-list"),
    pytest.param(
        {"source.urls": 5}, "source.urls", ["expected a glob pattern", "int 5"], id="urls-int"
    ),
    pytest.param(
        {"source.urls": []}, "source.urls", ["non-empty list", "list []"], id="urls-empty-list"
    ),
    pytest.param(
        {"source.urls": {"a": 1}}, "source.urls", ["expected a glob", "dict"], id="urls-dict"
    ),
    pytest.param(
        {"source.urls": "  "}, "source.urls", ["expected a glob pattern"], id="urls-blank"
    ),
    pytest.param(
        {"source.urls": ["a.nc", 3]}, "source.urls", ["list of non-empty path"], id="urls-item-int"
    ),
    pytest.param({"source.urls": ["a.nc", ""]}, "source.urls", ["non-empty"], id="urls-item-blank"),
    pytest.param(
        {"source.concat_dim": ["time"]},
        "source.concat_dim",
        ["expected a non-empty string", "list ['time']"],
        id="concat-dim-list",
    ),
    pytest.param(
        {"target.repo": 1}, "target.repo", ["expected a non-empty string", "int"], id="repo-int"
    ),
    pytest.param(
        {"target.branch": True}, "target.branch", ["non-empty string", "bool"], id="branch-bool"
    ),
    pytest.param(
        {"target.group": ["g"]}, "target.group", ["non-empty string", "list"], id="group-list"
    ),
]

MISSING = [
    pytest.param({"name": ...}, "name", ["missing", "string"], id="name"),
    pytest.param({"source": ...}, "source", ["missing", "mapping"], id="source"),
    pytest.param(
        {"source.urls": ...}, "source.urls", ["missing", "glob pattern or a list"], id="urls"
    ),
    pytest.param(
        {"source.concat_dim": ...}, "source.concat_dim", ["missing", "string"], id="concat-dim"
    ),
    pytest.param({"target": ...}, "target", ["missing", "mapping"], id="target"),
    pytest.param({"target.repo": ...}, "target.repo", ["missing", "string"], id="repo"),
    pytest.param({"source.urls": None}, "source.urls", ["missing"], id="urls-null"),
]

BAD_ENUMS = [
    pytest.param(
        {"source.format": "netcdf5"},
        "source.format",
        ["expected one of auto, netcdf3, netcdf4", "'netcdf5'"],
        id="format",
    ),
    pytest.param({"source.format": "NetCDF4"}, "source.format", ["'NetCDF4'"], id="format-case"),
    pytest.param(
        {"mode": "fast"}, "mode", ["expected one of virtual, native", "'fast'"], id="mode"
    ),
    pytest.param({"mode": ["virtual"]}, "mode", ["expected one of", "list"], id="mode-list"),
]

BAD_NAMES = [
    pytest.param(name, id=repr(name))
    for name in ["my pipeline", "-leading-dash", "_underscore", "a/b", "naïve", "x:y"]
]

UNSUPPORTED_LOCATIONS = [
    pytest.param(
        {"source.urls": "ftp://host/*.nc"},
        "source.urls",
        ["unsupported URL scheme 'ftp'", "s3://"],
        id="ftp-glob",
    ),
    pytest.param(
        {"source.urls": ["a.nc", "s3://bucket"]},
        "source.urls",
        ["s3://BUCKET/PATH"],
        id="s3-no-key",
    ),
    pytest.param(
        {"target.repo": "https://host/repo"},
        "target.repo",
        ["unsupported URL scheme 'https'", "s3://"],
        id="https-repo",
    ),
    pytest.param(
        {"target.repo": "s3://bucket/"}, "target.repo", ["s3://BUCKET/PATH"], id="s3-bucket-root"
    ),
]


@pytest.mark.parametrize(
    ("edit", "field", "expected"),
    [*UNKNOWN_KEYS, *WRONG_TYPES, *MISSING, *BAD_ENUMS, *UNSUPPORTED_LOCATIONS],
)
def test_invalid_field_names_field_and_expectation(
    tmp_path: Path, edit: dict[str, Any], field: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_doc(tmp_path, edited(edit))
    assert_config_error(info.value, field, *expected)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_doc(tmp_path, edited({"name": name}))
    assert_config_error(info.value, "name", "letters, digits", repr(name))


@pytest.mark.parametrize("name", ["a", "era5_t2m-v1.2", "0day", "CMIP6.tas"])
def test_valid_names(tmp_path: Path, name: str) -> None:
    assert load_doc(tmp_path, edited({"name": name})).name == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", ["pipeline: missing", "mapping"], id="empty-file"),
        pytest.param("- a\n- b\n", ["pipeline: expected a mapping", "list"], id="list"),
        pytest.param("just a string\n", ["pipeline: expected a mapping", "str"], id="scalar"),
    ],
)
def test_document_must_be_a_mapping(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_doc(tmp_path, text)
    assert_config_error(info.value, "pipeline", *[e.removeprefix("pipeline: ") for e in expected])


def test_not_yaml_names_the_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "name: [unclosed\nsource: {\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)
    assert "cannot read pipeline file" in str(info.value)


def test_config_error_is_a_value_error_with_exit_code_2(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_doc(tmp_path, edited({"mode": "fast"}))
    assert isinstance(info.value, ConfigError)
    assert info.value.exit_code == 2


# --- resolution of paths, defaults ----------------------------------------------------------


@pytest.fixture
def conf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for pipeline files, with the working directory elsewhere.

    Paths must resolve against the pipeline file's folder, never against the working directory.
    """
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path / "conf"


def test_defaults(conf_dir: Path) -> None:
    p = load_doc(conf_dir, VALID)
    assert p.mode == "virtual"
    assert p.source.format == "auto"
    assert p.target.branch == "main"
    assert p.target.group is None
    assert p.path == str(conf_dir / "pipeline.yaml")


def test_relative_glob_resolves_against_the_yaml_folder(conf_dir: Path) -> None:
    p = load_doc(conf_dir, edited({"source.urls": "src/**/*.nc"}))
    assert p.source.is_glob
    assert p.source.urls == (f"file://{conf_dir}/src/**/*.nc",)
    assert p.target.repo == str(conf_dir / "repo")


def test_relative_yaml_path_still_resolves_against_its_folder(
    conf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_yaml(conf_dir, VALID)
    monkeypatch.chdir(conf_dir.parent)
    p = load_pipeline("conf/pipeline.yaml")
    assert p.source.urls == (f"file://{conf_dir}/src/*.nc",)
    assert p.target.repo == str(conf_dir / "repo")


def test_explicit_list_is_not_a_glob(conf_dir: Path, tmp_path: Path) -> None:
    p = load_doc(conf_dir, edited({"source.urls": ["a.nc", "sub/b.nc", str(tmp_path / "c.nc")]}))
    assert not p.source.is_glob
    assert p.source.urls == (
        f"file://{conf_dir}/a.nc",
        f"file://{conf_dir}/sub/b.nc",
        f"file://{tmp_path}/c.nc",
    )


def test_file_urls_are_accepted(conf_dir: Path, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/data/x.nc"
    p = load_doc(conf_dir, edited({"source.urls": [url], "target.repo": f"file://{tmp_path}/r"}))
    assert p.source.urls == (url,)
    assert p.target.repo == str(tmp_path / "r")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("../data/./x.nc", "{root}/data/x.nc", id="dotdot"),
        pytest.param("data//sub/../x.nc", "{conf}/data/x.nc", id="double-slash"),
        pytest.param("file://{root}/conf/../data/x.nc", "{root}/data/x.nc", id="file-url-dotdot"),
        pytest.param("  data/x.nc  ", "{conf}/data/x.nc", id="whitespace"),
    ],
)
def test_urls_are_normalised(conf_dir: Path, tmp_path: Path, given: str, expected: str) -> None:
    fill = {"root": tmp_path, "conf": conf_dir}
    p = load_doc(conf_dir, edited({"source.urls": [given.format(**fill)]}))
    assert p.source.urls == ("file://" + expected.format(**fill),)


def test_same_file_spelled_twice_resolves_to_one_url(conf_dir: Path) -> None:
    p = load_doc(conf_dir, edited({"source.urls": ["a.nc", "./x/../a.nc"]}))
    assert p.source.urls[0] == p.source.urls[1]


def test_repo_path_is_normalised(conf_dir: Path, tmp_path: Path) -> None:
    p = load_doc(conf_dir, edited({"target.repo": "../repos/./r/"}))
    assert p.target.repo == str(tmp_path / "repos" / "r")


@pytest.mark.parametrize(
    ("group", "expected"),
    [("/ocean/sst/", "ocean/sst"), ("sst", "sst"), ("/", None), (" /a ", "a")],
)
def test_group_is_stripped_of_slashes(conf_dir: Path, group: str, expected: str | None) -> None:
    assert load_doc(conf_dir, edited({"target.group": group})).target.group == expected


def test_all_fields(conf_dir: Path) -> None:
    doc = {
        "name": "full",
        "mode": "virtual",
        "source": {"urls": ["a.nc"], "concat_dim": " time ", "format": "netcdf3"},
        "target": {"repo": "r", "branch": "dev", "group": "g"},
    }
    p = load_doc(conf_dir, doc)
    assert (p.source.concat_dim, p.source.format) == ("time", "netcdf3")
    assert (p.target.branch, p.target.group) == ("dev", "g")


# --- the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"source.concat_dim": ...}, "source.concat_dim"),
        ({"target.repo_path": "r"}, "target.repo_path"),
        ({"mode": "fast"}, "mode"),
    ],
)
def test_cli_run_bad_yaml_exits_2_and_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: dict[str, Any], field: str
) -> None:
    path = write_yaml(tmp_path, edited(edit))
    code = main(["run", str(path), "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"icepipe: error: {field}: " in err
    assert out == ""
    assert not (tmp_path / "repo").exists()


def test_cli_run_missing_yaml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "nope.yaml" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# chunks: {<concat_dim>: file | day | month | year}
# ----------------------------------------------------------------------------------------------


def _native_pipeline(chunks: object, **top: object) -> object:
    raw = {
        "name": "p",
        "mode": "native",
        "source": {"urls": ["a.nc"], "concat_dim": "time"},
        "target": {"repo": "r"},
        "chunks": chunks,
        **top,
    }
    return pipeline_from_dict(raw, Path("/tmp"))


@pytest.mark.parametrize("rule", CHUNK_RULES)
def test_spec_accepts_rules_on_the_concat_dim(rule: str) -> None:
    p = _native_pipeline({"time": rule, "lat": 10})
    assert p.native.chunks == {"time": rule, "lat": 10}  # type: ignore[attr-defined]


def test_spec_refuses_rules_elsewhere_and_unknown_rules() -> None:
    with pytest.raises(ConfigError, match="concat dimension") as e:
        _native_pipeline({"lat": "month"})
    assert e.value.field == "chunks.lat"
    with pytest.raises(ConfigError, match="file, day, month, year") as e:
        _native_pipeline({"time": "monthly"})
    assert e.value.field == "chunks.time"
    with pytest.raises(ConfigError, match="positive integer; got") as e:
        _native_pipeline({"lat": "big"})
    assert e.value.field == "chunks.lat"
    with pytest.raises(ConfigError, match="mode: native only"):
        _native_pipeline({"time": "month"}, mode="virtual")


def test_spec_refuses_shards_with_rules() -> None:
    with pytest.raises(ConfigError, match="rectilinear grid, which Zarr cannot shard") as e:
        _native_pipeline({"time": "month", "lat": 2}, shards={"lat": 4})
    assert e.value.field == "shards"
