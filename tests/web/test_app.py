"""The web application's frame: catalog rows from pipelines, clean 404s for pages and API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig, known_repos

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("ICEPIPE_CATALOG", str(tmp_path / "catalog.yaml"))
    return TestClient(create_app(WebConfig(pipelines=(str(PIPELINES),))))


def test_catalog_lists_every_pipeline_target(web: TestClient) -> None:
    repos = web.get("/api/repos").json()["repos"]
    keys = {r["key"] for r in repos}
    expected = {r.key for r in known_repos(WebConfig(pipelines=(str(PIPELINES),)))}
    assert keys == expected and len(keys) >= 5
    page = web.get("/")
    assert page.status_code == 200
    assert page.text.count('data-testid="repo-row"') == len(repos)


def test_unknown_paths_are_clean_404s(web: TestClient) -> None:
    page = web.get("/no/such/page")
    assert page.status_code == 404 and 'data-testid="error-status"' in page.text
    api = web.get("/api/no-such-thing")
    assert api.status_code == 404 and api.json() == {"error": "Not Found"}


def test_site_catalog_names_catalog_and_pipeline_repos(site: Any) -> None:
    """The shared site: one repository from the catalog, the others from the pipelines."""
    config = WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog))
    repos = {r.key: r for r in known_repos(config)}
    assert set(repos) == {"demo/nemo", "tas-native-files", "broken"}
    assert repos["demo/nemo"].in_catalog and repos["demo/nemo"].pipelines
    assert repos["demo/nemo"].entry.description.startswith("NEMO")
    assert not repos["tas-native-files"].in_catalog
    from icepipe.repository import open_repo, read_log

    log = read_log(open_repo(str(site.nemo_repo)), "main")
    assert [c.pipeline for c in log if c.pipeline] == ["nemo-sst", "nemo-sst"]
