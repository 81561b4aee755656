"""`icepipe repo create|list|info|delete` and pipelines targeting `catalog:org/name`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import icepipe
from icepipe.cli import main
from icepipe.errors import ConfigError
from tests.conftest import write_pipeline, write_series


def test_catalog_lifecycle(
    tmp_path: Path, client: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = tmp_path / "conf" / "catalog.yaml"
    monkeypatch.setenv("ICEPIPE_CATALOG", str(catalog))
    assert main(["repo", "list"]) == 0
    assert "no repositories" in capsys.readouterr().out
    data = tmp_path / "data" / "demo"
    assert main(["repo", "create", "acme/demo", str(data), "--description", "demo data"]) == 0
    assert "created" in capsys.readouterr().out
    assert (data / "repo").exists() or any(data.iterdir())
    assert main(["repo", "create", "acme/demo", str(tmp_path / "x")]) == 2
    assert main(["repo", "create", "acme/copy", str(data)]) == 2
    assert "--exists-ok" in capsys.readouterr().err
    assert main(["repo", "create", "acme/copy", str(data), "--exists-ok"]) == 0
    assert main(["repo", "create", "not-a-name", str(data)]) == 2
    capsys.readouterr()

    # A pipeline targets the catalog entry.
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="cat", urls="src/*.nc", repo="catalog:acme/demo")
    assert icepipe.load_pipeline(spec).target.repo == str(data)
    assert main(["run", str(spec), "--scheduler", client.scheduler.address]) == 0
    capsys.readouterr()
    assert main(["log", "catalog:acme/demo"]) == 0
    assert "cat" in capsys.readouterr().out
    assert main(["repo", "info", "acme/demo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exists"] and "main" in info["branches"] and info["description"] == "demo data"
    assert info["containers"] == [f"file://{tmp_path}/src/"]
    assert main(["repo", "list", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["acme/copy", "acme/demo"]

    missing = write_pipeline(tmp_path, name="miss", urls="src/*.nc", repo="catalog:acme/nope")
    with pytest.raises(ConfigError) as info_exc:
        icepipe.load_pipeline(missing)
    assert info_exc.value.field == "target.repo" and "acme/demo" in str(info_exc.value)

    # Deleting needs the name repeated; --forget keeps the data.
    assert main(["repo", "delete", "acme/demo"]) == 2
    assert main(["repo", "delete", "acme/demo", "--yes-delete-all-data", "acme/copy"]) == 2
    assert "--yes-delete-all-data acme/demo" in capsys.readouterr().err
    assert data.exists()
    assert main(["repo", "delete", "acme/copy", "--forget"]) == 0
    assert data.exists()
    assert main(["repo", "delete", "acme/demo", "--yes-delete-all-data", "acme/demo"]) == 0
    assert not data.exists()
    capsys.readouterr()
    assert main(["--catalog", str(catalog), "repo", "list"]) == 0
    assert "no repositories" in capsys.readouterr().out


def test_catalog_entries_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icepipe.catalog import load_catalog

    catalog = tmp_path / "catalog.yaml"
    monkeypatch.setenv("ICEPIPE_CATALOG", str(catalog))
    catalog.write_text("repos:\n  acme/x: {url: rel/path, colour: blue}\n")
    with pytest.raises(ConfigError, match="colour"):
        load_catalog()
    catalog.write_text("repos:\n  acme/x: {url: s3://b/p, storage: {secret_access_key: abc}}\n")
    with pytest.raises(ConfigError, match="secrets never go into"):
        load_catalog()
    catalog.write_text("repos:\n  acme/x: {url: rel/path}\n")
    assert load_catalog().get("acme/x").url == str(tmp_path / "rel" / "path")
