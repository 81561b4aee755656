"""Run a pipeline: wire listing, scanning, planning and committing together (little logic here)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from icepipe import __version__, execute, plan, sources, target
from icepipe.errors import ConfigError, ConflictError
from icepipe.model import SourceFile, TargetSchema
from icepipe.spec import Pipeline

if TYPE_CHECKING:
    import icechunk

__all__ = ["RunResult", "run"]


@dataclass(frozen=True)
class RunResult:
    """What one run did."""

    pipeline: str
    status: Literal["committed", "nothing-new"]
    repo: str
    branch: str
    group: str | None
    snapshot_id: str | None
    files_new: tuple[str, ...]
    files_already: int
    variables: tuple[str, ...]
    dims: dict[str, int]
    seconds: float
    attempts: int
    stages: dict[str, float] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - t0


def run(
    pipeline: Pipeline,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    max_attempts: int = 5,
) -> RunResult:
    """Ingest the pipeline's new source files into its target in one commit.

    Files already recorded in the branch's history are skipped; when none are new nothing is
    written (``status == "nothing-new"``). When another writer moves the branch meanwhile, the
    run re-plans against the new tip (up to ``max_attempts`` times), so each file is ingested
    exactly once.

    Parameters
    ----------
    pipeline
        A validated pipeline (:func:`icepipe.load_pipeline`).
    workers, scheduler
        Size of the embedded ``LocalCluster``, or the address of an existing Dask scheduler.
    client
        An existing ``distributed.Client`` to use instead (``workers``/``scheduler`` ignored).
    max_attempts
        How many times to re-plan when the branch moved under the run.

    Raises
    ------
    ConfigError, SourceError, ConflictError, StorageError
        See :mod:`icepipe.errors`; nothing is committed when any is raised.
    """
    if pipeline.mode != "virtual":
        raise ConfigError("mode: native is not implemented yet; use mode: virtual", field="mode")
    t_start = time.perf_counter()
    timer = _Timer()
    spec_t = pipeline.target
    src = pipeline.source
    with timer("list"):
        listed = sources.list_sources(pipeline.source.urls, is_glob=pipeline.source.is_glob)
    containers = target.container_prefixes(f.url for f in listed)
    scanned: dict[str, sources.ScannedFile] = {}
    started_at = datetime.now(UTC).isoformat()
    run_id = uuid.uuid4().hex

    def result(status: Literal["committed", "nothing-new"], **kw: Any) -> RunResult:
        return RunResult(
            pipeline=pipeline.name,
            status=status,
            repo=spec_t.repo,
            branch=spec_t.branch,
            group=spec_t.group,
            seconds=time.perf_counter() - t_start,
            stages=dict(timer.stages),
            **kw,
        )

    with ExitStack() as stack:
        dask_client = client
        cluster_info = execute.describe_client(client) if client is not None else None
        for attempt in range(1, max_attempts + 1):
            with timer("plan"):
                # The repository is created only when there is something valid to commit, so
                # a first run on bad files leaves nothing behind.
                repo = _open_if_exists(spec_t.repo, containers)
                session = target.writable_session(repo, spec_t.branch) if repo else None
                ledger = (
                    target.read_ledger(repo, session.snapshot_id, spec_t.group)
                    if repo and session
                    else {}
                )
                selection = plan.select_new(listed, ledger)
                existing = (
                    target.read_target_schema(
                        session, spec_t.group, src.concat_dim, order_by=src.order_by
                    )
                    if session
                    else TargetSchema()
                )
            if not selection.new:
                return result(
                    "nothing-new",
                    snapshot_id=session.snapshot_id if session else None,
                    files_new=(),
                    files_already=len(selection.already),
                    variables=tuple(sorted(existing.variables)),
                    dims=dict(existing.dims),
                    attempts=attempt,
                    cluster={},
                )
            to_scan = [f for f in selection.new if f.url not in scanned]
            if to_scan:
                if dask_client is None:
                    # Started lazily: a run with nothing new costs no cluster start-up.
                    dask_client, cluster_info = stack.enter_context(
                        execute.open_client(workers=workers, scheduler=scheduler)
                    )
                with timer("scan"):
                    for f, s in zip(
                        to_scan,
                        execute.run_tasks(
                            dask_client,
                            sources.scan_file,
                            to_scan,
                            describe=_url,
                            key=f"scan-{run_id}",
                            format=pipeline.source.format,
                            concat_dim=src.concat_dim,
                            order_by=src.order_by,
                            variables=src.variables,
                            drop_variables=src.drop_variables,
                        ),
                        strict=True,
                    ):
                        scanned[f.url] = s
            batch = [scanned[f.url] for f in selection.new]
            with timer("plan"):
                p = plan.plan_append(
                    [s.schema for s in batch], existing, src.concat_dim, order_by=src.order_by
                )
                by_url = {s.source.url: s for s in batch}
                combined = sources.combine_virtual(
                    [by_url[u] for u in p.order], pipeline.source.concat_dim
                )
            if session is None:
                repo = target.open_repo(spec_t.repo, create=True, containers=containers)
                session = target.writable_session(repo, spec_t.branch)
                if target.read_ledger(repo, session.snapshot_id, spec_t.group):
                    continue  # another run created the repository meanwhile: re-plan
            with timer("write"):
                target.write_virtual(
                    session,
                    combined,
                    group=spec_t.group,
                    append_dim=pipeline.source.concat_dim if p.append else None,
                )
            metadata = {
                target.METADATA_KEY: {
                    "version": __version__,
                    "pipeline": pipeline.name,
                    "pipeline_file": pipeline.path,
                    "mode": pipeline.mode,
                    "group": spec_t.group or "",
                    "concat_dim": src.concat_dim,
                    "order_by": src.order_by,
                    "run_id": run_id,
                    "started_at": started_at,
                    "cluster": cluster_info.as_dict() if cluster_info else {},
                    "files": [by_url[u].source.identity() for u in p.order],
                }
            }
            n = len(p.order)
            message = (
                f"icepipe {pipeline.name}: {'append' if p.append else 'ingest'} {n} file"
                f"{'s' if n != 1 else ''} into {spec_t.group or '/'}"
            )
            try:
                with timer("commit"):
                    snapshot_id = target.commit(
                        session, spec_t.repo, message=message, metadata=metadata
                    )
            except ConflictError:
                if attempt == max_attempts:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
                continue
            assert repo is not None
            after = target.read_target_schema(
                repo.readonly_session(snapshot_id=snapshot_id),
                spec_t.group,
                src.concat_dim,
                order_by=src.order_by,
            )
            return result(
                "committed",
                snapshot_id=snapshot_id,
                files_new=p.order,
                files_already=len(selection.already),
                variables=tuple(sorted(after.variables)),
                dims=dict(after.dims),
                attempts=attempt,
                cluster=cluster_info.as_dict() if cluster_info else {},
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _url(f: SourceFile) -> str:
    return f.url


def _open_if_exists(repo: str, containers: list[str]) -> icechunk.Repository | None:
    try:
        return target.open_repo(repo, create=False, containers=containers)
    except target.RepoNotFoundError:
        return None
