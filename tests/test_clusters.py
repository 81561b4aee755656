"""Where a run's Dask work goes: cluster factories (``--cluster``, ``$ICEPIPE_CLUSTER``, the
pipeline's ``cluster:``), Dask's own ``scheduler-address``, a cluster of separately started
``dask scheduler``/``dask worker`` processes, the embedded cluster's memory limit, and workers
killed by a file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

import icepipe
from icepipe.cli import main
from icepipe.errors import ConfigError
from icepipe.execute import ClusterChoice, choose_cluster
from tests import cluster_factories
from tests.conftest import REPO_ROOT, write_pipeline, write_series
from tests.ingest_checks import sources


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICEPIPE_CLUSTER", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def test_choice_order(monkeypatch: pytest.MonkeyPatch, no_cluster_env: None) -> None:
    assert choose_cluster() == ClusterChoice("embedded")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    assert choose_cluster().value == "tcp://127.0.0.1:1"
    assert choose_cluster(pipeline="p:f").value == "p:f"
    monkeypatch.setenv("ICEPIPE_CLUSTER", "env:f")
    assert choose_cluster(pipeline="p:f").value == "env:f"
    assert choose_cluster(cluster="cli:f", pipeline="p:f").value == "cli:f"
    assert choose_cluster(scheduler="tcp://h:2").kind == "scheduler"
    with pytest.raises(ConfigError, match="not both"):
        choose_cluster(scheduler="tcp://h:2", cluster="cli:f")


@pytest.fixture
def dask_processes() -> Iterator[str]:
    """A scheduler and one worker started as `dask scheduler` / `dask worker` processes on
    127.0.0.1 (the worker imports icepipe from this venv); killed afterwards."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
         "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout="5s") as c:
                    c.wait_for_workers(1, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        # Killed with their children (the worker's nanny starts the worker process): a
        # graceful SIGTERM shutdown took 8 s of the suite's time and checks nothing here.
        for proc in (worker, scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in (worker, scheduler):
            proc.wait()


def test_a_cluster_of_separate_dask_processes_via_dask_scheduler_address(
    tmp_path: Path,
    client: Any,
    dask_processes: str,
    monkeypatch: pytest.MonkeyPatch,
    no_cluster_env: None,
) -> None:
    files = write_series(tmp_path / "src", 3, fmt="netcdf3")
    on_processes = icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc"))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_processes)  # Dask's own setting
    result = icepipe.run(on_processes)
    assert result.status == "committed"
    assert result.cluster["address"] == dask_processes
    assert result.cluster["embedded"] is False
    assert result.cluster["workers"] == 1
    assert "dashboard" in result.cluster  # the scheduler process serves one
    report = json.loads(Path(str(result.report_file)).read_text())
    assert report["cluster"]["dashboard"] == result.cluster["dashboard"]

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    local = icepipe.load_pipeline(
        write_pipeline(tmp_path, name="local", urls="src/*.nc", repo="repo-local")
    )
    assert icepipe.run(local, client=client).status == "committed"
    on_cluster = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    on_local = icepipe.open_dataset(str(tmp_path / "repo-local"), group="g").load()
    xr.testing.assert_identical(on_cluster, on_local)
    xr.testing.assert_identical(on_cluster, sources(files))


def test_cli_cluster_factory_returning_a_cluster_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_cluster_env: None
) -> None:
    files = write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    cluster_factories.MADE.clear()
    code = main(["run", str(spec), "--cluster", "tests.cluster_factories:local", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["cluster"]["workers"] == 1 and out["cluster"]["embedded"] is False
    (made,) = cluster_factories.MADE
    assert out["cluster"]["address"] == made.scheduler_address
    assert made.status.name == "closed"  # icepipe closes what the factory made
    report = json.loads(Path(out["report_file"]).read_text())
    assert report["cluster"]["address"] == made.scheduler_address
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(files))


def test_pipeline_cluster_key_and_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cluster_env: None
) -> None:
    write_series(tmp_path / "src", 2)
    (tmp_path / "my_clusters.py").write_text(
        "from tests.cluster_factories import threads\n\ndef make():\n    return threads()\n"
    )
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="cluster: my_clusters:make\n")
    pipeline = icepipe.load_pipeline(spec)
    assert pipeline.cluster == "my_clusters:make"
    cluster_factories.MADE.clear()
    result = icepipe.run(pipeline)  # two files: still on the named cluster, not in process
    assert result.cluster["address"].startswith("inproc://")
    assert len(cluster_factories.MADE) == 1
    assert cluster_factories.MADE[0].status == "closed"

    # The environment variable wins over the pipeline's key (a fresh repository: new files).
    fresh = icepipe.load_pipeline(
        write_pipeline(tmp_path, urls="src/*.nc", repo="fresh", extra="cluster: my_clusters:make\n")
    )
    monkeypatch.setenv("ICEPIPE_CLUSTER", "tests.cluster_factories:not_a_cluster")
    with pytest.raises(ConfigError, match=r"returned int; expected a distributed\.Client"):
        icepipe.run(fresh, report=False)
    monkeypatch.setenv("ICEPIPE_CLUSTER", "tests.cluster_factories:broken")
    with pytest.raises(ConfigError, match="no SLURM here"):
        icepipe.run(fresh, report=False)
    with pytest.raises(ConfigError, match="'module:factory'"):
        icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc", extra="cluster: nope\n"))


def test_embedded_memory_limit(tmp_path: Path, no_cluster_env: None) -> None:
    write_series(tmp_path / "src", 1)
    pipeline = icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc"))
    seen: list[int] = []

    class Limits:
        def stage_started(self, stage: str, client: Any) -> None:
            if client is not None and not seen:
                workers = client.scheduler_info()["workers"].values()
                seen.extend(w["memory_limit"] for w in workers)

        def stage_finished(self, stage: str, seconds: float) -> None:
            pass

    icepipe.run(pipeline, workers=1, memory_limit="700MiB", observer=Limits(), report=False)
    assert seen == [700 * 2**20]
    with pytest.raises(ConfigError, match="--memory-limit"):
        icepipe.run(pipeline, workers=1, memory_limit="lots", report=False)


@pytest.mark.timeout(300)
def test_a_file_killing_its_worker_on_a_one_worker_cluster(
    tmp_path: Path, no_cluster_env: None
) -> None:
    """One worker, a parser (here a hook) that kills the worker on one file: the good files
    are committed, the bad one is named. Dask blames every task the dying worker held, so
    good files were skipped with it; a result lost with the worker was reported as "task
    failed unexpectedly: NoneType: None" (exit 5); and LocalCluster closed the nanny of a
    worker that kept dying, leaving the run waiting forever."""
    import dask.config

    files = write_series(tmp_path / "src", 4)
    (tmp_path / "killer.py").write_text(
        "import os\n\n\ndef pre(ds):\n"
        "    if ds.encoding.get('source', '').endswith('f001.nc'):\n"
        "        os._exit(1)\n"
        "    return ds\n"
    )
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="on_error: skip\n")
    spec.write_text(
        spec.read_text().replace(
            "  concat_dim: time\n", "  concat_dim: time\n  preprocess: killer:pre\n"
        )
    )
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        result = icepipe.run(icepipe.load_pipeline(spec), workers=1, report=False)
    bad = f"file://{files[1]}"
    assert result.status == "committed"
    assert list(result.files_skipped) == [bad]
    assert "the worker reading it died" in result.files_skipped[bad]
    assert sorted(result.files_new) == [f"file://{f}" for f in (files[0], files[2], files[3])]


def test_cli_cluster_arguments_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_cluster_env: None
) -> None:
    write_series(tmp_path / "src", 1)
    spec = str(write_pipeline(tmp_path, urls="src/*.nc"))
    both = ["run", spec, "--scheduler", "tcp://127.0.0.1:1", "--cluster", "m:f"]
    assert main(both) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", spec, "--memory-limit", "lots"]) == 2
    assert "--memory-limit" in capsys.readouterr().err
    assert main(["run", spec, "--cluster", "no_such_module:make"]) == 2
    assert "cannot import module 'no_such_module' of the cluster factory" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()
