"""Fault injection on source files between listing, scanning and committing.

A file deleted, truncated, replaced or made unreadable while a run works must never be
recorded as ingested: the run fails naming the file, the branch does not move (no repository
after a first run), and once the file is whole again the next run ingests everything.

Faults are injected through icepipe's own extension points, not by patching it: a
:class:`icepipe.pipeline.RunObserver` on the coordinator (told when each stage starts: before
``scan`` is between listing and scanning, before ``commit`` is after the data was written) and a
``source.preprocess`` hook that runs inside the scan on a Dask worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
import yaml

import icepipe
from icepipe.errors import SourceError
from tests.conftest import branch_tip, write_series
from tests.ingest_checks import ancestry, check_tip, sources

FAULTS = ("delete", "truncate", "replace", "unreadable")


def inject(path: Path, fault: str) -> None:
    """Damage ``path`` as a producer, a clean-up job or a full disk would."""
    if fault == "delete":
        path.unlink()
    elif fault == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif fault == "replace":
        # Another delivery of the same times with other values (the victim is always the
        # second file of a 2-step series): only its identity tells.
        other = write_series(path.parent / "other", 2, steps=2, seed=7, prefix=path.stem)[1]
        os.replace(other, path)
    elif fault == "unreadable":
        path.unlink()
        os.symlink(path.name, path)  # a link to itself: unreadable, even for root
    else:
        raise ValueError(fault)


class FaultAt:
    """A run observer that injects ``fault`` into ``path`` when ``stage`` starts."""

    def __init__(self, stage: str, path: Path, fault: str) -> None:
        self.stage, self.path, self.fault = stage, path, fault
        self.done = False

    def stage_started(self, stage: str, client: Any) -> None:
        if stage == self.stage and not self.done:
            self.done = True
            inject(self.path, self.fault)

    def stage_finished(self, stage: str, seconds: float) -> None:
        pass


def fresh(tmp_path: Path, *, extra: str = "") -> tuple[Path, list[Path], list[bytes]]:
    files = write_series(tmp_path / "src", 3, steps=2)
    spec = tmp_path / "p.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "faults",
                "source": {"urls": "src/*.nc", "concat_dim": "time"},
                "target": {"repo": "repo", "group": "g"},
            }
        )
        + extra
    )
    return spec, files, [f.read_bytes() for f in files]


def restore(files: list[Path], originals: list[bytes]) -> None:
    """Put damaged files back (untouched ones keep their identity)."""
    for f, data in zip(files, originals, strict=True):
        if f.is_symlink():
            f.unlink()
        if not f.exists() or f.read_bytes() != data:
            f.write_bytes(data)


def ingest_tip(repo: Path) -> str | None:
    """The branch tip if it holds an ingest; None for no repository or only its root commit
    (a failed first run may leave an empty repository: see issue #20)."""
    tip = branch_tip(repo)
    if tip is None or len(ancestry(repo, tip)) == 1:
        return None
    return tip


def check_refused_then_recovered(
    tmp_path: Path,
    spec: Path,
    files: list[Path],
    originals: list[bytes],
    client: Any,
    run: Callable[[], Any],
    *,
    tip: str | None,
) -> None:
    victim = files[1]
    with pytest.raises(SourceError) as info:
        run()
    assert f"file://{victim}" in str(info.value)
    assert f"file://{victim}" in info.value.urls
    assert "Traceback" not in str(info.value)
    assert ingest_tip(tmp_path / "repo") == tip
    restore(files, originals)
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.status == "committed"
    records = check_tip(tmp_path / "repo", "g", result.snapshot_id)
    assert {r["url"] for r in records} == {f"file://{f}" for f in files}
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_identical(stored, sources(files))


@pytest.mark.parametrize("stage", ["scan", "commit"])
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_between_stages_of_a_first_run(
    tmp_path: Path, client: Any, stage: str, fault: str
) -> None:
    spec, files, originals = fresh(tmp_path)
    pipeline = icepipe.load_pipeline(spec)
    observer = FaultAt(stage, files[1], fault)
    check_refused_then_recovered(
        tmp_path,
        spec,
        files,
        originals,
        client,
        lambda: icepipe.run(pipeline, client=client, observer=observer),
        tip=None,
    )
    assert observer.done


@pytest.mark.parametrize("fault", ["delete", "truncate"])
def test_a_file_changed_during_the_scan_is_named_as_changed_not_corrupt(
    tmp_path: Path, client: Any, fault: str
) -> None:
    """A file still being copied fails to read: the error says it changed while the run read
    it (the next run takes it), not that it is corrupt and must be replaced."""
    spec, files, _ = fresh(tmp_path)
    observer = FaultAt("scan", files[1], fault)
    with pytest.raises(SourceError) as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client, observer=observer)
    message = str(info.value)
    assert f"file://{files[1]}: " in message and "while this run read it" in message
    assert ("disappeared" if fault == "delete" else "changed (listed: size") in message
    assert "the next run lists it anew" in message


@pytest.mark.parametrize("fault", ["delete", "replace"])
def test_fault_before_the_commit_of_an_append(tmp_path: Path, client: Any, fault: str) -> None:
    spec, files, originals = fresh(tmp_path)
    # Ingest the first file; the other two arrive later, and the fault hits the first of them.
    for f in files[1:]:
        f.rename(tmp_path / f.name)
    tip = icepipe.run(icepipe.load_pipeline(spec), client=client).snapshot_id
    for f in files[1:]:
        (tmp_path / f.name).rename(f)
    observer = FaultAt("commit", files[1], fault)
    check_refused_then_recovered(
        tmp_path,
        spec,
        files,
        originals,
        client,
        lambda: icepipe.run(icepipe.load_pipeline(spec), client=client, observer=observer),
        tip=tip,
    )


HOOK = '''
import json, os, pathlib

def inject(ds):
    """Damage the file being scanned, once, right after its references were read."""
    plan = pathlib.Path(__file__).with_name("fault.json")
    if plan.exists():
        todo = json.loads(plan.read_text())
        path = pathlib.Path(ds.encoding["source"].removeprefix("file://"))
        if path.name == todo["name"]:
            plan.unlink()
            if todo["fault"] == "delete":
                path.unlink()
            else:
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
    return ds
'''


@pytest.mark.parametrize("fault", ["delete", "truncate"])
def test_fault_during_the_scan_on_a_worker(tmp_path: Path, client: Any, fault: str) -> None:
    # The file goes away while a Dask worker scans it (after its header and coordinates were
    # read): the references the worker made point at nothing, or past the end.
    spec, files, originals = fresh(tmp_path)
    # One module name per test: workers keep imported hook modules.
    module = f"faulthook_{fault}_{os.urandom(3).hex()}"
    (tmp_path / f"{module}.py").write_text(HOOK)
    doc = yaml.safe_load(spec.read_text())
    doc["source"]["preprocess"] = f"{module}:inject"
    spec.write_text(yaml.safe_dump(doc))
    (tmp_path / "fault.json").write_text(json.dumps({"name": files[1].name, "fault": fault}))
    pipeline = icepipe.load_pipeline(spec)
    check_refused_then_recovered(
        tmp_path,
        spec,
        files,
        originals,
        client,
        lambda: icepipe.run(pipeline, client=client),
        tip=None,
    )
    assert not (tmp_path / "fault.json").exists()  # the fault did happen


def test_ingested_files_that_disappear_are_reported(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from icepipe.cli import main
    from icepipe.ops.status import pipeline_status

    spec, files, _ = fresh(tmp_path)
    assert main(["run", str(spec)]) == 0
    files[1].unlink()
    capsys.readouterr()
    assert main(["run", str(spec)]) == 0  # nothing new: not an error, but said
    captured = capsys.readouterr()
    assert "nothing new" in captured.out
    assert f"file://{files[1]}" in captured.err and "no longer exist" in captured.err
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.files_missing == (f"file://{files[1]}",)

    files[2].write_bytes(files[2].read_bytes() + b"\0")  # changed after it was ingested
    status = pipeline_status(icepipe.load_pipeline(spec))
    assert status.lag["files_missing"] == 1 and status.lag["files_changed"] == 1
    problems = "\n".join(status.problems)
    assert f"file://{files[1]}" in problems and "no longer exist" in problems
    assert f"file://{files[2]}" in problems and "changed since" in problems
