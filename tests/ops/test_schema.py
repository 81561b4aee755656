"""``icepipe schema``: the JSON Schema of pipeline and catalog files, generated from the field
tables the loaders read, checked with the ``jsonschema`` library (draft 2020-12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from icepipe.errors import ConfigError
from icepipe.ops.schema import SCHEMA_KINDS, json_schema, render_schema
from icepipe.spec import COMPRESSIONS, FORMATS, MODES, pipeline_from_dict

from .test_check import BASE, FOUR_TYPOS, INVALID_VARIANTS, VALID_VARIANTS

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schemas/pipeline.schema.json"


def _validator(kind: str = "pipeline") -> jsonschema.Draft202012Validator:
    schema = json_schema(kind)  # type: ignore[arg-type]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_committed_schema_files_are_the_generated_ones(kind: str) -> None:
    committed = ROOT / "schemas" / f"{kind}.schema.json"
    assert committed.read_text() == render_schema(kind), (  # type: ignore[arg-type]
        f"{committed} is out of date: regenerate it with "
        f"`icepipe schema {kind} > schemas/{kind}.schema.json`"
    )


def test_cli_prints_the_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "icepipe.cli", "schema", "catalog"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json_schema("catalog")


@pytest.mark.parametrize("path", PIPELINES, ids=[p.name for p in PIPELINES])
def test_shipped_pipelines_validate_and_name_the_schema(path: Path) -> None:
    text = path.read_text()
    assert text.splitlines()[0] == MODELINE
    assert (path.parent / MODELINE.split("=", 1)[1]).is_file()
    errors = [e.message for e in _validator().iter_errors(yaml.safe_load(text))]
    assert errors == []


def test_schema_rejects_each_of_the_four_typos() -> None:
    doc = yaml.safe_load(FOUR_TYPOS)
    paths = {tuple(e.absolute_path) for e in _validator().iter_errors(doc)}
    messages = " ".join(e.message for e in _validator().iter_errors(doc))
    assert ("mode",) in paths
    for typo in ("fromat", "concat_dimm", "brnch"):
        assert repr(typo) in messages
    assert ("target",) in paths


def test_choices_follow_the_loader_constants() -> None:
    props = json_schema("pipeline")["properties"]
    assert props["source"]["properties"]["format"]["enum"] == list(FORMATS)
    assert props["mode"]["enum"] == list(MODES)
    assert props["compression"]["enum"] == list(COMPRESSIONS)


def _loader_refuses_key(section: str, key: str) -> bool:
    doc: dict[str, Any] = json.loads(json.dumps(BASE))
    (doc if section == "" else doc[section])[key] = None
    try:
        pipeline_from_dict(doc, "/tmp")
    except ConfigError as exc:
        return "unknown key" in str(exc)
    return False


@pytest.mark.parametrize("section", ["", "source", "target"])
def test_the_schema_and_the_loader_accept_the_same_keys(section: str) -> None:
    """Every key the schema names, the loader knows; a key it does not name, the loader
    refuses (a key added to the loader's tables appears in the schema by construction; this
    catches a key read by the loader but left out of the table)."""
    props = json_schema("pipeline")
    if section:
        props = props["properties"][section]
    for key in props["properties"]:
        assert not _loader_refuses_key(section, key), key
    assert _loader_refuses_key(section, "no_such_key")


@pytest.mark.parametrize("variant", VALID_VARIANTS)
def test_the_schema_accepts_what_the_loader_accepts(variant: dict[str, Any]) -> None:
    doc = {**BASE, **variant}
    pipeline_from_dict(doc, "/tmp")
    assert [e.message for e in _validator().iter_errors(doc)] == []


@pytest.mark.parametrize("variant", INVALID_VARIANTS)
def test_the_schema_refuses_structural_mistakes(variant: dict[str, Any]) -> None:
    """Each invalid variant the schema can express (all but cross-field checks it has no
    vocabulary for, like a storage option on a local repository) is refused."""
    doc = {**BASE, **variant}
    with pytest.raises(ConfigError):
        pipeline_from_dict(doc, "/tmp")
    beyond_the_schema = [
        {"target": {"repo": "r", "endpoint": "https://x"}},  # a local repository
        {"schedule": "every day"},  # cron syntax
        {"mode": "native", "chunks": {"x": "month"}},  # x is not the concat dimension
    ]
    expressible = variant not in beyond_the_schema
    assert bool(list(_validator().iter_errors(doc))) == expressible
