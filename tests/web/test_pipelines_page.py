"""The pipelines page: ``icepipe status`` of the site's pipelines, failing runs highlighted."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from icepipe.ops.reports import read_reports, runs_dir, state_dir
from icepipe.ops.status import pipeline_status
from icepipe.spec import load_pipeline
from icepipe.web.app import create_app
from icepipe.web.config import WebConfig


@pytest.fixture(scope="module")
def web(site: Any) -> TestClient:
    return TestClient(
        create_app(WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog)))
    )


def _rows(page: str) -> dict[str, str]:
    """Each ``pipeline-row``'s HTML by pipeline name."""
    rows = re.findall(r'<tr data-testid="pipeline-row".*?</tr>', page, flags=re.S)
    out = {}
    for row in rows:
        name = re.search(r'data-testid="pipeline-name"><strong>([^<]*)<', row)
        assert name, row
        out[html.unescape(name.group(1))] = row
    return out


def test_rows_follow_icepipe_status(web: TestClient, site: Any) -> None:
    doc = web.get("/api/pipelines").json()
    rows = {r["name"]: r for r in doc["pipelines"]}
    assert set(rows) == {"nemo-sst", "tas-native-files", "broken"}
    for name, row in rows.items():
        expected = pipeline_status(load_pipeline(site.pipelines / f"{name}.yaml"), runs=5)
        got = row["status"]
        assert [r["run_id"] for r in got["runs"]] == [r["run_id"] for r in expected.runs]
        assert (got["tip"], got["last_commit"], got["schedule"]) == (
            expected.tip,
            expected.last_commit,
            expected.schedule,
        )
        assert got["lag"].get("files_pending") == expected.lag.get("files_pending")
    nemo = rows["nemo-sst"]
    assert nemo["repo_key"] == "demo/nemo" and nemo["repo_url"] == "/repo?name=demo%2Fnemo"
    assert [r["status"] for r in nemo["status"]["runs"]] == ["committed", "committed"]
    assert not nemo["failing"] and nemo["error"] is None
    assert nemo["lag"].startswith("0 file(s) pending") and "of 3 listed" in nemo["lag"]
    page = web.get("/pipelines")
    assert page.status_code == 200
    cells = _rows(page.text)
    assert set(cells) == set(rows)
    assert 'href="/repo?name=demo%2Fnemo"' in cells["nemo-sst"]
    assert html.escape(nemo["lag"]) in cells["nemo-sst"]
    assert 'class="failing"' not in cells["nemo-sst"]
    # The tas scenario runs to 2098: its data reach past now (not "-2273539479s ago").
    tas = rows["tas-native-files"]["data_until"]
    assert tas.startswith("2098-12-16") and tas.endswith(" ahead)") and "-" not in tas[10:]


def test_broken_run_is_failing_with_its_error_and_file(web: TestClient, site: Any) -> None:
    pipeline = load_pipeline(site.pipelines / "broken.yaml")
    (report,) = read_reports(runs_dir(state_dir(pipeline.path), "broken"))
    (truncated,) = [f["url"] for f in report["files"]["failed"]]
    assert truncated.endswith("truncated.nc")
    row = next(r for r in web.get("/api/pipelines").json()["pipelines"] if r["name"] == "broken")
    assert row["failing"] and row["error"] == report["error"]["message"]
    assert "truncated.nc" in row["error"] and row["failed_files"] == [truncated]
    alerts = web.get("/api/pipelines").json()["alerts"]
    assert [(a["pipeline"], a["kind"]) for a in alerts] == [("broken", "failing")]
    page = web.get("/pipelines").text
    cell = _rows(page)["broken"]
    assert 'class="failing"' in cell
    error = re.search(r'data-testid="pipeline-error">(.*?)</td>', cell, flags=re.S)
    assert error and "truncated.nc" in error.group(1)
    assert html.escape(truncated) in error.group(1)
    # The alert comes before the table.
    top = page[: page.index('data-testid="pipelines"')]
    assert 'data-testid="alert"' in top and "<strong>broken</strong>: failing" in top


def test_a_file_that_does_not_load_shows_its_error(site: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsource: {urls: x.nc}\n")  # no concat_dim, no target
    scheduled = tmp_path / "nightly.yaml"
    doc = yaml.safe_load((site.pipelines / "nemo-sst.yaml").read_text())
    scheduled.write_text(yaml.safe_dump({**doc, "name": "nightly", "schedule": "0 3 * * *"}))
    config = WebConfig(pipelines=(str(tmp_path), str(site.pipelines)), catalog=str(site.catalog))
    web = TestClient(create_app(config))
    page = web.get("/pipelines")
    assert page.status_code == 200
    rows = _rows(page.text)
    assert set(rows) == {"bad", "nightly", "nemo-sst", "tas-native-files", "broken"}
    assert 'class="invalid"' in rows["bad"] and "bad.yaml" in rows["bad"]
    api = {r["name"]: r for r in web.get("/api/pipelines").json()["pipelines"]}
    assert api["bad"]["status"] is None and api["bad"]["error"]
    assert html.escape(api["bad"]["error"]) in rows["bad"]
    # A schedule: described as status does, its next run in the row; never ran here: late.
    nightly = api["nightly"]["status"]
    assert nightly["schedule"] == "0 3 * * * (UTC)" and nightly["next_run"].endswith("T03:00:00Z")
    assert nightly["next_run"] in rows["nightly"] and nightly["schedule"] in rows["nightly"]
    kinds = {(a["pipeline"], a["kind"]) for a in web.get("/api/pipelines").json()["alerts"]}
    assert kinds == {("broken", "failing"), ("nightly", "late")}


def test_a_slow_status_says_so_in_its_row(site: Any) -> None:
    config = WebConfig(
        pipelines=(str(site.pipelines),), catalog=str(site.catalog), request_timeout=1e-6
    )
    web = TestClient(create_app(config))
    page = web.get("/pipelines")
    assert page.status_code == 200
    rows = _rows(page.text)
    assert set(rows) == {"nemo-sst", "tas-native-files", "broken"}
    assert all("status not read within 1e-06s" in row for row in rows.values())
