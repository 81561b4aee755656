"""Secret scan (issue 11): secrets placed in every field a user could paste them into, then
every object of every bucket, every file icepipe wrote (repositories, run reports), every
output line and every ``--json`` document is searched for them.

A run with credentials in the environment must succeed without them showing up anywhere; a
pipeline or catalog holding a secret must be refused (exit 2) without echoing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import S3_SECRET, S3Server, write_series

ICEPIPE = [sys.executable, "-m", "icepipe.cli"]


def _secret(kind: str) -> str:
    # Upper-case letters and digits: it passes for an environment variable's name.
    return f"AKIA{kind.upper()}{os.urandom(6).hex().upper()}"


class _Scan:
    """Runs the CLI and keeps everything it printed, to search at the end."""

    def __init__(self, folder: Path, client: Any) -> None:
        self.folder = folder
        self.client = client
        self.outputs: list[str] = []

    def cli(self, *args: str, catalog: str = "catalog.yaml") -> subprocess.CompletedProcess[str]:
        (done,) = self.cli_all([(args, catalog)])
        return done

    def cli_all(
        self, calls: list[tuple[tuple[str, ...], str]]
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent CLI commands (arguments, catalog file) at once: each is a separate
        process with its own output, as when run one by one (~0.5-4 s each, mostly start-up:
        run in turn they were most of this test's time)."""
        procs = [
            subprocess.Popen(
                [*ICEPIPE, *args],
                cwd=self.folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "ICEPIPE_CATALOG": str(self.folder / catalog)},
            )
            for args, catalog in calls
        ]
        done = []
        for (args, _), proc in zip(calls, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=300)
            done.append(
                subprocess.CompletedProcess([*ICEPIPE, *args], proc.returncode, stdout, stderr)
            )
            self.outputs += [stdout, stderr]
        return done

    def run_args(self, doc: dict[str, Any], *extra: str) -> tuple[str, ...]:
        """Write the pipeline; the arguments of ``icepipe run`` on it."""
        path = self.folder / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return ("run", str(path), "--scheduler", self.client.scheduler.address, *extra)

    def run(self, doc: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*self.run_args(doc, *extra))


def _pipeline(name: str, urls: Any, repo: str, **target: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"urls": urls, "concat_dim": "time"},
        "target": {"repo": repo, "group": "g", **target},
    }


def test_secrets_in_every_field_never_leak(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    scan = _Scan(tmp_path, s3_client)
    paths = write_series(tmp_path / "src", 2)
    src_bucket, repo_bucket = s3.bucket("scan-src"), s3.bucket("scan-repo")
    s3.upload(paths, src_bucket, "s")
    options = s3.options()
    repo = f"s3://{repo_bucket}/repo"
    host = s3.endpoint.removeprefix("http://")
    pasted: dict[str, str] = {}

    # 1. The real secret, in the environment where it belongs: the run succeeds.
    good = _pipeline("good", f"s3://{src_bucket}/s/*.nc", repo, **options)
    good["source"]["storage"] = options
    ok = scan.run(good, "--json")
    assert ok.returncode == 0, ok.stderr
    reads = [
        ((command, str(tmp_path / "good.yaml"), "--json"), "catalog.yaml")
        for command in ("status", "log", "info", "validate")
    ]
    # Every refusal below is a run of its own pipeline: they run at once (with the reads above).
    refused: list[tuple[dict[str, Any], str]] = []  # each with what its error must name

    # 2. Secrets pasted into *_env keys, looking like variable names (were printed).
    env_keys = ("access_key_id_env", "secret_access_key_env", "session_token_env")
    for key in env_keys:
        pasted[key] = _secret(key[:3])
        bad = _pipeline(f"env-{key[:6]}", f"s3://{src_bucket}/s/*.nc", repo, **options)
        bad["source"]["storage"] = options
        bad["target"][key] = pasted[key]
        source = _pipeline(f"srcenv-{key[:6]}", f"s3://{src_bucket}/s/*.nc", repo, **options)
        source["source"]["storage"] = {**options, key: pasted[key]}
        refused += [(bad, key), (source, "")]

    # 3. Credentials in URLs: endpoints, the repository, source URLs (were saved in the
    # repository config every reader sees, and echoed).
    pasted["endpoint"] = _secret("endpoint")
    for where in ("target", "source"):
        doc = _pipeline(f"endpoint-{where}", f"s3://{src_bucket}/s/*.nc", repo, **options)
        url = f"http://KEY:{pasted['endpoint']}@{host}"
        if where == "target":
            doc["target"]["endpoint"] = url
        else:
            doc["source"]["storage"] = {**options, "endpoint": url}
        refused.append((doc, "holds credentials"))
    pasted["repo"] = _secret("repo")
    doc = _pipeline("repo-url", f"s3://{src_bucket}/s/*.nc", f"s3://K:{pasted['repo']}@b/r")
    refused.append((doc, ""))
    pasted["source"] = _secret("source")
    doc = _pipeline("source-url", [f"https://u:{pasted['source']}@{host}/b/f.nc"], repo)
    refused.append((doc, ""))

    # 4. Secrets written as keys (refused, named by key).
    pasted["key"] = _secret("key")
    doc = _pipeline("as-key", f"s3://{src_bucket}/s/*.nc", repo, **options)
    doc["target"]["secret_access_key"] = pasted["key"]
    refused.append((doc, ""))

    runs = [(scan.run_args(doc), "catalog.yaml") for doc, _ in refused]
    done = scan.cli_all([*reads, *runs])
    for (args, _), read in zip(reads, done, strict=False):
        assert read.returncode == 0, (args, read.stderr)
    for (doc, named), ran in zip(refused, done[len(reads) :], strict=True):
        assert ran.returncode == 2, (doc["name"], ran.stderr)
        assert named in ran.stderr, (doc["name"], ran.stderr)

    # 5. The catalog: an entry URL and an endpoint with credentials, a pasted *_env value
    # (one catalog file each, so that their commands run at once).
    pasted["catalog"] = _secret("catalog")
    catalogs = {
        "url.yaml": {"acme/url": {"url": f"s3://K:{pasted['catalog']}@bucket/r"}},
        "endpoint.yaml": {
            "acme/endpoint": {
                "url": repo,
                "storage": {**options, "endpoint": f"http://K:{pasted['catalog']}@{host}"},
            }
        },
    }
    pasted["catalog_env"] = _secret("catenv")
    catalogs["env.yaml"] = {
        "acme/env": {
            "url": repo,
            "storage": {**options, "secret_access_key_env": pasted["catalog_env"]},
        }
    }
    for name, repos in catalogs.items():
        (tmp_path / name).write_text(yaml.safe_dump({"repos": repos}))
    expected = [
        (("repo", "list", "--json"), "url.yaml", 2),
        (("repo", "list", "--json"), "endpoint.yaml", 2),
        (("repo", "info", "acme/env", "--json"), "env.yaml", 0),
        (("repo", "list", "--json"), "env.yaml", 0),
        (("repo", "info", "acme/env"), "env.yaml", 0),
        (("log", "catalog:acme/env"), "env.yaml", 2),
    ]
    done = scan.cli_all([(args, catalog) for args, catalog, _ in expected])
    for (args, catalog, code), ran in zip(expected, done, strict=True):
        assert ran.returncode == code, (args, catalog, ran.stdout, ran.stderr)

    # The scan: outputs, every file icepipe wrote, every object of every bucket.
    secrets = {"S3_SECRET": S3_SECRET, **pasted}
    leaks = []
    for name, secret in secrets.items():
        for i, text in enumerate(scan.outputs):
            if secret in text:
                leaks.append(f"{name} in output {i}: {text[:300]}")
        for path in tmp_path.rglob("*"):
            if (
                path.is_file()
                and path.suffix not in (".yaml", ".nc")
                and secret.encode() in path.read_bytes()
            ):
                leaks.append(f"{name} in {path}")
    client = s3.client()
    for bucket in client.list_buckets()["Buckets"]:
        for key, body in s3.objects(bucket["Name"]):
            for name, secret in secrets.items():
                if secret.encode() in body:
                    leaks.append(f"{name} in s3://{bucket['Name']}/{key}")
    assert not leaks, "\n".join(leaks)
    reports = list((tmp_path / ".icepipe").glob("runs/*/*.json"))
    assert len(reports) >= 12  # every run, failed or not, wrote its report (and was scanned)
