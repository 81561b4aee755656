"""The web application's frame: catalog rows from pipelines, clean 404s for pages and API."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from icepipe.web.app import create_app
from icepipe.web.config import WebConfig, known_repos

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("ICEPIPE_CATALOG", str(tmp_path / "catalog.yaml"))
    return TestClient(create_app(WebConfig(pipelines=(str(PIPELINES),))))


def test_catalog_lists_every_pipeline_target(client: TestClient) -> None:
    repos = client.get("/api/repos").json()["repos"]
    keys = {r["key"] for r in repos}
    expected = {r.key for r in known_repos(WebConfig(pipelines=(str(PIPELINES),)))}
    assert keys == expected and len(keys) >= 5
    page = client.get("/")
    assert page.status_code == 200
    assert page.text.count('data-testid="repo-row"') == len(repos)


def test_unknown_paths_are_clean_404s(client: TestClient) -> None:
    page = client.get("/no/such/page")
    assert page.status_code == 404 and 'data-testid="error-status"' in page.text
    api = client.get("/api/no-such-thing")
    assert api.status_code == 404 and api.json() == {"error": "Not Found"}
