"""Staged runs (``icepipe run --stage``): ingest on a fresh branch, validate it there, then
publish it by moving the target branch with a compare-and-set.

1. The target branch's tip is recorded (``expected``) and a branch
   ``stage/<pipeline>-<run id>`` is created at it.
2. The pipeline runs against the stage branch: same ledger, same plan, one commit there.
3. The files the run ingested are read back and compared with the sources
   (:func:`icepipe.ops.validate.validate_pipeline`).
4. The target branch is moved to the stage commit only if it still points at ``expected``
   (Icechunk's ``reset_branch(..., from_snapshot_id=expected)``); then the stage branch is
   deleted.

Nothing is visible on the target branch before step 4. When validation fails, or another
writer moved the target branch meanwhile (a :class:`ConflictError`: run again), the stage
branch is left for inspection (``icepipe diff REPO BRANCH stage/...``) and can be deleted
with ``icepipe branch REPO delete stage/...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from icepipe import repository
from icepipe.errors import ConflictError, IcepipeError, ValidationError
from icepipe.ops.validate import validate_pipeline
from icepipe.pipeline import RunObserver, RunResult, run
from icepipe.spec import Pipeline

__all__ = ["run_staged", "stage_branch_name"]


def stage_branch_name(pipeline: Pipeline, run_id: str) -> str:
    """``stage/<pipeline name>-<first 12 characters of the run id>``."""
    return f"stage/{pipeline.name}-{run_id[:12]}"


@contextmanager
def _stage(stages: dict[str, float], name: str, observer: RunObserver | None) -> Iterator[None]:
    if observer is not None:
        observer.stage_started(name, None)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        stages[name] = stages.get(name, 0.0) + dt
        if observer is not None:
            observer.stage_finished(name, dt)


def run_staged(
    pipeline: Pipeline,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    memory_limit: str | None = None,
    client: Any = None,
    run_id: str | None = None,
    observer: RunObserver | None = None,
    sample: int | None = 3,
) -> RunResult:
    """Run ``pipeline`` through a stage branch (see the module docstring).

    Parameters
    ----------
    pipeline, workers, scheduler, cluster, memory_limit, client, observer
        As for :func:`icepipe.run`.
    run_id
        The run's id (default: a new one); names the stage branch.
    sample
        How many of the newly ingested files to validate (``None``: all of them).

    Returns
    -------
    RunResult
        Of the run, with ``branch`` the target branch and ``validate``/``publish`` stages.

    Raises
    ------
    ValidationError
        The staged data differs from the sources; the target branch is unchanged.
    ConflictError
        The target branch moved during the run; it is unchanged. Run again.
    ConfigError, SourceError, StorageError
        As for :func:`icepipe.run`; the stage branch is deleted when the run itself failed.
    """
    run_id = run_id or uuid.uuid4().hex
    t = pipeline.target
    repo = repository.open_repo(
        t.repo,
        create=True,
        storage=t.storage,
        source_storage=pipeline.source.storage,
        config=t.config,
    )
    repository.writable_session(repo, t.branch)  # creates the target branch from main if new
    expected = repository.resolve_ref(repo, f"branch:{t.branch}")
    stage = stage_branch_name(pipeline, run_id)
    repository.create_branch(repo, stage, expected)
    staged = dataclasses.replace(pipeline, target=dataclasses.replace(t, branch=stage))
    try:
        result = run(
            staged,
            workers=workers,
            scheduler=scheduler,
            cluster=cluster,
            memory_limit=memory_limit,
            client=client,
            run_id=run_id,
            observer=observer,
            report=False,  # the caller's report covers the whole staged run
        )
    except BaseException:
        _forget(repo, stage)  # nothing was committed there: nothing to inspect
        raise
    if result.status == "nothing-new" or result.snapshot_id is None:
        _forget(repo, stage)
        return dataclasses.replace(result, branch=t.branch)
    stages = dict(result.stages)
    try:
        with _stage(stages, "validate", observer):
            validate_pipeline(staged, sample=sample, urls=result.files_new)
    except ValidationError as exc:
        raise ValidationError(
            f"{exc}\nThe target branch {t.branch!r} was not changed; the staged commit "
            f"{result.snapshot_id} is on branch {stage!r} for inspection",
            url=exc.url,
            variable=exc.variable,
        ) from exc
    try:
        with _stage(stages, "publish", observer):
            repository.move_branch(
                repo, t.branch, result.snapshot_id, expected=expected, location=t.repo
            )
    except ConflictError as exc:
        raise ConflictError(
            f"{exc}. The validated commit {result.snapshot_id} stays on branch {stage!r} for "
            "inspection (delete it with `icepipe branch REPO delete " + stage + "`)",
            conflicts=exc.conflicts,
        ) from exc
    _forget(repo, stage)
    return dataclasses.replace(result, branch=t.branch, stages=stages)


def _forget(repo: Any, stage: str) -> None:
    # A leftover stage branch is harmless; `icepipe branch REPO list` shows it.
    with contextlib.suppress(IcepipeError):
        repository.delete_branch(repo, stage)
