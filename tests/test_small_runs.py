"""Small runs scan in the run's own process instead of starting a cluster (issue 14, goal 4):
the same repository as a run on workers, the same errors naming the file, and a parser that
crashes the process sends its files to workers on the next run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

import icepipe
from icepipe import repository
from icepipe.errors import SourceError
from icepipe.execute import IN_PROCESS_MAX_ITEMS, CrashJournal
from icepipe.model import SourceFile
from tests.conftest import write_pipeline, write_series
from tests.ingest_checks import sources

REPO_ROOT = Path(__file__).resolve().parents[1]


def _ledger(repo: Path) -> list[tuple[str, int | None, int | None]]:
    r = repository.open_repo(str(repo))
    tip = r.lookup_branch("main")
    return [(Path(f.url).name, f.start, f.length) for f in repository.read_ingested(r, tip, "g")]


def test_small_run_scans_in_process_and_stores_what_workers_store(
    tmp_path: Path, client: Any
) -> None:
    files = write_series(tmp_path / "src", 3)
    here = write_pipeline(tmp_path, name="here", urls="src/*.nc", repo="repo-here")
    there = write_pipeline(tmp_path, name="there", urls="src/*.nc", repo="repo-there")
    result = icepipe.run(icepipe.load_pipeline(here))
    assert result.status == "committed"
    assert result.cluster == {"address": "in-process", "workers": 0, "embedded": True}
    on_workers = icepipe.run(icepipe.load_pipeline(there), client=client)
    assert on_workers.cluster["address"] != "in-process"

    stored = icepipe.open_dataset(str(tmp_path / "repo-here"), group="g").load()
    xr.testing.assert_identical(
        stored, icepipe.open_dataset(str(tmp_path / "repo-there"), group="g").load()
    )
    xr.testing.assert_identical(stored, sources(files))
    assert _ledger(tmp_path / "repo-here") == _ledger(tmp_path / "repo-there")

    # The next small run appends in process too; a run with nothing new scans nothing.
    more = write_series(tmp_path / "src2", 5)[3:]
    for i, f in enumerate(more):
        f.rename(tmp_path / "src" / f"f{3 + i:03d}.nc")
    again = icepipe.run(icepipe.load_pipeline(here))
    assert again.files_new == tuple(f"file://{tmp_path}/src/f{i:03d}.nc" for i in (3, 4))
    assert icepipe.run(icepipe.load_pipeline(here)).status == "nothing-new"
    xr.testing.assert_identical(
        icepipe.open_dataset(str(tmp_path / "repo-here"), group="g").load(),
        sources(sorted((tmp_path / "src").glob("*.nc"))),
    )


def test_runs_above_the_threshold_or_native_use_the_cluster(tmp_path: Path) -> None:
    from icepipe import pipeline as run_module

    src = write_series(tmp_path / "src", 2)
    spec = icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc"))
    files = [SourceFile(url=f"file://{p}", size=1, mtime="") for p in src]
    from icepipe.execute import ClusterChoice

    def run_state(pipeline: icepipe.Pipeline, choice: ClusterChoice) -> run_module._Run:
        return run_module._Run(
            pipeline=pipeline,
            timer=run_module._Timer(),
            run_id="x",
            workers=None,
            choice=choice,
            memory_limit=None,
            client=None,
            cluster_info=None,
        )

    state = run_state(spec, ClusterChoice("embedded"))
    journal = CrashJournal("test", folder=tmp_path / "journal")
    assert run_module._scans_in_process(state, files, journal)
    assert not run_module._scans_in_process(state, files * (IN_PROCESS_MAX_ITEMS + 1), journal)
    native = icepipe.load_pipeline(
        write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    )
    assert not run_module._scans_in_process(
        run_state(native, ClusterChoice("embedded")), files, journal
    )
    # A cluster named anywhere (address, factory) is used even for a few files.
    for choice in (ClusterChoice("scheduler", "tcp://h:1"), ClusterChoice("factory", "m:f")):
        assert not run_module._scans_in_process(run_state(spec, choice), files, journal)
    # No crash journal where it cannot be written: no scan in process either.
    (tmp_path / "not-a-folder").write_text("")
    unwritable = CrashJournal("test", folder=tmp_path / "not-a-folder")
    assert not unwritable.usable()
    assert not run_module._scans_in_process(state, files, unwritable)


def test_in_process_errors_name_the_file_and_create_nothing(tmp_path: Path) -> None:
    files = write_series(tmp_path / "src", 3)
    files[1].write_bytes(files[1].read_bytes()[:300])  # truncated
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    with pytest.raises(SourceError, match=r"f001\.nc.*truncated or corrupt") as info:
        icepipe.run(icepipe.load_pipeline(spec))
    assert list(info.value.urls) == [f"file://{files[1]}"]
    assert not (tmp_path / "repo").exists()

    skip = write_pipeline(tmp_path, name="skip", urls="src/*.nc", extra="on_error: skip\n")
    result = icepipe.run(icepipe.load_pipeline(skip))
    assert result.cluster["address"] == "in-process"
    assert list(result.files_skipped) == [f"file://{files[1]}"]
    assert len(result.files_new) == 2


def test_crash_journal_keeps_what_a_dead_process_was_working_on(tmp_path: Path) -> None:
    journal = CrashJournal("key", folder=tmp_path)
    with journal.working_on(["a", "b"]):
        assert journal.suspects() == {"a", "b"}
    assert journal.suspects() == set()
    with pytest.raises(RuntimeError), journal.working_on(["c"]):
        raise RuntimeError("a Python error is not a crash")
    assert journal.suspects() == set()
    code = (
        "import os, pathlib; from icepipe.execute import CrashJournal\n"
        f"j = CrashJournal('key', folder=pathlib.Path({str(tmp_path)!r}))\n"
        "with j.working_on(['d']):\n    os._exit(1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 1
    assert journal.suspects() == {"d"}
    assert CrashJournal("other key", folder=tmp_path).suspects() == set()


def test_a_parser_crashing_the_process_is_named_by_the_next_run(tmp_path: Path) -> None:
    # The hook stands for a parser that kills its process (a segfault in C on a bad file).
    write_series(tmp_path / "src", 1)
    (tmp_path / "crasher.py").write_text("import os\n\n\ndef pre(ds):\n    os._exit(1)\n")
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    text = spec.read_text().replace(
        "  concat_dim: time\n", "  concat_dim: time\n  preprocess: crasher:pre\n"
    )
    spec.write_text(text)
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),  # where the crash journal lives
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",  # one worker death is enough
    }
    cmd = [sys.executable, "-m", "icepipe.cli", "run", str(spec)]

    first = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1, first.stderr  # died in the scan: no error could be reported
    assert not (tmp_path / "repo").exists()  # nothing committed, nothing created

    # No --workers: the journal alone sends the file to workers this time.
    second = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 3, second.stderr
    assert "f000.nc: the worker reading it died" in second.stderr


def test_a_run_with_nothing_new_imports_neither_xarray_nor_dask(tmp_path: Path) -> None:
    """Listing, the ledger and the stored schema's ends are all a night without new files
    needs: the write stack (xarray, Dask, VirtualiZarr, pandas) stays unimported, which was
    most of such a run's start-up."""
    write_series(tmp_path / "src", 1)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    assert icepipe.run(icepipe.load_pipeline(spec)).status == "committed"
    script = (
        "import sys\n"
        "from icepipe.cli import main\n"
        "code = main(['run', sys.argv[1], '--json'])\n"
        "heavy = ('xarray', 'dask', 'distributed', 'pandas', 'virtualizarr', 'h5py')\n"
        "print('LOADED', code, *sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(spec)], capture_output=True, text=True, cwd=tmp_path
    )
    assert '"status": "nothing-new"' in done.stdout, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "LOADED 0", done.stdout.splitlines()[-1]


def _die_inside(folder: Path, key: str, items: list[str]) -> None:
    """A process killed (SIGKILL) while its journal entry for ``items`` is open."""
    code = (
        "import os, pathlib, signal; from icepipe.execute import CrashJournal\n"
        f"j = CrashJournal({key!r}, folder=pathlib.Path({str(folder)!r}))\n"
        f"with j.working_on({items!r}):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == -9


def test_crash_journal_expires_only_what_no_run_needs(tmp_path: Path) -> None:
    journal = CrashJournal("key", folder=tmp_path)
    _die_inside(tmp_path, "key", ["a", "b"])
    _die_inside(tmp_path, "other key", ["c"])
    _die_inside(tmp_path, "old key", ["d"])
    old = next((CrashJournal("old key", folder=tmp_path).folder).glob("*.json"))
    os.utime(old, (0, 0))
    with journal.working_on(["a"]):  # a live run's entry
        assert journal.expire({"a"}) == 1  # the old dead entry only; "b" is still a suspect
        assert journal.suspects() == {"a", "b"}
        assert journal.expire({"a", "b", "c"}) == 1  # "c" is another key's
        assert journal.suspects() == {"a"}  # the live entry stays
    assert journal.suspects() == set()
    assert CrashJournal("other key", folder=tmp_path).suspects() == {"c"}
    assert CrashJournal("other key", folder=tmp_path).expire(max_age=-1) == 1
    assert not list(tmp_path.glob("*/*.json"))


def test_a_run_killed_before_its_commit_is_recovered_and_its_entry_then_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    files = write_series(tmp_path / "src", 3)
    (tmp_path / "killer.py").write_text(
        "import os, signal\n\n\ndef pre(ds):\n"
        f"    if os.path.exists({str(tmp_path / 'armed')!r}):\n"
        f"        os.remove({str(tmp_path / 'armed')!r})\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return ds\n"
    )
    spec = write_pipeline(tmp_path, urls=[str(files[0])])
    assert icepipe.run(icepipe.load_pipeline(spec)).status == "committed"  # f000 ingested
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    spec.write_text(
        spec.read_text().replace(
            "  concat_dim: time\n", "  concat_dim: time\n  preprocess: killer:pre\n"
        )
    )
    (tmp_path / "armed").write_text("")
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the crash journal lives
    cmd = [sys.executable, "-m", "icepipe.cli", "run", str(spec)]
    killed = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr  # scanning in process: nothing committed
    from icepipe import pipeline as run_module

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    pipeline = icepipe.load_pipeline(spec)
    journal = run_module._journal(pipeline)
    urls = {f"file://{p}" for p in files[1:]}
    assert journal.suspects() == urls  # what the resumed run needs

    result = icepipe.run(pipeline, client=client)  # the resumed run
    assert result.status == "committed" and set(result.files_new) == urls
    assert journal.suspects() == set()  # its files ingested: the entry is gone
    assert not list(journal.folder.glob("*.json"))
