"""``known_repos`` is cached by the files it reads: an unchanged site loads nothing again; an
edited, added or deleted pipeline file (or catalog) shows on the next call and request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

import icepipe.spec
from icepipe.web.app import create_app
from icepipe.web.config import WebConfig, known_repos


def _write(folder: Path, file: str, name: str, repo: Path) -> Path:
    path = folder / file
    doc = {
        "name": name,
        "source": {"urls": str(folder / "data" / "*.nc"), "concat_dim": "time"},
        "target": {"repo": str(repo)},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``icepipe.spec.load_pipeline`` loads (the real function, counted)."""
    seen: list[str] = []
    real = icepipe.spec.load_pipeline

    def counted(path: Any) -> Any:
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(icepipe.spec, "load_pipeline", counted)
    return seen


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ICEPIPE_CATALOG", str(tmp_path / "catalog.yaml"))
    f = tmp_path / "pipelines"
    f.mkdir()
    return f


def _keys(config: WebConfig) -> list[str]:
    return [r.key for r in known_repos(config)]


def test_unchanged_files_are_not_loaded_again(folder: Path, loads: list[str]) -> None:
    _write(folder, "a.yaml", "alpha", folder.parent / "ra")
    _write(folder, "b.yaml", "beta", folder.parent / "rb")
    config = WebConfig(pipelines=(str(folder),))
    assert _keys(config) == ["alpha", "beta"] and len(loads) == 2
    for _ in range(3):
        assert _keys(config) == ["alpha", "beta"]
    assert len(loads) == 2
    # One file edited: only that one is loaded again.
    _write(folder, "b.yaml", "beta-renamed", folder.parent / "rb")
    assert _keys(config) == ["alpha", "beta-renamed"]
    assert loads[2:] == [str(folder / "b.yaml")]


def test_edited_added_and_deleted_files_show_at_once(folder: Path) -> None:
    a = _write(folder, "a.yaml", "alpha", folder.parent / "ra")
    config = WebConfig(pipelines=(str(folder),))
    assert _keys(config) == ["alpha"]
    # Edited in place, same size, same mtime second: the inode or mtime_ns tells.
    stat = a.stat()
    _write(folder, "a.yaml", "alphb", folder.parent / "ra")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert _keys(config) == ["alphb"]
    _write(folder, "c.yml", "gamma", folder.parent / "rc")
    assert _keys(config) == ["alphb", "gamma"]
    a.unlink()
    assert _keys(config) == ["gamma"]
    # A file that stops loading drops out (the pipelines page says why) and comes back fixed.
    (folder / "c.yml").write_text("name: [unclosed")
    assert _keys(config) == []
    _write(folder, "c.yml", "gamma", folder.parent / "rc")
    assert _keys(config) == ["gamma"]


def test_catalog_edits_show_at_once(folder: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    config = WebConfig(pipelines=(str(folder),), catalog=str(catalog))
    _write(folder, "a.yaml", "alpha", tmp_path / "ra")
    assert _keys(config) == ["alpha"]
    # The catalog names the pipeline's target: the pipeline's repository takes its name.
    catalog.write_text(yaml.safe_dump({"repos": {"lab/a": {"url": str(tmp_path / "ra")}}}))
    assert _keys(config) == ["lab/a"]
    assert known_repos(config)[0].pipelines == (str(folder / "a.yaml"),)
    catalog.unlink()
    assert _keys(config) == ["alpha"]


def test_pages_follow_the_files(folder: Path, site: Any) -> None:
    """Through the server: a pipeline added to the folder is a catalog row and a repository
    page on the next request; deleted, its page is a 404."""
    import shutil

    for f in site.pipelines.glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    config = WebConfig(pipelines=(str(folder),), catalog=str(site.catalog))
    with TestClient(create_app(config)) as web:
        keys = {r["key"] for r in web.get("/api/repos").json()["repos"]}
        assert keys == {"demo/nemo", "tas-native-files", "broken"}
        copy = _write(folder, "nemo-copy.yaml", "nemo-copy", folder.parent / "nemo-copy")
        keys = {r["key"] for r in web.get("/api/repos").json()["repos"]}
        assert "nemo-copy" in keys
        assert web.get("/pipelines").text.count('data-testid="pipeline-row"') == 4
        (folder / "tas-native-files.yaml").unlink()
        r = web.get("/repo", params={"name": "tas-native-files"})
        assert r.status_code == 404 and "no repository named" in r.text
        copy.unlink()
        keys = {r["key"] for r in web.get("/api/repos").json()["repos"]}
        assert keys == {"demo/nemo", "broken"}


def test_the_search_index_loads_each_pipeline_file_once(folder: Path, loads: list[str]) -> None:
    from icepipe.web.search_index import SearchIndex

    paths = [
        str(_write(folder, "a.yaml", "alpha", folder.parent / "ra")),
        str(_write(folder, "b.yaml", "beta", folder.parent / "ra")),
    ]
    index = SearchIndex(WebConfig(pipelines=(str(folder),)))
    index.refresh()
    assert sorted(loads) == paths
    hits = [(h.kind, h.title) for h in index.search("beta") if h.kind == "pipeline"]
    assert hits == [("pipeline", "beta")]
    index.refresh(force=True)
    assert sorted(loads) == paths
