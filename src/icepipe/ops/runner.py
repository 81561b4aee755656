"""``icepipe run`` end to end: load the pipeline, run it (directly or staged) with progress
output, and write the run report whatever happens."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icepipe.ops.progress import ProgressMode, ProgressPrinter
from icepipe.ops.reports import Fanout, RunRecorder, exit_code_of, recorder_for, state_dir
from icepipe.pipeline import RunResult, run
from icepipe.spec import Pipeline, load_pipeline

__all__ = ["RunOutcome", "exit_code_of", "run_pipeline_file"]


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its pipeline, result, exit code and report file."""

    pipeline: Pipeline
    result: RunResult
    exit_code: int
    #: ``None`` when the report could not be written (a warning was printed).
    report_file: Path | None


def run_pipeline_file(
    path: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    memory_limit: str | None = None,
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
    recorder = recorder_for(pipeline, run_id=run_id, state=state, argv=argv, pipeline_file=path)
    observer = Fanout(recorder, ProgressPrinter(pipeline.name, mode=progress))
    try:
        if stage:
            from icepipe.ops.stage import run_staged, stage_branch_name

            recorder.extra["stage_branch"] = stage_branch_name(pipeline, run_id)
            result = run_staged(
                pipeline,
                workers=workers,
                scheduler=scheduler,
                cluster=cluster,
                memory_limit=memory_limit,
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
                cluster=cluster,
                memory_limit=memory_limit,
                client=client,
                run_id=run_id,
                observer=observer,
                report=False,  # the recorder above writes it
            )
    except BaseException as exc:
        recorder.finish(exit_code=exit_code_of(exc), error=exc)
        raise
    code = nothing_new_exit_code if result.status == "nothing-new" else 0
    report = recorder.finish(exit_code=code, result=result)
    return RunOutcome(pipeline=pipeline, result=result, exit_code=code, report_file=report)
