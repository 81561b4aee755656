"""Crash safety: ``icepipe run`` killed with SIGKILL at random points and at chosen phases.

After every kill the branch tip must be the previous tip or one new commit holding exactly the
files that were pending, and the data at the tip must match its ledger (see
:func:`tests.ingest_checks.check_tip`). The runs are real ``python -m icepipe.cli run``
processes connected to one long-lived ``LocalCluster`` (``--scheduler``), so a run starts in
about a second and only the process that commits is killed; the source folder grows between
kills, so kills hit appends as well as first ingests.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr

import icepipe
from icepipe import repository
from tests.conftest import REPO_ROOT, branch_tip, write_pipeline, write_series
from tests.ingest_checks import ancestry, check_tip, sources, url

GROUP = "g"
NATIVE = "mode: native\nchunks: {time: 4}\n"


@dataclass(frozen=True)
class Mode:
    extra: str  # pipeline YAML lines
    steps: int  # time steps per file
    kills: int  # random kill points


MODES = {
    # 4-step files referenced chunk by chunk (time chunks of 1).
    "virtual": Mode(extra="", steps=4, kills=6),
    # 3-step files into 4-step chunks: every other append rewrites a partial chunk.
    "native": Mode(extra=NATIVE, steps=3, kills=5),
}
# The kills at chosen phases (below) hit each step of a commit deterministically; the random
# kill points add runs killed at any other moment (seeded: the same points every run);
# ICEPIPE_CRASH_KILLS=N draws N per mode (was 12 and 10 before CI time was cut).
if os.environ.get("ICEPIPE_CRASH_KILLS"):
    MODES = {
        k: Mode(m.extra, m.steps, int(os.environ["ICEPIPE_CRASH_KILLS"])) for k, m in MODES.items()
    }


def _warm_up() -> None:
    import icepipe.pipeline
    import icepipe.repository.native  # noqa: F401


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One worker for every run of this module: killing a client leaves the cluster alone."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=50,
    ) as cluster:
        # Import on the worker now, so that the measured run times are those of a warm worker.
        with Client(cluster) as c:
            c.run(_warm_up)
        yield cluster.scheduler_address


def _cmd(spec: Path, scheduler: str) -> list[str]:
    return [sys.executable, "-m", "icepipe.cli", "run", str(spec), "--scheduler", scheduler]


def _run(spec: Path, scheduler: str) -> float:
    """Run the pipeline to completion in a new process; return its wall time."""
    t0 = time.monotonic()
    done = subprocess.run(
        _cmd(spec, scheduler),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return time.monotonic() - t0


def _arrive(files: list[Path], folder: Path) -> list[Path]:
    """Move ``files`` into the watched ``folder`` (a rename keeps size and mtime)."""
    moved = []
    for f in files:
        moved.append(folder / f.name)
        f.rename(moved[-1])
    return moved


def _ledger_urls(repo: Path, snapshot: str | None) -> set[str]:
    if snapshot is None:
        return set()
    records = repository.read_ingested(repository.open_repo(str(repo)), snapshot, GROUP)
    return {r["url"] for r in records}


def _check_outcome(repo: Path, before: str | None, pending: set[str], log: str) -> str:
    """Assert the tip after a (possibly) killed run; return ``unchanged`` or ``committed``."""
    after = branch_tip(repo)
    if after == before:
        if after is not None:
            check_tip(repo, GROUP, after)
        return "unchanged"
    assert after is not None, f"the branch disappeared (was {before})\n{log}"
    history = ancestry(repo, after)
    record = history[0].metadata.get("icepipe")
    if record is None:
        # The killed run created the repository, then died before committing: only the root.
        assert before is None and len(history) == 1, f"unexpected tip {after}\n{log}"
        return "unchanged"
    parent = before if before is not None else history[-1].id
    assert len(history) >= 2 and history[1].id == parent, (
        f"the new tip {after} does not follow the previous tip {before}: "
        f"{[s.id for s in history]}\n{log}"
    )
    urls = {f.url for f in repository.CommitRecord.from_metadata(record).files or ()}
    assert urls == pending, (
        f"the new commit holds {sorted(urls)}, but {sorted(pending)} were pending\n{log}"
    )
    check_tip(repo, GROUP, after)
    return "committed"


def _check_final(tmp: Path, repo: Path, files: list[Path], scheduler: str, extra: str) -> None:
    """The repository equals one uninterrupted run over ``files``, each file once."""
    from distributed import Client

    stored = icepipe.open_dataset(str(repo), group=GROUP).load()
    xr.testing.assert_identical(stored, sources(files))
    tip = branch_tip(repo)
    assert tip is not None
    records = check_tip(repo, GROUP, tip)
    assert sorted(r["url"] for r in records) == sorted(url(f) for f in files)
    # And the same as a real single run (attributes, encoding and all).
    single = write_pipeline(
        tmp, name="single", urls=[str(f) for f in files], repo="single", extra=extra
    )
    with Client(scheduler) as c:
        assert icepipe.run(icepipe.load_pipeline(single), client=c).status == "committed"
    xr.testing.assert_identical(
        stored, icepipe.open_dataset(str(tmp / "single"), group=GROUP).load()
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_killed_runs_leave_the_previous_or_a_new_complete_commit(
    tmp_path: Path, scheduler: str, mode: str
) -> None:
    cfg = MODES[mode]
    rng = random.Random(f"icepipe-crash-{mode}")
    # 3 files for the first ingest, at most one more per kill point, 2 for the final run.
    pool = write_series(tmp_path / "pool", 3 + cfg.kills + 2, steps=cfg.steps)

    # An uninterrupted first ingest and append, on copies, set the range of kill times.
    measure = tmp_path / "measure"
    (measure / "src").mkdir(parents=True)
    for f in pool[:3]:
        shutil.copy2(f, measure / "src")
    m_spec = write_pipeline(measure, urls="src/*.nc", extra=cfg.extra)
    duration = _run(m_spec, scheduler)
    shutil.copy2(pool[3], measure / "src")
    duration = max(duration, _run(m_spec, scheduler))

    work = tmp_path / "work"
    src = work / "src"
    src.mkdir(parents=True)
    spec = write_pipeline(work, urls="src/*.nc", extra=cfg.extra)
    repo = work / "repo"
    arrived = _arrive(pool[:3], src)
    waiting = pool[3:]
    counts: Counter[str] = Counter()
    trace = []
    for k in range(cfg.kills):
        before = branch_tip(repo)
        pending = {url(f) for f in arrived} - _ledger_urls(repo, before)
        if k and waiting and (not pending or rng.random() < 0.6):
            arrived += _arrive([waiting.pop(0)], src)
            pending = {url(f) for f in arrived} - _ledger_urls(repo, before)
        kind = "first ingest" if not _ledger_urls(repo, before) else "append"
        t_kill = rng.uniform(0, 1.2 * duration)
        log_path = work / f"run{k}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                _cmd(spec, scheduler),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=t_kill)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        log_text = log_path.read_text()
        killed = rc == -signal.SIGKILL
        assert killed or rc == 0, f"run {k} failed on its own (exit {rc}):\n{log_text}"
        outcome = _check_outcome(repo, before, pending, log_text)
        if killed:
            counts[f"killed {'after' if outcome == 'committed' else 'before'} commit"] += 1
        else:
            counts["finished before its kill time"] += 1
        trace.append(f"{kind} {t_kill:.1f}s {'killed' if killed else 'finished'} {outcome}")

    arrived += _arrive(waiting, src)
    _run(spec, scheduler)
    _check_final(work, repo, arrived, scheduler, cfg.extra)
    commits = [s for s in ancestry(repo, branch_tip(repo) or "") if "icepipe" in s.metadata]
    print(
        f"\ncrash safety [{mode}]: uninterrupted run {duration:.1f}s; {cfg.kills} kill points "
        f"drawn in [0, {1.2 * duration:.1f}]s: "
        + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        + f"; {len(commits)} commits hold all {len(arrived)} files once; identical to one run"
        + "".join(f"\n  {i:2d}. {line}" for i, line in enumerate(trace))
    )


# ----------------------------------------------------------------------------------------------
# Kills at chosen phases: strace stops the run at one exact system call
# ----------------------------------------------------------------------------------------------


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True, check=False)
    return probe.returncode == 0  # ptrace may be forbidden in containers


def _phases(repo: Path, out: Path) -> dict[str, list[str]]:
    """strace options that SIGKILL the run at one phase of its commit."""
    return {
        # Icechunk writes the root snapshot, then links the ``repo`` file that makes the
        # repository exist: the first ``linkat`` of a first run.
        "while creating the repository": ["-e", "trace=linkat", "-e", "inject=linkat:signal=KILL"],
        # A commit writes its snapshot, then renames a temporary ``repo#N`` onto ``repo`` (the
        # branch ref); a killed commit leaves its ``repo#N`` behind, so the next one takes N+1.
        "at the commit point": [
            *(a for n in range(1, 10) for a in ("-P", f"{repo}/repo#{n}")),
            "-e",
            "trace=rename",
            "-e",
            "inject=rename:signal=KILL",
        ],
        # The CLI prints its summary once the commit returned.
        "after the commit, before reporting": [
            "-P",
            str(out),
            "-e",
            "trace=write",
            "-e",
            "inject=write:signal=KILL",
        ],
    }


@pytest.mark.slow
@pytest.mark.skipif(not _strace_works(), reason="needs a working strace (ptrace allowed)")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_kills_at_each_commit_phase_leave_a_usable_repository(
    tmp_path: Path, scheduler: str, mode: str
) -> None:
    cfg = MODES[mode]
    pool = write_series(tmp_path / "pool", 6, steps=cfg.steps)
    src = tmp_path / "src"
    src.mkdir()
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=cfg.extra)
    repo = tmp_path / "repo"
    out = tmp_path / "out.txt"
    phases = _phases(repo, out)
    plan = [
        (pool[:3], "while creating the repository"),
        ([], "at the commit point"),  # of the first ingest
        ([], "after the commit, before reporting"),
        (pool[3:4], "at the commit point"),  # of an append
        ([], "after the commit, before reporting"),
    ]
    arrived: list[Path] = []
    seen = []
    for new, phase in plan:
        arrived += _arrive(new, src)
        before = branch_tip(repo)
        pending = {url(f) for f in arrived} - _ledger_urls(repo, before)
        with open(out, "w") as fh:
            done = subprocess.run(
                ["strace", "-f", "-qq", "-o", os.devnull, *phases[phase], *_cmd(spec, scheduler)],
                cwd=REPO_ROOT,
                stdout=fh,
                stderr=subprocess.PIPE,
                text=True,
                timeout=300,
                check=False,
                start_new_session=True,
            )
        log = out.read_text() + done.stderr
        assert done.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (
            f"the run was not killed {phase} (exit {done.returncode}):\n{log}"
        )
        outcome = _check_outcome(repo, before, pending, log)
        expected = "committed" if phase.startswith("after") else "unchanged"
        assert outcome == expected, f"killed {phase}: the branch is {outcome}\n{log}"
        seen.append(f"{phase}: {outcome}")
    arrived += _arrive(pool[4:], src)
    _run(spec, scheduler)
    _check_final(tmp_path, repo, arrived, scheduler, cfg.extra)
    print(f"\nphase kills [{mode}]: " + "; ".join(seen) + "; then a clean run: identical")
