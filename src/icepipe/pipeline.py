"""Run a pipeline: wire listing, scanning, planning and committing together (little logic here)."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from icepipe import __version__, execute, plan, sources, target
from icepipe.errors import ConfigError, ConflictError, SourceError
from icepipe.model import SourceFile, TargetSchema, TimeConversion
from icepipe.spec import Pipeline

if TYPE_CHECKING:
    import icechunk

__all__ = ["RunObserver", "RunResult", "run"]


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
    files_skipped: dict[str, str]
    variables: tuple[str, ...]
    dims: dict[str, int]
    seconds: float
    attempts: int
    stages: dict[str, float] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    #: Total size of the files ingested by this run.
    bytes_new: int = 0


class RunObserver(Protocol):
    """Told about a run's stages as they happen (run reports, progress bars).

    ``stage_started`` gets the run's ``distributed.Client`` once the cluster is up (``None``
    before: listing and planning run on the client alone). A stage may run several times
    (``plan`` once per attempt). Observers must not raise.
    """

    def stage_started(self, stage: str, client: Any) -> None: ...

    def stage_finished(self, stage: str, seconds: float) -> None: ...


class _Timer:
    def __init__(self, observer: RunObserver | None = None, client: Any = None) -> None:
        self.stages: dict[str, float] = {}
        self.observer = observer
        self.client = client

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.observer is not None:
            self.observer.stage_started(stage, self.client)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds
            if self.observer is not None:
                self.observer.stage_finished(stage, seconds)


def run(
    pipeline: Pipeline,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    max_attempts: int = 5,
    run_id: str | None = None,
    observer: RunObserver | None = None,
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
    run_id
        The id recorded in the commit metadata (default: a new random one).
    observer
        Told when each stage starts and ends (see :class:`RunObserver`).

    Raises
    ------
    ConfigError, SourceError, ConflictError, StorageError
        See :mod:`icepipe.errors`; nothing is committed when any is raised.
    """
    if pipeline.on_changed == "reingest" and pipeline.source.stack_dims:
        raise ConfigError(
            "on_changed: reingest is not supported with concat_dims yet; re-ingest the group",
            field="on_changed",
        )
    if pipeline.source.preprocess:
        # Fail before any work when the hook cannot be imported (workers import it again).
        sources.load_hook(pipeline.source.preprocess, pipeline.source.search_path)
    t_start = time.perf_counter()
    timer = _Timer(observer, client)
    spec_t = pipeline.target
    src = pipeline.source
    with timer("list"):
        listed = sources.list_sources(
            pipeline.source.urls, is_glob=pipeline.source.is_glob, storage=pipeline.source.storage
        )
    containers = target.container_prefixes(f.url for f in listed)
    scanned: dict[str, sources.ScannedFile] = {}
    skipped: dict[str, str] = {}  # on_error: skip: url -> reason, retried by the next run
    started_at = datetime.now(UTC).isoformat()
    run_id = run_id or uuid.uuid4().hex

    def result(status: Literal["committed", "nothing-new"], **kw: Any) -> RunResult:
        return RunResult(
            pipeline=pipeline.name,
            status=status,
            repo=spec_t.repo,
            branch=spec_t.branch,
            group=spec_t.group,
            seconds=time.perf_counter() - t_start,
            stages=dict(timer.stages),
            run_id=run_id,
            **kw,
        )

    with ExitStack() as stack:
        dask_client = client
        cluster_info = execute.describe_client(client) if client is not None else None
        for attempt in range(1, max_attempts + 1):
            with timer("plan"):
                # The repository is created only when there is something valid to commit, so
                # a first run on bad files leaves nothing behind.
                repo = _open_if_exists(pipeline, containers)
                session = target.writable_session(repo, spec_t.branch) if repo else None
                ledger = (
                    target.read_ledger(repo, session.snapshot_id, spec_t.group)
                    if repo and session
                    else {}
                )
                selection = plan.select_new(listed, ledger, on_changed=pipeline.on_changed)
                existing = (
                    target.read_target_schema(
                        session, spec_t.group, src.concat_dim, order_by=src.order_by
                    )
                    if session
                    else TargetSchema()
                )
            todo = [*selection.new, *(f for f, _ in selection.changed)]
            to_scan = [f for f in todo if f.url not in scanned and f.url not in skipped]
            if to_scan:
                if dask_client is None:
                    # Started lazily: a run with nothing new costs no cluster start-up.
                    dask_client, cluster_info = stack.enter_context(
                        execute.open_client(workers=workers, scheduler=scheduler)
                    )
                    timer.client = dask_client
                with timer("scan"):
                    n_workers = cluster_info.n_workers if cluster_info else 1
                    done, failed = _scan(dask_client, pipeline, to_scan, run_id, n_workers)
                scanned.update({f.url: s for f, s in done})
                skipped.update({f.url: str(e) for f, e in failed})
            new = sources.assemble_steps(
                [scanned[f.url] for f in selection.new if f.url in scanned],
                src.concat_dim,
                stack_dims=src.stack_dims,
                merge=src.merge,
                order_by=src.order_by,
            )
            changed = [(scanned[f.url], r) for f, r in selection.changed if f.url in scanned]
            if not new and not changed:
                return result(
                    "nothing-new",
                    snapshot_id=session.snapshot_id if session else None,
                    files_new=(),
                    files_already=len(selection.already),
                    files_skipped=dict(skipped),
                    variables=tuple(sorted(existing.variables)),
                    dims=dict(existing.dims),
                    attempts=attempt,
                    cluster=cluster_info.as_dict() if cluster_info else {},
                )
            virtual = pipeline.mode == "virtual"
            with timer("plan"):
                p = (
                    plan.plan_append(
                        [s.schema for s in new],
                        existing,
                        src.concat_dim,
                        order_by=src.order_by,
                        virtual=virtual,
                        ledger_slots=_slots(ledger),
                    )
                    if new
                    else plan.AppendPlan(order=(), append=True, new_length=0)
                )
                reingest = [
                    plan.plan_reingest(s.schema, r, existing, src.concat_dim, virtual=virtual)
                    for s, r in changed
                ]
            if session is None:
                repo = target.open_repo(
                    spec_t.repo,
                    create=True,
                    containers=containers,
                    storage=spec_t.storage,
                    source_storage=src.storage,
                    config=spec_t.config,
                )
                session = target.writable_session(repo, spec_t.branch)
                if target.read_ledger(repo, session.snapshot_id, spec_t.group):
                    continue  # another run created the repository meanwhile: re-plan
            by_url = {s.source.url: s for s in [*new, *(c for c, _ in changed)]}
            with timer("write"):
                layout = _write(pipeline, session, by_url, p, [*p.regions, *reingest], existing)
            slots = [*p.regions, *reingest, *p.appends]
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
                    "files": [
                        {**f.identity(), "start": s.start, "length": s.length}
                        for s in slots
                        for f in by_url[s.url].sources
                    ],
                    "reingested": [s.url for s in reingest],
                    "skipped": [{"url": u, "reason": r} for u, r in skipped.items()],
                    **layout,
                }
            }
            ingested = tuple(f.url for s in slots for f in by_url[s.url].sources)
            n = len(ingested)
            verb = "append" if p.append else "ingest"
            message = (
                f"icepipe {pipeline.name}: {verb} {n} file{'s' if n != 1 else ''} into "
                f"{spec_t.group or '/'}"
            )
            try:
                with timer("commit"):
                    snapshot_id = target.commit(
                        session, spec_t.repo, message=message, metadata=metadata
                    )
            except ConflictError:
                if attempt == max_attempts:
                    raise
                # Someone else moved the branch and our change could not be rebased onto it
                # (e.g. both appended to the same arrays): redo against the new tip.
                time.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
                continue
            after = target.read_target_schema(
                session, spec_t.group, src.concat_dim, order_by=src.order_by
            )
            return result(
                "committed",
                snapshot_id=snapshot_id,
                files_new=ingested,
                files_already=len(selection.already),
                files_skipped=dict(skipped),
                variables=tuple(sorted(after.variables)),
                dims=dict(after.dims),
                attempts=attempt,
                cluster=cluster_info.as_dict() if cluster_info else {},
                bytes_new=sum(f.size for s in slots for f in by_url[s.url].sources),
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _scan(
    client: Any,
    pipeline: Pipeline,
    files: list[SourceFile],
    run_id: str,
    n_workers: int,
) -> tuple[list[tuple[SourceFile, sources.ScannedFile]], list[tuple[SourceFile, SourceError]]]:
    """Scan ``files`` on the cluster in batches; return what was scanned and what failed.

    A batch whose worker died (a parser crashing the process) is scanned again file by file,
    so the error names the file that kills workers.
    """
    src = pipeline.source
    opts: dict[str, Any] = {
        "format": src.format,
        "concat_dim": src.concat_dim,
        "order_by": src.order_by,
        "variables": src.variables,
        "drop_variables": src.drop_variables,
        "preprocess": src.preprocess,
        "search_path": src.search_path,
        # Names of credential variables, never values: workers read their own environment.
        "storage": src.storage,
        "grib_cube": src.grib_cube,
        "mode": pipeline.mode,
    }
    done, crashed = execute.run_tasks_collect(
        client,
        sources.scan_files,
        execute.batches(files, n_workers),
        describe=lambda b: ", ".join(f.url for f in b),
        key=f"scan-{run_id}",
        **opts,
    )
    retried, failed = execute.run_tasks_collect(
        client,
        sources.scan_file,
        [f for batch, _ in crashed for f in batch],
        describe=_url,
        key=f"rescan-{run_id}",
        **opts,
    )
    scanned = [(f, s) for batch, results in done for f, s in zip(batch, results, strict=True)]
    scanned += retried
    ok = [(f, s) for f, s in scanned if isinstance(s, sources.ScannedFile)]
    failed += [(f, s) for f, s in scanned if isinstance(s, SourceError)]
    if pipeline.on_error == "fail":
        execute.raise_source_errors([e for _, e in failed])
    return ok, failed


def _slots(ledger: dict[str, dict[str, Any]]) -> list[plan.Slot]:
    return [
        plan.Slot(url, int(r["start"]), int(r["length"]))
        for url, r in ledger.items()
        if isinstance(r.get("start"), int) and isinstance(r.get("length"), int)
    ]


def _write(
    pipeline: Pipeline,
    session: Any,
    files: dict[str, sources.ScannedFile],
    p: plan.AppendPlan,
    regions: list[plan.Slot],
    existing: TargetSchema,
) -> dict[str, Any]:
    """Write regions then appends into ``session``; return the layout for the commit metadata."""
    from icepipe.target.native import write_dataset

    src, group = pipeline.source, pipeline.target.group
    dim = src.concat_dim
    virtual = pipeline.mode == "virtual"
    for slot in regions:
        region = {dim: slice(slot.start, slot.start + slot.length)}
        if virtual:
            ds = sources.normalize_times(
                files[slot.url].dataset, p.conversions.get(slot.url, {}), slot.url
            )
            target.write_virtual(session, ds, group=group, region=region, urls=[slot.url])
        else:
            ds = _open_native(pipeline, [files[slot.url]], p.conversions, _stored_grid(existing))
            ds = ds.drop_vars([n for n, v in ds.variables.items() if dim not in v.dims])
            write_dataset(session, target.without_attrs(ds), group=group, region=region)
    if not p.order:
        return {}
    ordered = [files[u] for u in p.order]
    append_dim = dim if p.append else None
    if virtual:
        ordered = [
            dataclasses.replace(
                f,
                dataset=sources.normalize_times(
                    f.dataset, p.conversions.get(f.source.url, {}), f.source.url
                ),
            )
            for f in ordered
        ]
        combined = sources.combine_virtual(ordered, dim)
        target.write_virtual(
            session, combined, group=group, append_dim=append_dim, urls=list(p.order)
        )
        return {}
    native = pipeline.native
    if p.append:
        ds = _open_native(pipeline, ordered, p.conversions, _stored_grid(existing))
        # The stored chunk (shard) grid stays: write_dataset aligns the write tasks to it.
        ds = target.without_attrs(ds)
        # xarray's append replaces the group's attributes: write back the stored ones.
        ds.attrs = target.read_group_attrs(session, group)
        write_dataset(session, ds, group=group, append_dim=append_dim)
        return {}
    dims = {**ordered[0].schema.dims, dim: p.new_length}
    chunk_len, task_len = plan.plan_chunks(
        dims, dim, ordered[0].schema.dims[dim], chunks=native.chunks, shards=native.shards
    )
    ds = _open_native(pipeline, ordered, p.conversions, task_len)
    encoding = target.native_encoding(
        ds, chunk_len, shard_len=task_len if native.shards else None, compression=native.compression
    )
    write_dataset(session, ds.chunk(task_len), group=group, mode="w-", encoding=encoding)
    return {
        "chunks": chunk_len,
        "shards": task_len if native.shards else None,
        "compression": native.compression,
    }


def _stored_grid(existing: TargetSchema) -> dict[str, int]:
    """Chunk lengths of the stored arrays per dimension (the largest where they differ)."""
    grid: dict[str, int] = {}
    for var in existing.variables.values():
        for d, c in zip(var.dims, var.chunks or (), strict=False):
            grid[d] = max(grid.get(d, 0), c)
    return grid


def _open_native(
    pipeline: Pipeline,
    files: list[sources.ScannedFile],
    conversions: Mapping[str, Mapping[str, TimeConversion]],
    grid: Mapping[str, int] | None = None,
) -> Any:
    """Open ``files`` lazily, each aligned to ``grid`` (target task lengths) except along
    the concat dimension, where every file is one Dask chunk."""
    src = pipeline.source
    chunks = {d: n for d, n in (grid or {}).items() if d != src.concat_dim}
    chunks[src.concat_dim] = -1
    ds = sources.open_lazy(
        [[m.url for m in f.members] if f.members else f.source.url for f in files],
        [[f.schema.format] * len(f.members) if f.members else f.schema.format for f in files],
        src.concat_dim,
        variables=src.variables,
        drop_variables=src.drop_variables,
        keep=(src.order_by,) if src.order_by else (),
        preprocess=src.preprocess,
        search_path=src.search_path,
        conversions=conversions,
        storage=src.storage,
        chunks=chunks,
    )
    return sources.sanitize_attrs(ds)


def _url(f: SourceFile) -> str:
    return f.url


def _open_if_exists(pipeline: Pipeline, containers: list[str]) -> icechunk.Repository | None:
    t = pipeline.target
    try:
        return target.open_repo(
            t.repo,
            create=False,
            containers=containers,
            storage=t.storage,
            source_storage=pipeline.source.storage,
            config=t.config,
        )
    except target.RepoNotFoundError:
        return None
