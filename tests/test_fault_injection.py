"""Fault injection for local repositories and the command line (issue 11): read-only and full
file systems, lost permissions, a lock file deleted under a run, signals, clumsy commands.

Every fault is real: a tmpfs mounted read-only or too small (the tests run as root in CI's
container; they skip, saying why, where mounting is not allowed), a process without the
capability that lets root ignore file permissions (``setpriv --bounding-set``), real signals
to a real ``icepipe run`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import icechunk
import pytest

import icepipe
from icepipe import repository
from icepipe.cli import main
from icepipe.errors import ConfigError, SourceError, StorageError
from tests.conftest import write_pipeline, write_series

ICEPIPE = [sys.executable, "-m", "icepipe.cli"]
#: Root without the capabilities that let it ignore file permissions: a "lost permissions"
#: user who can still run this Python (whose installation may sit under /root). Any other
#: user is subject to permissions already.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def _cli(
    *args: str, cwd: Path, prefix: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *ICEPIPE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def _reports(state: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(state.glob("runs/*/*.json"))]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``tmpfs(size)`` mounts a tmpfs of ``size`` under ``tmp_path``; unmounted at the end.
    ``remount_ro(path)`` makes it read-only."""
    mounts: list[Path] = []

    def mount(size: str = "4M") -> Path:
        where = tmp_path / f"mnt{len(mounts)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr}")
        mounts.append(where)
        return where

    yield mount
    for where in reversed(mounts):
        subprocess.run(["umount", "-l", str(where)], check=False)


def _remount_ro(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def _no_dac_works(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    if NO_DAC and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    done = subprocess.run(
        [*NO_DAC, "touch", str(probe / "x")], capture_output=True, text=True, check=False
    )
    if done.returncode == 0 or (NO_DAC and "setpriv" in done.stderr):
        pytest.skip(f"cannot make permissions apply to this process: {done.stderr.strip()}")


# ----------------------------------------------------------------------------------------------
# Read-only, full and permission-less file systems
# ----------------------------------------------------------------------------------------------


def test_read_only_repository_is_a_config_error(tmp_path: Path, tmpfs: Any, client: Any) -> None:
    write_series(tmp_path / "src", 3)
    mnt = tmpfs("8M")
    spec = write_pipeline(tmp_path, urls="src/f00[01].nc", repo=str(mnt / "repo"))
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    tip = icechunk.Repository.open(icechunk.local_filesystem_storage(str(mnt / "repo")))
    before = tip.lookup_branch("main")
    _remount_ro(mnt)
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo=str(mnt / "repo"))
    ran = _cli("run", str(spec), "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr  # was 5: "transient, retry" forever
    assert "read-only file system" in ran.stderr and "Traceback" not in ran.stderr
    assert "target.repo" in ran.stderr
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(mnt / "repo")))
    assert repo.lookup_branch("main") == before
    # Reading still works on a read-only repository.
    assert main(["log", str(mnt / "repo")]) == 0


def test_repository_in_a_folder_without_write_permission(tmp_path: Path, client: Any) -> None:
    """The lock file cannot be created (PermissionError): was a traceback, exit 1."""
    _no_dac_works(tmp_path)
    write_series(tmp_path / "src", 2)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo="locked/repo")
    ran = _cli(
        "run",
        str(spec),
        "--scheduler",
        client.scheduler.address,
        "--state-dir",
        str(tmp_path / "state"),
        cwd=tmp_path,
        prefix=NO_DAC,
    )
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "permission denied" in ran.stderr and "target.repo" in ran.stderr
    assert list(locked.iterdir()) == []
    (report,) = _reports(tmp_path / "state")
    assert report["status"] == "failed" and report["exit_code"] == 2


def test_lost_read_permission_on_an_existing_repository(tmp_path: Path, client: Any) -> None:
    _no_dac_works(tmp_path)
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    os.chmod(tmp_path / "repo", 0o000)
    try:
        logged = _cli("log", str(tmp_path / "repo"), cwd=tmp_path, prefix=NO_DAC)
    finally:
        os.chmod(tmp_path / "repo", 0o755)
    assert logged.returncode == 2, logged.stderr
    assert "permission denied" in logged.stderr and "Traceback" not in logged.stderr


def test_full_disk_is_transient_and_commits_nothing(
    tmp_path: Path, tmpfs: Any, client: Any
) -> None:
    write_series(tmp_path / "src", 3, ny=200, nx=200, steps=6)  # ~3 MB of random floats
    mnt = tmpfs("1M")
    spec = write_pipeline(tmp_path, urls="src/*.nc", repo=str(mnt / "repo"), extra="mode: native\n")
    with pytest.raises(StorageError, match="no space left") as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert info.value.exit_code == 5
    assert "context:" not in str(info.value)
    # A failing first run leaves no repository behind, even on a full disk.
    assert not (mnt / "repo").exists()


def test_report_path_is_not_printed_when_the_report_cannot_be_written(
    tmp_path: Path, client: Any
) -> None:
    write_series(tmp_path / "src", 1)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    (tmp_path / "afile").write_text("not a folder")
    state = str(tmp_path / "afile" / "state")
    ran = _cli(
        "run",
        str(spec),
        "--scheduler",
        client.scheduler.address,
        "--state-dir",
        state,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "cannot write the run report" in ran.stderr
    assert "report     not written" in ran.stdout and state not in ran.stdout
    again = _cli(
        "run",
        str(spec),
        "--scheduler",
        client.scheduler.address,
        "--state-dir",
        state,
        "--json",
        cwd=tmp_path,
    )
    assert json.loads(again.stdout)["report_file"] is None


# ----------------------------------------------------------------------------------------------
# Locks
# ----------------------------------------------------------------------------------------------


def test_deleting_the_lock_file_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    lock_file = tmp_path / ".repo.icepipe.lock"
    inside: list[str] = []
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with repository.commit_lock(location):
            inside.append("first in")
            held.set()
            release.wait(10)
            inside.append("first out")

    def second() -> None:
        with repository.commit_lock(location):
            inside.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(10)
    lock_file.unlink()  # e.g. `rm repos/.*.icepipe.lock` while a run commits
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.5)
    assert inside == ["first in"], "the second holder got in while the first held the lock"
    release.set()
    a.join(10)
    b.join(10)
    assert inside == ["first in", "first out", "second in"]


def test_a_lock_file_unlinked_while_waiting_is_taken_again(tmp_path: Path) -> None:
    """The classic race: a waiter blocked on a lock file that is unlinked meanwhile (repo
    delete removes it) got that orphaned file, while a newcomer would lock a new file at the
    path: the waiter must lock the file at the path."""
    location = str(tmp_path / "repo")
    lock_file = tmp_path / ".repo.icepipe.lock"
    seen: list[bool] = []

    def waiter() -> None:
        with repository.commit_lock(location):
            seen.append(lock_file.exists())

    with repository.commit_lock(location):
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        lock_file.unlink()
    t.join(10)
    assert seen == [True]


# ----------------------------------------------------------------------------------------------
# Signals: SIGTERM like Ctrl-C; no worker tracebacks
# ----------------------------------------------------------------------------------------------

_SLOW_HOOK = """\
import os, time
from pathlib import Path

def pre(ds):
    Path(os.environ["ICEPIPE_TEST_MARKER"]).touch()
    time.sleep(120)
    return ds
"""


def _write_hooked(tmp_path: Path, name: str, hook: str, *, mode: str = "virtual") -> Path:
    write_series(tmp_path / "src", 2)
    (tmp_path / f"{name}hook.py").write_text(hook)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nmode: {mode}\nsource:\n  urls: src/*.nc\n  concat_dim: time\n"
        f"  preprocess: {name}hook:pre\ntarget:\n  repo: repo\n"
    )
    return spec


def _slow_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    spec = _write_hooked(tmp_path, "slow", _SLOW_HOOK)
    marker = tmp_path / "scanning"
    proc = subprocess.Popen(
        [*ICEPIPE, "run", str(spec), "--progress", "none", "--workers", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ICEPIPE_TEST_MARKER": str(marker)},
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # A shell's background job (`make test &`) ignores SIGINT, and children inherit that.
        preexec_fn=_default_sigint,
    )
    return proc, marker


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(check: Any, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"icepipe exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    proc, marker = _slow_run(tmp_path)
    _wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGTERM)  # what Kubernetes, systemd and schedulers send
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # was 143, silently, with no report
    assert "interrupted (SIGTERM); nothing was committed" in err
    assert "Traceback" not in err
    (report,) = _reports(tmp_path / ".icepipe")
    assert report["status"] == "interrupted" and report["exit_code"] == 130
    assert not (tmp_path / "repo").exists()


def _workers_of(pid: int) -> list[int]:
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for c in children:
        try:
            if "spawn_main" in " ".join(c.cmdline()):
                out.append(c.pid)
        except psutil.Error:
            continue
    return out


def test_ctrl_c_while_workers_start_prints_no_worker_traceback(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group: worker processes (here: still
    starting) printed KeyboardInterrupt tracebacks before icepipe's message."""
    proc, _ = _slow_run(tmp_path)
    _wait_for(lambda: bool(_workers_of(proc.pid)), proc)
    # A worker is importing its modules (it ignores Ctrl-C from its first tenths of a second
    # on: a Ctrl-C before that still makes it print a traceback).
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "icepipe: interrupted; nothing was committed"


def test_ctrl_c_while_scanning_prints_only_icepipes_message(tmp_path: Path) -> None:
    proc, marker = _slow_run(tmp_path)
    _wait_for(marker.exists, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "icepipe: interrupted; nothing was committed", err


# ----------------------------------------------------------------------------------------------
# Clumsy commands
# ----------------------------------------------------------------------------------------------


def test_info_and_diff_of_an_empty_repository(tmp_path: Path, capsys: Any) -> None:
    repository.open_repo(str(tmp_path / "empty"), create=True)
    assert main(["info", str(tmp_path / "empty")]) == 0  # was a GroupNotFoundError traceback
    assert "empty: nothing has been written" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "empty"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] == []
    assert main(["diff", str(tmp_path / "empty"), "main", "main"]) == 0  # was exit 5
    assert "no changes" in capsys.readouterr().out


def test_diff_of_a_ref_against_itself(tmp_path: Path, client: Any, capsys: Any) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    repo = str(tmp_path / "repo")
    assert main(["diff", repo, "main", "main"]) == 0
    assert "no changes" in capsys.readouterr().out
    assert main(["diff", repo, "main", str(result.snapshot_id), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["commits"] == [] and doc["updated_chunks"] == {}


def test_repository_path_that_is_a_file(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "repo").write_text("a regular file")
    with pytest.raises(ConfigError, match="a file is where a folder should be") as info:
        repository.open_repo(str(tmp_path / "repo"), create=True)
    assert "context:" not in str(info.value)
    assert main(["log", str(tmp_path / "repo")]) == 2  # was 5
    assert (tmp_path / "repo").read_text() == "a regular file"


def test_empty_read_only_folder_is_not_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    folder.mkdir(mode=0o555)
    inode = folder.stat().st_ino
    with pytest.raises(ConfigError, match="read-only"):
        repository.open_repo(str(folder), create=True)
    assert folder.stat().st_ino == inode and folder.stat().st_mode & 0o777 == 0o555
    assert list(folder.iterdir()) == []


def test_failed_first_run_leaves_no_repository(tmp_path: Path, client: Any) -> None:
    """The write fails after the repository was created (a preprocess hook failing on the
    data, in a native ingest): no repository may be left (README: "creates no repository on
    a first run")."""
    spec = _write_hooked(
        tmp_path,
        "fail",
        "def pre(ds):\n"
        "    if any(getattr(v.data, 'dask', None) is not None for v in ds.data_vars.values()):\n"
        "        raise RuntimeError('cannot read the data')\n"
        "    return ds\n",
        mode="native",
    )
    with pytest.raises(SourceError, match="cannot read the data"):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert not (tmp_path / "repo").exists()


def test_repo_delete_keeps_user_files(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("ICEPIPE_CATALOG", str(tmp_path / "catalog.yaml"))
    assert main(["repo", "create", "acme/r", str(tmp_path / "r")]) == 0
    notes = tmp_path / "r" / "NOTES.txt"
    notes.write_text("my notes")
    capsys.readouterr()
    assert main(["repo", "delete", "acme/r", "--yes-delete-all-data", "acme/r"]) == 2
    err = capsys.readouterr().err
    assert "NOTES.txt" in err and "nothing deleted" in err
    assert notes.read_text() == "my notes"
    assert (tmp_path / "r" / "repo").exists()
    assert main(["log", "catalog:acme/r"]) == 0
    notes.unlink()
    assert main(["repo", "delete", "acme/r", "--yes-delete-all-data", "acme/r"]) == 0
    assert not (tmp_path / "r").exists()
