"""`icepipe gc`: orphans of runs that never committed are found (dry run) and deleted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import xarray as xr

import icepipe
from icepipe import repository
from icepipe.cli import main, parse_duration
from tests.conftest import write_pipeline, write_series


def test_gc_finds_and_deletes_orphans_of_an_uncommitted_run(
    tmp_path: Path, client: Any, capsys: Any
) -> None:
    # Chunks above Icechunk's inline threshold, so they are objects of their own.
    files = write_series(tmp_path / "src", 2, steps=4, ny=40, nx=50)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\nchunks: {time: 2}\n")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    repo_path = str(tmp_path / "repo")

    # A run that writes chunks and dies before committing: its chunks are orphans.
    repo = repository.open_repo(repo_path)
    session = repo.writable_session("main")
    extra = xr.open_dataset(files[0]).load()
    extra["tas"] = extra["tas"] + 1000
    icepipe.to_icechunk(extra, session, group="orphan", mode="w")
    del session
    time.sleep(1.1)

    assert main(["gc", repo_path, "--older-than", "0s"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and "dry run" in out
    dry = repository.collect_garbage(repository.open_repo(repo_path), parse_duration("0s"))
    assert dry.dry_run and dry.chunks > 0

    # The grace period protects recent objects (e.g. of a run still in progress).
    assert (
        repository.collect_garbage(repository.open_repo(repo_path), parse_duration("1d")).chunks
        == 0
    )

    assert main(["gc", repo_path, "--older-than", "0s", "--delete"]) == 0
    assert "deleted" in capsys.readouterr().out
    after = repository.collect_garbage(repository.open_repo(repo_path), parse_duration("0s"))
    assert after.chunks == 0
    # Committed data and the ledger are untouched.
    stored = icepipe.open_dataset(repo_path, group="g").load()
    assert stored.sizes["time"] == 8
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "nothing-new"


def test_gc_rejects_bad_durations(tmp_path: Path, capsys: Any) -> None:
    assert main(["gc", str(tmp_path), "--older-than", "soon"]) == 2
    assert "--older-than" in capsys.readouterr().err
