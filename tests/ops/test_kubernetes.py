"""``icepipe schedule export --format kubernetes``: secrets by reference, resources, service
account, run reports on a claim, validation CronJobs; every manifest checked against the
Kubernetes API's OpenAPI schemas (``kubernetes-validate``, strict: unknown fields refused),
offline. The container image recipe (``deploy/Dockerfile``) is checked statically: no Docker
daemon here to build it.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from icepipe.cli import main

ROOT = Path(__file__).resolve().parents[2]
#: The oldest Kubernetes the manifests target (CronJob timeZone is GA since 1.27), and the
#: newest the validator knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRET_VALUE = "wJalrXUtnFEMI-not-a-real-secret-0123456789"


def _pipeline(folder: Path, name: str, schedule: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "source: {urls: 's3://bucket/src/*.nc', concat_dim: time, storage: {region: eu-west-1,"
        " access_key_id_env: SRC_KEY, secret_access_key_env: SRC_SECRET}}\n"
        "target: {repo: 's3://bucket/repo', access_key_id_env: SRC_KEY,"
        " secret_access_key_env: SRC_SECRET}\n"
        f"schedule: {schedule}\n"
    )
    return path


def _export(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    code = main(["schedule", "export", str(folder), "--format", "kubernetes", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "&id" not in out, "no YAML anchors: not every tool reading manifests follows them"
    return list(yaml.safe_load_all(out))


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


FULL = (
    *("--image", "registry.example/icepipe:0.1.0", "--namespace", "data"),
    *("--configmap", "icepipe-pipelines", "--pipeline-dir", "/pipelines"),
    *("--env-from-secret", "s3-credentials", "--env-from-secret", "dask-settings"),
    *("--resources", "cpu=2,memory=8Gi,limits.cpu=4,requests.ephemeral-storage=1Gi"),
    *("--service-account", "icepipe-ingest"),
    *("--state-dir", "/state", "--state-claim", "icepipe-state"),
    *("--validate-schedule", "30 6 * * sun", "--validate-sample", "5"),
)


def test_full_export_is_valid_kubernetes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRC_KEY", "AKIA-not-a-real-key")
    monkeypatch.setenv("SRC_SECRET", SECRET_VALUE)
    _pipeline(tmp_path, "nightly", "{cron: '0 2 * * *', timezone: Europe/Paris}")
    _pipeline(tmp_path, "hourly", "'@hourly'")
    docs = _export(tmp_path, capsys, *FULL)
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    jobs = {d["metadata"]["name"]: d for d in docs}
    assert set(jobs) == {
        "icepipe-hourly",
        "icepipe-hourly-validate",
        "icepipe-nightly",
        "icepipe-nightly-validate",
    }

    run, check = jobs["icepipe-nightly"], jobs["icepipe-nightly-validate"]
    assert run["metadata"]["namespace"] == "data"
    pod = _pod(run)
    [container] = pod["containers"]
    assert container["command"] == [
        *("icepipe", "run", "/pipelines/nightly.yaml", "--state-dir", "/state"),
    ]
    assert container["envFrom"] == [
        {"secretRef": {"name": "s3-credentials"}},
        {"secretRef": {"name": "dask-settings"}},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert pod["serviceAccountName"] == "icepipe-ingest"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["state"]["mountPath"] == "/state"
    assert mounts["pipelines"] == {"name": "pipelines", "mountPath": "/pipelines", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "icepipe-state"}

    # The validation job: its own schedule, in the pipeline's zone, same identity and secrets.
    assert check["spec"]["schedule"] == "30 6 * * sun"
    assert check["spec"]["timeZone"] == "Europe/Paris"
    assert jobs["icepipe-hourly-validate"]["spec"]["timeZone"] == "UTC"
    assert _pod(check)["containers"][0]["command"] == [
        *("icepipe", "validate", "/pipelines/nightly.yaml", "--sample", "5"),
    ]
    assert _pod(check)["containers"][0]["envFrom"] == container["envFrom"]
    assert _pod(check)["serviceAccountName"] == "icepipe-ingest"
    assert check["metadata"]["labels"]["icepipe.dev/task"] == "validate"


def test_no_secret_value_reaches_the_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRC_KEY", "AKIA-not-a-real-key")
    monkeypatch.setenv("SRC_SECRET", SECRET_VALUE)
    _pipeline(tmp_path, "nightly", "'0 2 * * *'")
    code = main(["schedule", "export", str(tmp_path), "--format", "kubernetes", *FULL])
    out = capsys.readouterr().out
    assert code == 0
    assert SECRET_VALUE not in out and "AKIA-not-a-real-key" not in out
    assert "SRC_SECRET" not in out  # not even the names: the pipeline file holds them


def test_minimal_export_stays_minimal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pipeline(tmp_path, "nightly", "'0 2 * * *'")
    [doc] = _export(tmp_path, capsys)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)
    pod = _pod(doc)
    assert set(pod) == {"restartPolicy", "containers"}
    assert set(pod["containers"][0]) == {"name", "image", "command"}


def test_long_names_stay_within_kubernetes_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pipeline(tmp_path, "a" * 40 + "-monthly.means", "'@daily'")
    docs = _export(tmp_path, capsys, "--validate-schedule", "@weekly")
    names = [d["metadata"]["name"] for d in docs]
    assert len(set(names)) == 2
    assert all(len(n) <= 52 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--resources", "cpu=2,mem=8Gi"], "--resources"),
        (["--resources", "memory=8 GB"], "--resources"),
        (["--env-from-secret", "S3_Credentials"], "--env-from-secret"),
        (["--service-account", "ingest_bot"], "--service-account"),
        (["--state-claim", "state"], "--state-claim"),
        (["--state-dir", "state"], "--state-dir"),
        (["--validate-schedule", "0 6 * * 9"], "--validate-schedule"),
        (["--validate-timezone", "Europe/Paris"], "--validate-timezone"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], field: str
) -> None:
    _pipeline(tmp_path, "nightly", "'0 2 * * *'")
    assert main(["schedule", "export", str(tmp_path), "--format", "kubernetes", *args]) == 2
    assert f"icepipe: error: {field}" in capsys.readouterr().err


def test_dockerfile_installs_the_checkout() -> None:
    """Static checks of the image recipe (Docker cannot run here): the base image, that every
    file it copies exists and is what the wheel is built from, and that the build context
    leaves the sample data and the virtualenv out."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.12-slim$", text, re.M)
    copied = [w for line in re.findall(r"^COPY (.+) \S+$", text, re.M) for w in line.split()]
    assert copied == ["pyproject.toml", "README.md", "src"]
    assert all((ROOT / c).exists() for c in copied)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["readme"] in copied
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert all(p.split("/")[0] in copied for p in packages)
    assert "pip install /tmp/icepipe" in text and re.search(r"^USER \d+$", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "repos", ".git"} <= set(ignored)
    assert not os.path.isabs(copied[0])
