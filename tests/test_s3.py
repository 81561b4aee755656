"""Sources and repositories in S3, against real S3 servers on 127.0.0.1 (see tests/conftest.py).

moto is the main tier (fast, in-process, real HTTP, conditional writes, ACLs for anonymous
requests); SeaweedFS, a separate server that checks credentials, runs the conditional-write
race and the wrong-credentials reader (skipped when its binary cannot start).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import icechunk
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

import icepipe
from icepipe import repository, sources
from icepipe.errors import ConfigError, SourceError
from icepipe.storage import StorageOptions
from tests.conftest import REPO_ROOT, S3_KEY_ID, S3_SECRET, S3Server, write_series
from tests.ingest_checks import sources as local_sources

SECRET = S3_SECRET.encode()


def pipeline_doc(
    name: str,
    urls: Any,
    repo: str,
    *,
    source_storage: dict[str, Any] | None = None,
    target_storage: dict[str, Any] | None = None,
    group: str | None = "g",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    source: dict[str, Any] = {"urls": urls, "concat_dim": "time"}
    if source_storage:
        source["storage"] = source_storage
    tgt: dict[str, Any] = {"repo": repo, **(target_storage or {})}
    if group:
        tgt["group"] = group
    return {"name": name, "source": source, "target": tgt, **(extra or {})}


def write_doc(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def load(folder: Path, doc: dict[str, Any]) -> icepipe.Pipeline:
    return icepipe.load_pipeline(write_doc(folder, doc))


def read_back(p: icepipe.Pipeline, **kw: Any) -> xr.Dataset:
    return icepipe.open_dataset(
        p.target.repo,
        group=p.target.group,
        storage=p.target.storage,
        source_storage=p.source.storage,
        **kw,
    ).load()


def open_repo(p: icepipe.Pipeline) -> icechunk.Repository:
    t = p.target
    return repository.open_repo(t.repo, storage=t.storage, source_storage=p.source.storage)


# ----------------------------------------------------------------------------------------------
# Conditional writes: what makes commits safe on object stores without any lock
# ----------------------------------------------------------------------------------------------


def _race(server: S3Server, rounds: int) -> list[int]:
    """``rounds`` times, 8 sessions from 8 separately opened repositories commit at once."""
    options = StorageOptions(**server.options())
    location = f"s3://{server.bucket('race')}/repo"
    settings = {"storage": {"retries": {"max_tries": 3}}, "inline_chunk_threshold_bytes": 64}
    repository.open_repo(location, create=True, storage=options, config=settings)
    winners = []
    for r in range(rounds):
        sessions = []
        for i in range(8):
            repo = repository.open_repo(location, storage=options, config=settings)
            s = repo.writable_session("main")
            zarr.open_group(s.store).attrs[f"r{r}w{i}"] = i
            sessions.append(s)
        barrier = threading.Barrier(8)
        results: list[str | None] = [None] * 8

        def commit(
            i: int,
            sessions: list[Any] = sessions,
            results: list[Any] = results,
            barrier: threading.Barrier = barrier,
            r: int = r,
        ) -> None:
            barrier.wait()
            try:
                results[i] = sessions[i].commit(f"round {r} writer {i}")
            except icechunk.ConflictError:
                results[i] = None

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [i for i, s in enumerate(results) if s is not None]
        winners.append(len(won))
        repo = repository.open_repo(location, storage=options)
        history = list(repo.ancestry(branch="main"))
        # Nothing lost, nothing extra: one new commit per round, the winner's, at the tip.
        assert len(history) == r + 2
        assert history[0].id == results[won[0]]
    stored = repository.open_repo(location, storage=options).config.storage
    assert stored is None or stored.unsafe_use_conditional_update is not False
    return winners


def test_racing_commits_have_exactly_one_winner_on_moto(s3: S3Server) -> None:
    assert _race(s3, rounds=3) == [1, 1, 1]


def test_racing_commits_have_exactly_one_winner_on_seaweedfs(seaweedfs: S3Server) -> None:
    assert _race(seaweedfs, rounds=1) == [1]


def test_object_store_commits_take_no_os_lock(s3: S3Server, tmp_path: Path) -> None:
    p = load(
        tmp_path,
        pipeline_doc("nolock", "src/*.nc", f"s3://{s3.bucket()}/repo", target_storage=s3.options()),
    )
    write_series(tmp_path / "src", 1)
    before = set(Path.cwd().iterdir())
    with repository.commit_lock(p.target.repo):
        pass
    assert set(Path.cwd().iterdir()) == before
    repo = repository.open_repo(p.target.repo, create=True, storage=p.target.storage)
    assert repository.local_path(repo) is None


# ----------------------------------------------------------------------------------------------
# Pipelines: sources and repositories in S3
# ----------------------------------------------------------------------------------------------


def test_virtual_s3_sources_into_s3_repo(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    paths = write_series(tmp_path / "src", 4)
    src = s3.bucket("src")
    s3.upload(paths[:3], src, "series")
    p = load(
        tmp_path,
        pipeline_doc(
            "virt",
            f"s3://{src}/series/*.nc",
            f"s3://{s3.bucket('repo')}/repos/virt",
            source_storage=s3.options(),
            target_storage=s3.options(),
        ),
    )
    first = icepipe.run(p, client=s3_client)
    assert first.status == "committed" and len(first.files_new) == 3
    xr.testing.assert_identical(read_back(p), local_sources(paths[:3]))
    ledger = repository.read_ledger(open_repo(p), first.snapshot_id or "", "g")
    assert sorted(ledger) == [f"s3://{src}/series/{f.name}" for f in paths[:3]]
    assert all(r["etag"] for r in ledger.values())  # S3 objects: ETag + size
    assert icepipe.run(p, client=s3_client).status == "nothing-new"
    s3.upload(paths[3:], src, "series")
    again = icepipe.run(p, client=s3_client)
    assert again.files_new == (f"s3://{src}/series/{paths[3].name}",)
    xr.testing.assert_identical(read_back(p), local_sources(paths))


@pytest.mark.parametrize("fmt", ["netcdf4", "netcdf3"])
def test_native_s3_sources_into_s3_repo(
    tmp_path: Path, s3: S3Server, s3_client: Any, fmt: str
) -> None:
    paths = write_series(tmp_path / "src", 3, fmt=fmt)
    src = s3.bucket("src")
    urls = s3.upload(paths, src, "series")
    p = load(
        tmp_path,
        pipeline_doc(
            "native",
            urls,
            f"s3://{s3.bucket('repo')}/repos/native",
            source_storage=s3.options(),
            target_storage=s3.options(),
            extra={"mode": "native", "chunks": {"time": 6}},
        ),
    )
    assert icepipe.run(p, client=s3_client).status == "committed"
    assert icepipe.run(p, client=s3_client).status == "nothing-new"
    for url in urls:  # native chunks: the repository no longer needs the sources
        s3.delete(url)
    stored = icepipe.open_dataset(p.target.repo, group="g", storage=p.target.storage).load()
    xr.testing.assert_identical(stored, local_sources(paths))


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_local_sources_into_s3_repo(
    tmp_path: Path, s3: S3Server, s3_client: Any, mode: str
) -> None:
    paths = write_series(tmp_path / "src", 3)
    p = load(
        tmp_path,
        pipeline_doc(
            "local-to-s3",
            "src/*.nc",
            f"s3://{s3.bucket('repo')}/repo",
            # No credential names: the standard AWS_* variables (client and workers).
            target_storage={k: v for k, v in s3.options().items() if not k.endswith("_env")},
            extra={"mode": mode},
        ),
    )
    assert icepipe.run(p, client=s3_client).status == "committed"
    xr.testing.assert_identical(read_back(p), local_sources(paths))
    assert icepipe.run(p, client=s3_client).status == "nothing-new"


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_s3_sources_into_local_repo(
    tmp_path: Path, s3: S3Server, s3_client: Any, mode: str
) -> None:
    paths = write_series(tmp_path / "src", 3, fmt="netcdf3")
    src = s3.bucket("src")
    s3.upload(paths, src, "nc3")
    p = load(
        tmp_path,
        pipeline_doc(
            "s3-to-local",
            f"s3://{src}/nc3/*.nc",
            "repo",
            source_storage=s3.options(),
            extra={"mode": mode},
        ),
    )
    assert icepipe.run(p, client=s3_client).status == "committed"
    xr.testing.assert_identical(read_back(p), local_sources(paths))
    assert icepipe.run(p, client=s3_client).status == "nothing-new"


@pytest.mark.parametrize("example", ["nemo-sst", "nemo-native"])
def test_example_pipelines_with_everything_in_s3(
    tmp_path: Path, s3: S3Server, s3_client: Any, sample_data: Path, example: str
) -> None:
    """The example pipelines' shapes on the real NEMO files, uploaded to S3."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from demo import reference

    local = icepipe.load_pipeline(REPO_ROOT / "pipelines" / f"{example}.yaml")
    files = sorted((sample_data / "nemo").glob("nemo_1m_*_grid-T.nc"))
    src = s3.bucket("nemo")
    s3.upload(files, src, "nemo")
    options = StorageOptions(**s3.options())
    p = dataclasses.replace(
        local,
        source=dataclasses.replace(
            local.source, urls=(f"s3://{src}/nemo/nemo_1m_*_grid-T.nc",), storage=options
        ),
        target=dataclasses.replace(
            local.target, repo=f"s3://{s3.bucket('repos')}/{example}", storage=options
        ),
    )
    result = icepipe.run(p, client=s3_client)
    assert result.status == "committed" and len(result.files_new) == 3
    stored = read_back(p)
    ref = reference(local, [f"file://{f}" for f in files]).load()
    xr.testing.assert_identical(stored, ref)
    assert icepipe.run(p, client=s3_client).status == "nothing-new"


def test_public_bucket_read_anonymously(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    paths = write_series(tmp_path / "src", 2)
    public = s3.bucket("public", public=True)
    s3.upload(paths, public, "open", public=True)
    anonymous = {k: v for k, v in s3.options(anonymous=True).items() if not k.endswith("_env")}
    p = load(
        tmp_path,
        pipeline_doc(
            "anon",
            f"s3://{public}/open/*.nc",
            f"s3://{s3.bucket('repo')}/repo",
            source_storage=anonymous,
            target_storage=s3.options(),
        ),
    )
    assert icepipe.run(p, client=s3_client).status == "committed"
    # The container remembers it is anonymous: a reader needs no source credentials.
    stored = icepipe.open_dataset(p.target.repo, group="g", storage=p.target.storage).load()
    xr.testing.assert_identical(stored, local_sources(paths))


def test_http_sources_as_an_explicit_list(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    paths = write_series(tmp_path / "src", 2)
    public = s3.bucket("web", public=True)
    s3.upload(paths, public, "files", public=True)
    urls = [f"{s3.endpoint}/{public}/files/{f.name}" for f in paths]
    p = load(
        tmp_path,
        pipeline_doc("http", urls, "repo", source_storage={"allow_http": True}),
    )
    assert icepipe.run(p, client=s3_client).status == "committed"
    xr.testing.assert_identical(read_back(p), local_sources(paths))
    assert icepipe.run(p, client=s3_client).status == "nothing-new"
    glob = load(
        tmp_path,
        pipeline_doc(
            "http-glob",
            f"{s3.endpoint}/{public}/files/*.nc",
            "repo2",
            source_storage={"allow_http": True},
        ),
    )
    with pytest.raises(ConfigError, match=r"cannot be listed.*explicit list"):
        icepipe.run(glob, client=s3_client)
    one = load(
        tmp_path,
        pipeline_doc("http-one", urls[0], "repo3", source_storage={"allow_http": True}),
    )
    assert icepipe.run(one, client=s3_client).files_new == (urls[0],)


def test_rewritten_object_of_same_size_is_detected_by_etag(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    paths = write_series(tmp_path / "src", 2, fmt="netcdf3")
    src = s3.bucket("src")
    urls = s3.upload(paths, src, "d")
    p = load(
        tmp_path,
        pipeline_doc("etag", f"s3://{src}/d/*.nc", "repo", source_storage=s3.options()),
    )
    icepipe.run(p, client=s3_client)
    # Same size, other bytes: netCDF3 data at a fixed offset.
    data = bytearray(paths[1].read_bytes())
    data[-4:] = bytes(4) if data[-4:] != bytes(4) else b"\x01\x02\x03\x04"
    changed = tmp_path / "changed" / paths[1].name
    changed.parent.mkdir()
    changed.write_bytes(bytes(data))
    s3.upload([changed], src, "d")
    with pytest.raises(SourceError, match="changed after they were ingested") as info:
        icepipe.run(p, client=s3_client)
    assert info.value.urls == (urls[1],)


def test_zarr_store_in_s3_ingests_virtually(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    ds = xr.Dataset(
        {"tas": (("time", "lat"), np.arange(20, dtype="f4").reshape(4, 5))},
        coords={"time": np.arange(4), "lat": np.arange(5.0)},
    )
    ds.to_zarr(
        tmp_path / "store.zarr",
        zarr_format=3,
        consolidated=False,
        encoding={"tas": {"chunks": (2, 5)}},
    )
    src = s3.bucket("zarr")
    s3.upload([tmp_path / "store.zarr"], src, "stores")
    p = load(
        tmp_path,
        pipeline_doc("zarr", f"s3://{src}/stores/*.zarr", "repo", source_storage=s3.options()),
    )
    result = icepipe.run(p, client=s3_client)
    assert result.files_new == (f"s3://{src}/stores/store.zarr",)
    xr.testing.assert_identical(read_back(p), ds)


# ----------------------------------------------------------------------------------------------
# Readers without access: an icepipe error naming the fix, never fill values
# ----------------------------------------------------------------------------------------------


def _ingest_private(tmp_path: Path, server: S3Server, client: Any) -> icepipe.Pipeline:
    paths = write_series(tmp_path / "src", 2)
    src = server.bucket("private")
    server.upload(paths, src, "p")
    p = load(
        tmp_path,
        pipeline_doc(
            "private",
            f"s3://{src}/p/*.nc",
            f"s3://{server.bucket('repo')}/repo",
            source_storage=server.options(),
            target_storage=server.options(),
        ),
    )
    icepipe.run(p, client=client)
    return p


def _raw_read(p: icepipe.Pipeline, credential: Any) -> xr.Dataset:
    """Read with plain icechunk + xarray, the given credentials for every container."""
    t = p.target
    storage = repository.repo.storage_for(t.repo, t.storage)
    config = icechunk.Repository.fetch_config(storage)
    assert config is not None and config.virtual_chunk_containers
    creds = icechunk.containers_credentials(
        {c.url_prefix: credential for c in config.virtual_chunk_containers.values()}
    )
    repo = icechunk.Repository.open(storage, authorize_virtual_chunk_access=creds)
    session = repo.readonly_session(branch="main")
    return xr.open_zarr(session.store, group="g", consolidated=False, zarr_format=3).load()


def test_reader_without_access_gets_an_icepipe_error(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    p = _ingest_private(tmp_path, s3, s3_client)
    with pytest.raises(ConfigError, match=r"may not read the source files.*access denied") as info:
        icepipe.open_dataset(
            p.target.repo, group="g", storage=p.target.storage, source_storage={"anonymous": True}
        )
    assert "source_storage" in str(info.value)
    # Plain icechunk raises too (never fill values).
    with pytest.raises(icechunk.IcechunkError, match="error fetching virtual reference"):
        _raw_read(p, icechunk.s3_anonymous_credentials())
    assert np.isfinite(read_back(p)["tas"].values).all()


def test_deleted_source_is_an_error_not_fill_values(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    p = _ingest_private(tmp_path, s3, s3_client)
    ledger = repository.read_ledger(open_repo(p), open_repo(p).lookup_branch("main"), "g")
    first = sorted(ledger)[0]
    s3.delete(first)
    with pytest.raises(SourceError, match="no longer exists") as info:
        read_back(p)
    assert info.value.url == first
    with pytest.raises(icechunk.IcechunkError, match=r"NoSuchKey|not exist"):
        _raw_read(p, icechunk.s3_from_env_credentials())


def test_wrong_credentials_on_seaweedfs(
    tmp_path: Path, seaweedfs: S3Server, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _ingest_private(tmp_path, seaweedfs, s3_client)
    stored = read_back(p)
    monkeypatch.setenv("READER_KEY", "reader")
    monkeypatch.setenv("READER_SECRET", "reader-secret")
    reader = {"access_key_id_env": "READER_KEY", "secret_access_key_env": "READER_SECRET"}
    with pytest.raises(ConfigError, match="access denied"):
        icepipe.open_dataset(
            p.target.repo, group="g", storage=p.target.storage, source_storage=reader
        )
    wrong = icechunk.s3_static_credentials(access_key_id="reader", secret_access_key="nope")
    with pytest.raises(icechunk.IcechunkError, match=r"SignatureDoesNotMatch|AccessDenied|403"):
        _raw_read(p, wrong)
    assert np.isfinite(stored["tas"].values).all()


# ----------------------------------------------------------------------------------------------
# Secrets: never in the pipeline, config, commit metadata, output, errors or task graphs
# ----------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icepipe.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_secrets_never_leak(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    paths = write_series(tmp_path / "src", 2)
    src, repo_bucket = s3.bucket("src"), s3.bucket("repo")
    s3.upload(paths, src, "s")
    doc = pipeline_doc(
        "secret",
        f"s3://{src}/s/*.nc",
        f"s3://{repo_bucket}/repo",
        source_storage=s3.options(),
        target_storage=s3.options(),
        extra={"mode": "native"},
    )
    spec = write_doc(tmp_path, doc)
    assert SECRET not in spec.read_bytes()
    scheduler = s3_client.scheduler.address
    ran = _cli("run", str(spec), "--json", "--scheduler", scheduler, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "committed"
    logged = _cli("log", str(spec), "--json", cwd=tmp_path)
    assert logged.returncode == 0, logged.stderr
    assert json.loads(logged.stdout)[0]["pipeline"] == "secret"
    for out in (ran, logged):
        assert S3_SECRET not in out.stdout + out.stderr
    # Commit metadata, repository config, manifests, chunks: every object in the bucket.
    objects = dict(s3.objects(repo_bucket))
    assert any(k.endswith(("config.yaml", "repo")) or "snapshots" in k for k in objects)
    assert not [k for k, body in objects.items() if SECRET in body]
    p = icepipe.load_pipeline(spec)
    for snap in open_repo(p).ancestry(branch="main"):
        assert S3_SECRET not in json.dumps(snap.metadata)
    assert S3_SECRET not in repr(p)
    # What travels to workers: specs, scan tasks, lazily opened remote files, repos, forks.
    listed = sources.list_sources(p.source.urls, is_glob=True, storage=p.source.storage)
    lazy = sources.open_lazy(
        [f.url for f in listed], ["netcdf4"] * len(listed), "time", storage=p.source.storage
    )
    repo = open_repo(p)
    fork = repo.writable_session("main").fork()
    for obj in (p, listed, lazy, repo, fork):
        assert SECRET not in cloudpickle.dumps(obj)
    scanned = sources.scan_file(
        listed[0], sources.ScanOptions(format="auto", concat_dim="time", storage=p.source.storage)
    )
    assert SECRET not in pickle.dumps(scanned)
    # Error messages: a run against a bucket that does not exist, and a missing variable.
    broken = write_doc(
        tmp_path,
        {**doc, "name": "broken", "target": {**doc["target"], "repo": "s3://no-such-bucket/r"}},
    )
    failed = _cli("run", str(broken), "--scheduler", scheduler, cwd=tmp_path)
    assert failed.returncode != 0 and S3_SECRET not in failed.stdout + failed.stderr
    env = {k: v for k, v in os.environ.items() if k != "ICEPIPE_TEST_SECRET"}
    missing = subprocess.run(
        [sys.executable, "-m", "icepipe.cli", "log", str(spec)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2, missing.stderr
    # The key is named, never its value (the variable's name could be a pasted secret).
    assert "secret_access_key_env" in missing.stderr and S3_SECRET not in missing.stderr
    assert "ICEPIPE_TEST_SECRET" not in missing.stderr


# ----------------------------------------------------------------------------------------------
# Concurrent runs on an S3 repository (two processes, no lock: conditional writes)
# ----------------------------------------------------------------------------------------------


def _run_together(specs: list[Path], scheduler: str, cwd: Path) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "icepipe.cli",
                "run",
                str(s),
                "--json",
                "--scheduler",
                scheduler,
            ],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in specs
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


def test_two_processes_run_the_same_pipeline_at_once(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    paths = write_series(tmp_path / "src", 4)
    src = s3.bucket("src")
    s3.upload(paths, src, "s")
    spec = write_doc(
        tmp_path,
        pipeline_doc(
            "same",
            f"s3://{src}/s/*.nc",
            f"s3://{s3.bucket('repo')}/repo",
            source_storage=s3.options(),
            target_storage=s3.options(),
        ),
    )
    results = _run_together([spec, spec], s3_client.scheduler.address, tmp_path)
    new = [f for r in results for f in r["files_new"]]
    assert sorted(new) == sorted(f"s3://{src}/s/{f.name}" for f in paths)  # each file once
    p = icepipe.load_pipeline(spec)
    xr.testing.assert_identical(read_back(p), local_sources(paths))
    repo = open_repo(p)
    records = repository.read_ingested(repo, repo.lookup_branch("main"), "g")
    assert len(records) == len({r["url"] for r in records}) == 4


def test_two_pipelines_into_two_groups_at_once(
    tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    a = write_series(tmp_path / "a", 3, prefix="a")
    b = write_series(tmp_path / "b", 2, prefix="b", seed=1)
    src, repo = s3.bucket("src"), f"s3://{s3.bucket('repo')}/shared"
    s3.upload(a, src, "a")
    s3.upload(b, src, "b")
    specs = [
        write_doc(
            tmp_path,
            pipeline_doc(
                name,
                f"s3://{src}/{name}/*.nc",
                repo,
                group=name,
                source_storage=s3.options(),
                target_storage=s3.options(),
            ),
        )
        for name in ("a", "b")
    ]
    results = _run_together(specs, s3_client.scheduler.address, tmp_path)
    assert [r["status"] for r in results] == ["committed", "committed"]
    for spec, files in zip(specs, (a, b), strict=True):
        xr.testing.assert_identical(read_back(icepipe.load_pipeline(spec)), local_sources(files))
    history = list(open_repo(icepipe.load_pipeline(specs[0])).ancestry(branch="main"))
    groups = [s.metadata["icepipe"]["group"] for s in history if "icepipe" in s.metadata]
    assert sorted(groups) == ["a", "b"]
    # Both pipelines' source folders are containers of the shared repository.
    config = open_repo(icepipe.load_pipeline(specs[0])).config
    prefixes = sorted(c.url_prefix for c in (config.virtual_chunk_containers or {}).values())
    assert prefixes == [f"s3://{src}/a/", f"s3://{src}/b/"]


def test_repository_settings_are_persisted(tmp_path: Path, s3: S3Server, s3_client: Any) -> None:
    paths = write_series(tmp_path / "src", 2)
    settings = {
        "inline_chunk_threshold_bytes": 0,
        "get_partial_values_concurrency": 4,
        "storage": {
            "retries": {"max_tries": 4},
            "concurrency": {"ideal_concurrent_request_size": 1 << 20},
        },
        "manifest": {"preload": False, "splitting": [{"arrays": "^tas$", "dims": {"time": 2}}]},
    }
    p = load(
        tmp_path,
        pipeline_doc(
            "cfg",
            "src/*.nc",
            f"s3://{s3.bucket('repo')}/repo",
            target_storage={**s3.options(), "config": settings},
            extra={"mode": "native", "chunks": {"time": 1}},
        ),
    )
    icepipe.run(p, client=s3_client)
    persisted = icechunk.Repository.fetch_config(
        repository.repo.storage_for(p.target.repo, p.target.storage)
    )
    assert persisted is not None
    assert persisted.inline_chunk_threshold_bytes == 0
    assert persisted.get_partial_values_concurrency == 4
    assert persisted.storage is not None and persisted.storage.retries.max_tries == 4
    assert persisted.manifest is not None and persisted.manifest.splitting is not None
    assert persisted.storage.unsafe_use_conditional_update is not False
    xr.testing.assert_identical(read_back(p), local_sources(paths))


def test_to_icechunk_into_an_s3_repo(s3: S3Server) -> None:
    ds = xr.Dataset(
        {"a": (("x",), np.arange(6.0))}, coords={"x": np.arange(6)}, attrs={"title": "t"}
    )
    location = f"s3://{s3.bucket('xr')}/repo"
    storage = {k: v for k, v in s3.options().items() if not k.endswith("_env")}  # AWS_* chain
    snapshot = icepipe.to_icechunk(ds, location, group="g", storage=storage)
    assert snapshot
    more = xr.Dataset(
        {"a": (("x",), np.arange(6.0, 9.0))}, coords={"x": np.arange(6, 9)}, attrs=ds.attrs
    )
    icepipe.to_icechunk(more, location, group="g", append_dim="x", storage=storage)
    stored = icepipe.open_dataset(location, group="g", storage=storage).load()
    xr.testing.assert_identical(stored, xr.concat([ds, more], dim="x"))


def test_aws_profile_is_the_default_credential_source(tmp_path: Path, seaweedfs: S3Server) -> None:
    """No credential keys in the pipeline and no AWS_* keys in the environment: a profile from
    a shared credentials file reaches the sources (obstore) and the repository (Icechunk)."""
    paths = write_series(tmp_path / "src", 2)
    src = seaweedfs.bucket("src")
    seaweedfs.upload(paths, src, "p")
    creds = tmp_path / "aws-credentials"
    creds.write_text(
        f"[icepipe]\naws_access_key_id = {S3_KEY_ID}\naws_secret_access_key = {S3_SECRET}\n"
    )
    plain = {k: v for k, v in seaweedfs.options().items() if not k.endswith("_env")}
    repo = f"s3://{seaweedfs.bucket('repo')}/repo"
    spec = write_doc(
        tmp_path,
        pipeline_doc(
            "profile", f"s3://{src}/p/*.nc", repo, source_storage=plain, target_storage=plain
        ),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_ACCESS_KEY", "AWS_SECRET", "ICEPIPE_TEST_"))
    }
    env.update(AWS_PROFILE="icepipe", AWS_SHARED_CREDENTIALS_FILE=str(creds))
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-config")
    done = subprocess.run(
        [sys.executable, "-m", "icepipe.cli", "run", str(spec), "--workers", "1", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "committed"
    assert S3_SECRET not in done.stdout + done.stderr
    xr.testing.assert_identical(read_back(icepipe.load_pipeline(spec)), local_sources(paths))


def test_grib_in_s3_ingests_virtually_and_equals_cfgrib(
    tmp_path: Path, s3: S3Server, s3_client: Any, sample_data: Path
) -> None:
    """Real GRIB1 (ERA5, one file per time) and GRIB2 (GFS, 17 hypercubes) in a bucket: the
    scan downloads each file once to index it; the references (and reads) go to the bucket."""
    import tempfile
    import warnings

    import cfgrib

    unsqueezed = {"indexpath": "", "squeeze": False}
    series = sorted((sample_data / "era5-series").glob("*.grib"))
    gfs = sample_data / "ncarg/grb/fh.0012_tl.press_gr.awp211.grb2"
    src = s3.bucket("grib")
    s3.upload(series, src, "era5")
    (gfs_url,) = s3.upload([gfs], src, "gfs")
    era5 = load(
        tmp_path,
        pipeline_doc(
            "era5-s3",
            f"s3://{src}/era5/*.grib",
            str(tmp_path / "repo"),
            source_storage=s3.options(),
            extra={"mode": "virtual"},
        ),
    )
    era5 = dataclasses.replace(era5, source=dataclasses.replace(era5.source, format="grib"))
    assert icepipe.run(era5, client=s3_client).status == "committed"
    stored = read_back(era5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = xr.concat(
            [xr.open_dataset(p, engine="cfgrib", backend_kwargs=unsqueezed) for p in series],
            dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
        )
    xr.testing.assert_equal(stored[["t", "z"]], ref[["t", "z"]])
    refs = open_repo(era5).readonly_session("main").all_virtual_chunk_locations()
    assert {r.rsplit("/", 1)[0] for r in refs} == {f"s3://{src}/era5"}
    assert icepipe.run(era5, client=s3_client).status == "nothing-new"

    cubes = load(
        tmp_path / "gfs",
        {
            "name": "gfs-s3",
            "source": {
                "urls": [gfs_url],
                "format": "grib",
                "concat_dim": "time",
                "grib_cubes": "all",
                "storage": s3.options(),
            },
            "target": {"repo": str(tmp_path / "gfs-repo"), "group": "gfs"},
        },
    )
    result = icepipe.run(cubes, client=s3_client)
    assert len(result.groups) == 17
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # cfgrib's surface cube only (identical to the one among all 17 cubes, which took 12
        # s), with an index file (without one cfgrib indexes the file again per variable).
        kwargs = {"indexpath": folder + "/{short_hash}.idx", "squeeze": False}
        kwargs["filter_by_keys"] = {"typeOfLevel": "surface"}
        (surface,) = cfgrib.open_datasets(str(gfs), backend_kwargs=kwargs)
        assert "surface" in surface.coords
        surface = surface.load()
    back = icepipe.open_dataset(
        cubes.target.repo, group="gfs/surface", source_storage=cubes.source.storage
    )
    np.testing.assert_array_equal(back.sp.values, surface.sp.values)

    # Native reads need files every worker can open: refused, naming the fix.
    native = dataclasses.replace(
        era5, mode="native", target=dataclasses.replace(era5.target, repo=str(tmp_path / "native"))
    )
    with pytest.raises(SourceError, match="virtually only"):
        icepipe.run(native, client=s3_client)


def test_a_native_open_of_an_object_store_netcdf4_file_opens_it_once(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunking the opened file names its Dask arrays without pickling them: xarray keeps a file
    object's handle in a PickleableFileManager, which reopens the file on every unpickle (Dask's
    tokenizer unpickled each variable's data three times: ~50 requests each, on NEMO 9 s of a
    19 s native run from S3)."""
    from xarray.backends import file_manager

    from icepipe.sources.formats import reader_for
    from icepipe.sources.formats.base import ScanOptions

    (path,) = write_series(tmp_path, 1, variables=("tas", "pr", "uas", "vas"))
    bucket = s3.bucket("once")
    s3.upload([path], bucket, "src")
    options = ScanOptions(format="netcdf4", storage=StorageOptions(**s3.options()))
    opens: list[Any] = []
    original = file_manager.PickleableFileManager.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        opens.append(args[1] if len(args) > 1 else None)
        original(self, *args, **kwargs)

    monkeypatch.setattr(file_manager.PickleableFileManager, "__init__", counted)
    ds = reader_for("netcdf4").open_native(
        f"s3://{bucket}/src/{path.name}", "netcdf4", options, {"time": 2}
    )
    try:
        assert len(opens) == 1, opens
        expected = xr.open_dataset(path, engine="h5netcdf", decode_times=False)
        xr.testing.assert_identical(ds.load(), expected.load())
    finally:
        ds.close()
