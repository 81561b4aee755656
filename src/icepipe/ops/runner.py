"""``icepipe run`` end to end: load the pipeline, run it (directly or staged) with progress
output, and write the run report whatever happens."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icepipe.errors import IcepipeError
from icepipe.ops.progress import ProgressMode, ProgressPrinter
from icepipe.ops.reports import RunRecorder, state_dir
from icepipe.pipeline import RunObserver, RunResult, run
from icepipe.spec import Pipeline, load_pipeline

__all__ = ["RunOutcome", "run_pipeline_file"]


class _Fanout:
    """Several observers as one."""

    def __init__(self, *observers: RunObserver) -> None:
        self.observers = observers

    def stage_started(self, stage: str, client: Any) -> None:
        for o in self.observers:
            o.stage_started(stage, client)

    def stage_finished(self, stage: str, seconds: float) -> None:
        for o in self.observers:
            o.stage_finished(stage, seconds)


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its pipeline, result, exit code and report file."""

    pipeline: Pipeline
    result: RunResult
    exit_code: int
    #: ``None`` when the report could not be written (a warning was printed).
    report_file: Path | None


def exit_code_of(exc: BaseException) -> int:
    """The exit code for a run that raised ``exc`` (see :mod:`icepipe.errors`)."""
    if isinstance(exc, IcepipeError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


def run_pipeline_file(
    path: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    state: str | None = None,
    stage: bool = False,
    stage_sample: int | None = 3,
    progress: ProgressMode = "auto",
    nothing_new_exit_code: int = 0,
    argv: Sequence[str] = (),
) -> RunOutcome:
    """Run the pipeline file ``path`` and write its report (also when it fails: the exception
    is re-raised after the report is written).

    Raises
    ------
    IcepipeError
        Whatever the run raised (see :func:`icepipe.run` and
        :func:`icepipe.ops.stage.run_staged`).
    """
    run_id = uuid.uuid4().hex
    folder = state_dir(path, state)
    try:
        pipeline = load_pipeline(path)
    except BaseException as exc:
        # No name yet: the report goes under the file's name, so a broken pipeline is seen.
        recorder = RunRecorder(
            pipeline_name=Path(path).stem,
            pipeline_file=str(path),
            run_id=run_id,
            state=folder,
            argv=argv,
        )
        recorder.finish(exit_code=exit_code_of(exc), error=exc)
        raise
    recorder = RunRecorder(
        pipeline_name=pipeline.name,
        pipeline_file=str(path),
        run_id=run_id,
        state=folder,
        argv=argv,
    )
    t = pipeline.target
    recorder.target = {"repo": t.repo, "branch": t.branch, "group": t.group}
    observer = _Fanout(recorder, ProgressPrinter(pipeline.name, mode=progress))
    try:
        if stage:
            from icepipe.ops.stage import run_staged, stage_branch_name

            recorder.extra["stage_branch"] = stage_branch_name(pipeline, run_id)
            result = run_staged(
                pipeline,
                workers=workers,
                scheduler=scheduler,
                client=client,
                run_id=run_id,
                observer=observer,
                sample=stage_sample,
            )
        else:
            result = run(
                pipeline,
                workers=workers,
                scheduler=scheduler,
                client=client,
                run_id=run_id,
                observer=observer,
            )
    except BaseException as exc:
        recorder.finish(exit_code=exit_code_of(exc), error=exc)
        raise
    code = nothing_new_exit_code if result.status == "nothing-new" else 0
    report = recorder.finish(exit_code=code, result=result)
    return RunOutcome(pipeline=pipeline, result=result, exit_code=code, report_file=report)
