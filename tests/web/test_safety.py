"""``icepipe web`` is safe to leave running: it listens on 127.0.0.1 unless told otherwise,
changes no repository, shows no secret, answers a slow repository with a 504 naming it,
escapes what repositories hold, and bounds what one request reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
import yaml
from starlette.testclient import TestClient

from icepipe.cli import build_parser
from icepipe.web.app import create_app
from icepipe.web.config import WebConfig, known_repos
from icepipe.web.server import serve
from tests.conftest import S3_KEY_ID, S3_SECRET

SCRIPT = "<script>alert('icepipe')</script>"


def _config(site: Any, **kw: Any) -> WebConfig:
    return WebConfig(pipelines=(str(site.pipelines),), catalog=str(site.catalog), **kw)


def test_binds_loopback_unless_told(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["web"])
    assert args.host == "127.0.0.1"
    # A non-loopback address is said on stderr before binding (TEST-NET-1: never this
    # machine's, so the bind fails and nothing is exposed).
    with pytest.raises(SystemExit):
        serve(WebConfig(), host="192.0.2.1", port=0)
    err = capsys.readouterr().err
    assert "listening on 192.0.2.1" in err and "readable by anyone" in err


def _pages(keys: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Every GET page and API answer of the server, for each repository key."""
    out: list[tuple[str, dict[str, str]]] = [
        ("/", {}),
        ("/api/repos", {}),
        ("/search", {"q": "sst"}),
        ("/api/search", {"q": "sst"}),
        ("/pipelines", {}),
        ("/api/pipelines", {}),
    ]
    for key in keys:
        for ref in ("main", "main~1"):
            out += [
                ("/repo", {"name": key, "ref": ref}),
                ("/api/repo", {"name": key, "ref": ref}),
                ("/api/log", {"name": key, "ref": ref}),
            ]
        out += [
            ("/diff", {"name": key, "a": "main~1", "b": "main"}),
            ("/api/diff", {"name": key}),
        ]
        for path in ("/sst/tos", "/mod1/rcp45/tas", "/g/t"):
            out += [
                ("/array", {"name": key, "path": path}),
                ("/api/array", {"name": key, "path": path}),
                ("/quicklook.png", {"name": key, "path": path}),
            ]
    return out


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def _refs(path: Path) -> dict[str, str]:
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))
    return {
        **{f"branch:{b}": repo.lookup_branch(b) for b in repo.list_branches()},
        **{f"tag:{t}": repo.lookup_tag(t) for t in repo.list_tags()},
    }


def test_read_only(site: Any) -> None:
    """No route but ``POST /api/reindex`` takes anything but GET, and after every page of
    every repository (and a reindex) the repositories' refs and files are as they were."""
    app = create_app(_config(site))
    methods = {
        (getattr(r, "path", ""), m)
        for r in app.routes
        for m in (getattr(r, "methods", None) or {"GET"})
    }
    assert {(p, m) for p, m in methods if m not in ("GET", "HEAD")} <= {("/api/reindex", "POST")}
    repos = site.root / "repos"
    before = (_files(repos), _refs(site.nemo_repo), _refs(site.tas_repo))
    keys = [r.key for r in known_repos(_config(site))]
    with TestClient(app) as client:
        for url, params in _pages(keys):
            assert client.get(url, params=params).status_code < 500, (url, params)
        client.post("/api/reindex")
    assert (_files(repos), _refs(site.nemo_repo), _refs(site.tas_repo)) == before


@pytest.fixture
def secret_site(seaweedfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog of an S3 repository whose credentials come from variables set to secret
    values, and of one in a missing bucket; HTML in a description, a commit message and an
    attribute.

    On SeaweedFS, which checks credentials (the pages read with the secret), in its own
    process: Icechunk's ``inspect_snapshot`` holds the GIL while it waits for storage, so
    an S3 server in the test process (moto) could never answer it.
    """
    s3 = seaweedfs
    from icepipe.xarray import to_icechunk

    monkeypatch.setenv("WEB_TEST_KEY_VARIABLE", S3_KEY_ID)
    monkeypatch.setenv("WEB_TEST_SECRET_VARIABLE", S3_SECRET)
    storage = s3.options(
        access_key_id_env="WEB_TEST_KEY_VARIABLE", secret_access_key_env="WEB_TEST_SECRET_VARIABLE"
    )
    url = f"s3://{s3.bucket('web')}/repo"
    ds = xr.Dataset({"t": ("x", np.arange(4.0), {"long_name": SCRIPT})}, attrs={"title": SCRIPT})
    to_icechunk(ds, url, group="g", storage=storage, message=f"first {SCRIPT}")
    to_icechunk(ds.t.to_dataset().assign(t=ds.t + 1), url, group="g", mode="a", storage=storage)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "repos": {
                    "sec/s3": {"url": url, "storage": storage, "description": f"d {SCRIPT}"},
                    "sec/missing": {"url": "s3://no-such-bucket-web/x", "storage": storage},
                }
            }
        )
    )
    monkeypatch.setenv("ICEPIPE_CATALOG", str(catalog))
    return catalog


def test_no_secret_and_everything_escaped(secret_site: Path) -> None:
    config = WebConfig(catalog=str(secret_site))
    with TestClient(create_app(config)) as client:
        rows = {r["key"]: r for r in client.get("/api/repos").json()["repos"]}
        assert rows["sec/s3"]["exists"] and rows["sec/s3"]["last_commit"]
        assert rows["sec/missing"]["exists"] is not True
        seen = 0
        for url, params in _pages(["sec/s3", "sec/missing"]):
            r = client.get(url, params=params)
            for text in (r.text, str(r.headers)):
                for secret in (S3_SECRET, "WEB_TEST_SECRET_VARIABLE", "WEB_TEST_KEY_VARIABLE"):
                    assert secret not in text, (url, params, secret)
            if r.headers.get("content-type", "").startswith("text/html"):
                assert "<script" not in r.text, (url, params)
                seen += "&lt;script&gt;" in r.text
        page = client.get("/repo", params={"name": "sec/s3"}).text
    assert "d &lt;script&gt;alert(&#39;icepipe&#39;)&lt;/script&gt;" in page
    assert "first &lt;script&gt;" in page  # the commit message in the log
    assert seen >= 3


def test_slow_repositories_time_out_with_a_504_naming_them(
    site: Any, hanging_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = _config(site, request_timeout=1e-9)
    with TestClient(create_app(tiny)) as client:
        for url in ("/repo", "/api/repo", "/api/log", "/diff", "/api/diff"):
            r = client.get(url, params={"name": "demo/nemo"})
            assert r.status_code == 504, url
            detail = r.json()["error"] if url.startswith("/api") else r.text
            assert "demo/nemo" in detail.replace("&#39;", "'") and "longer than" in detail
    # In the catalog, a repository that does not answer shows so in its row; the others show.
    catalog = yaml.safe_load(site.catalog.read_text())
    catalog["repos"]["slow/s3"] = {
        "url": "s3://bucket/slow",
        "storage": {"endpoint": hanging_endpoint, "allow_http": True, "anonymous": True},
        "config": {"storage": {"retries": {"max_tries": 1}, "timeouts": {"read_timeout_ms": 4000}}},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    monkeypatch.setenv("ICEPIPE_CATALOG", str(path))
    config = WebConfig(pipelines=(str(site.pipelines),), catalog=str(path), request_timeout=1.5)
    with TestClient(create_app(config)) as client:
        rows = {r["key"]: r for r in client.get("/api/repos").json()["repos"]}
    assert "'slow/s3'" in rows["slow/s3"]["problem"] and "longer than" in rows["slow/s3"]["problem"]
    assert rows["demo/nemo"]["exists"] and rows["demo/nemo"]["problem"] is None


def test_unknown_repositories_refs_and_paths_are_404s(site: Any) -> None:
    with TestClient(create_app(_config(site))) as client:
        for url, params in (
            ("/repo", {"name": "no/such"}),
            ("/repo", {"name": "demo/nemo", "ref": "no-such-ref"}),
            ("/diff", {"name": "demo/nemo", "a": "no-such-ref", "b": "main"}),
            ("/no/such/page", {}),
        ):
            page = client.get(url, params=params)
            assert page.status_code == 404 and 'data-testid="error-detail"' in page.text
            api = client.get("/api" + url, params=params)
            assert api.status_code == 404 and api.json()["error"]


def test_the_read_pool_and_timeout_are_set_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from icepipe.cli import web_config

    defaults = web_config(build_parser().parse_args(["web"]))
    assert (defaults.workers, defaults.max_waiting, defaults.request_timeout) == (8, 64, 20.0)
    assert defaults == WebConfig()
    args = ["web", "--read-threads", "2", "--max-waiting", "0", "--request-timeout", "2.5"]
    config = web_config(build_parser().parse_args(args))
    assert (config.workers, config.max_waiting, config.request_timeout) == (2, 0, 2.5)
    for bad in (["--read-threads", "0"], ["--max-waiting", "-1"], ["--request-timeout", "nan"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["web", *bad])
        assert exited.value.code == 2
        assert bad[0] in capsys.readouterr().err
