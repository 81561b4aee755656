"""Run a pipeline as its stages: list → select → scan → plan → write → commit.

:func:`run` holds the retry loop (:class:`icepipe.repository.Retry`); each attempt
(``_attempt``) calls one small function per stage, and each stage calls into the module that
owns the work:

========  ==========================  =====================================================
stage     function                    owner
========  ==========================  =====================================================
list      ``_list``                   :mod:`icepipe.sources` (listing)
select    ``_select``                 :mod:`icepipe.repository` (ledger), :func:`plan.select_new`
scan      ``_scan``, ``_scan_files``  :mod:`icepipe.sources` on the cluster, or here for small runs
plan      ``_parts``, ``_plan``       :mod:`icepipe.plan` (pure: order, regions, hypercubes)
write     ``ingest.write_part``       :mod:`icepipe.ingest` over :mod:`icepipe.repository`
commit    ``_commit``                 :func:`icepipe.repository.commit`
========  ==========================  =====================================================

The decisions live in those modules. What stays here is wiring: which files a stage gets, the
run's state across attempts (``_Run``), and the ledger entry and message of the commit.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from icepipe import __version__, allocator, execute, ingest, plan, repository, sources
from icepipe.errors import (
    ConfigError,
    ConflictError,
    IcepipeError,
    SourceError,
    StaleWriteError,
)
from icepipe.model import SourceFile, TargetSchema
from icepipe.repository.ledger import FileRecord, NativeLayout, SkippedFile
from icepipe.spec import Pipeline
from icepipe.storage import reference_url

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
    #: With ``source.grib_cubes``: the hypercube groups (``variables`` and ``dims`` are then
    #: qualified by them: ``isobaricInhPa/t``).
    groups: tuple[str, ...] = ()
    #: Variables of a virtual ingest written as native chunks instead (GRIB messages the
    #: codec cannot decode correctly), with the reason.
    native_fallback: dict[str, str] = field(default_factory=dict)
    #: Ingested files the glob no longer finds (deleted or moved since): with virtual
    #: references, reads of their data fail until they are restored.
    files_missing: tuple[str, ...] = ()
    #: The run report written (``None``: not written, or ``report=False``).
    report_file: str | None = None

    def by_group(self) -> dict[str, tuple[tuple[str, ...], dict[str, int]]]:
        """With ``source.grib_cubes``: each hypercube group's variables and dimensions, by
        group (``variables`` and ``dims`` hold them qualified by the cube name)."""
        base = f"{self.group}/" if self.group else ""
        out = {}
        for group in self.groups:
            prefix = group.removeprefix(base) + "/"
            names = tuple(v.removeprefix(prefix) for v in self.variables if v.startswith(prefix))
            dims = {k.removeprefix(prefix): n for k, n in self.dims.items() if k.startswith(prefix)}
            out[group] = (names, dims)
        return out


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
    cluster: str | None = None,
    client: Any = None,
    memory_limit: str | None = None,
    max_attempts: int = 5,
    run_id: str | None = None,
    observer: RunObserver | None = None,
    report: bool = True,
    state_dir: str | None = None,
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
    cluster
        ``module:factory``: a function returning a ``distributed.Client`` or a cluster object
        (see :func:`icepipe.execute.choose_cluster` for ``$ICEPIPE_CLUSTER``, the pipeline's
        ``cluster:`` and Dask's ``scheduler-address``, used when neither this nor
        ``scheduler`` is given).
    client
        An existing ``distributed.Client`` to use instead (the options above are ignored).
    memory_limit
        Per-worker memory limit of the embedded ``LocalCluster`` (``"4GiB"``; Dask's
        default: the machine's memory shared among the workers).
    max_attempts
        How many times to re-plan when the branch moved under the run.
    run_id
        The id recorded in the commit metadata (default: a new random one).
    observer
        Told when each stage starts and ends (see :class:`RunObserver`).
    report
        Write the run report that ``icepipe run`` writes (``icepipe status`` reads it), also
        when the run fails; its path is ``RunResult.report_file``.
    state_dir
        Where the report goes (see :func:`icepipe.ops.reports.state_dir`).

    Raises
    ------
    ConfigError, SourceError, ConflictError, StorageError
        See :mod:`icepipe.errors`; nothing is committed when any is raised.
    """
    run_id = run_id or uuid.uuid4().hex
    options = _RunOptions(workers, scheduler, cluster, client, memory_limit, max_attempts)
    if not report:
        return _run(pipeline, options, run_id, observer)
    from icepipe.ops.reports import Fanout, exit_code_of, recorder_for

    recorder = recorder_for(pipeline, run_id=run_id, state=state_dir, argv=["icepipe.run()"])
    fanout = Fanout(recorder, *([observer] if observer is not None else []))
    try:
        result = _run(pipeline, options, run_id, fanout)
    except BaseException as exc:
        recorder.finish(exit_code=exit_code_of(exc), error=exc)
        raise
    path = recorder.finish(exit_code=0, result=result)
    return dataclasses.replace(result, report_file=str(path) if path else None)


@dataclass(frozen=True)
class _RunOptions:
    """:func:`run`'s cluster and retry options."""

    workers: int | None
    scheduler: str | None
    cluster: str | None
    client: Any
    memory_limit: str | None
    max_attempts: int


def _run(
    pipeline: Pipeline, options: _RunOptions, run_id: str, observer: RunObserver | None
) -> RunResult:
    """:func:`run` without the report."""
    _check_runnable(pipeline)
    o = options
    execute.check_memory_limit(o.memory_limit)
    # Dask's own settings are read when a cluster is needed (_Run.cluster_choice): a run with
    # nothing new does not import Dask.
    choice = execute.choose_cluster(
        scheduler=o.scheduler, cluster=o.cluster, pipeline=pipeline.cluster, dask_config=False
    )
    if o.client is not None:  # the caller's cluster: set up its workers for icepipe's tasks
        execute.prepare_workers(o.client)
    state = _Run(
        pipeline=pipeline,
        timer=_Timer(observer, o.client),
        run_id=run_id,
        workers=o.workers,
        choice=choice,
        memory_limit=o.memory_limit,
        client=o.client,
        cluster_info=_describe(o.client),
    )
    listed = _list(state)
    retry = repository.Retry(o.max_attempts)
    with ExitStack() as stack:
        # Pushed first, so it runs after the cluster closed.
        stack.push(state.discard_on_failure)
        state.stack = stack
        for attempt in retry.attempts():
            outcome = _attempt(state, listed, attempt, last=retry.is_last(attempt))
            if isinstance(outcome, RunResult):
                return outcome
            if outcome == "branch-moved":
                retry.wait(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _describe(client: Any) -> execute.ClusterInfo | None:
    if client is None:
        return None
    info = execute.describe_client(client)
    info.dashboard = execute.dashboard_link(client)
    return info


def _check_runnable(pipeline: Pipeline) -> None:
    """Checks before any work: what the spec allows but a run cannot do."""
    if pipeline.on_changed == "reingest" and pipeline.source.stack_dims:
        raise ConfigError(
            "on_changed: reingest is not supported with concat_dims yet; re-ingest the group",
            field="on_changed",
        )
    if pipeline.source.preprocess:
        # Fail before any work when the hook cannot be imported (workers import it again).
        sources.load_hook(pipeline.source.preprocess, pipeline.source.search_path)


@dataclass
class _Run:
    """What one run carries from stage to stage, and across its attempts."""

    pipeline: Pipeline
    timer: _Timer
    run_id: str
    workers: int | None
    choice: execute.ClusterChoice
    memory_limit: str | None
    client: Any
    cluster_info: execute.ClusterInfo | None
    stack: ExitStack | None = None
    t_start: float = field(default_factory=time.perf_counter)
    #: When the listing ended (recorded in the ledger entry).
    started_at: str = ""
    #: on_error: skip: url -> reason, retried by the next run.
    skipped: dict[str, str] = field(default_factory=dict)
    scanned: dict[str, sources.ScannedFile | sources.ScannedCubes] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    containers: list[str] = field(default_factory=list)
    #: Set when this run creates the repository (a first run).
    created: bool = False
    #: Whether ``choice`` took Dask's ``scheduler-address`` setting into account yet.
    dask_config_read: bool = False

    def cluster_choice(self) -> execute.ClusterChoice:
        """``choice``, completed with Dask's ``scheduler-address`` setting when nothing else
        named a cluster (read on first use only)."""
        if not self.dask_config_read:
            self.dask_config_read = True
            if not self.choice.configured:
                self.choice = execute.choose_cluster()
        return self.choice

    def discard_on_failure(self, exc_type: object, *_: object) -> bool:
        """A failing first run leaves no repository behind (unless another run committed to
        it meanwhile)."""
        if exc_type is not None and self.created:
            # Best effort: the run's own error is what to report.
            with suppress(Exception):
                if self.client is not None:
                    # Write tasks already running when the run failed still write chunks
                    # into the folder; an embedded cluster is closed by now, another is not.
                    execute.wait_until_idle(self.client)
                repository.discard_unused_repo(self.pipeline.target.repo)
        return False

    def cluster(self) -> dict[str, Any]:
        return self.cluster_info.as_dict() if self.cluster_info else {}

    def ledger_cluster(self) -> dict[str, Any]:
        """What the commit metadata records of the cluster: no dashboard URL (it dies with
        the cluster; the run report keeps it)."""
        return {k: v for k, v in self.cluster().items() if k != "dashboard"}

    def result(
        self,
        status: Literal["committed", "nothing-new"],
        parts: list[ingest.Part],
        selection: plan.Selection,
        *,
        attempt: int,
        snapshot_id: str | None,
        files: Sequence[SourceFile] = (),
        fallback: dict[str, str] | None = None,
    ) -> RunResult:
        t = self.pipeline.target
        return RunResult(
            pipeline=self.pipeline.name,
            status=status,
            repo=t.repo,
            branch=t.branch,
            group=t.group,
            snapshot_id=snapshot_id,
            files_new=tuple(f.url for f in files),
            files_already=len(selection.already),
            files_skipped=dict(self.skipped),
            variables=_variables(parts),
            dims=_dims(parts),
            seconds=time.perf_counter() - self.t_start,
            attempts=attempt,
            stages=dict(self.timer.stages),
            cluster=self.cluster(),
            run_id=self.run_id,
            bytes_new=sum(f.size for f in files),
            groups=tuple(p.group or "" for p in parts if p.cube),
            native_fallback=fallback or {},
            files_missing=self.missing,
        )


def _attempt(
    state: _Run, listed: list[SourceFile], attempt: int, *, last: bool
) -> RunResult | Literal["branch-moved", "created-meanwhile"]:
    """One pass of select → scan → plan → write → commit against the branch tip."""
    pipeline = state.pipeline
    with state.timer("plan"):
        session, ledger, selection = _select(state, listed)
    _scan(state, selection)
    if _add_referenced_containers(state, selection) and session is not None:
        session = _reopened(state, session)
        if session is None:
            return "branch-moved"
    with state.timer("plan"):
        parts, selection = _planned(state, selection, session, ledger)
    if not any(part.new or part.changed for part in parts):
        snapshot_id = session.snapshot_id if session else None
        _expire_journal(pipeline, selection)
        return state.result(
            "nothing-new", parts, selection, attempt=attempt, snapshot_id=snapshot_id
        )
    if session is None:
        session = _create(state)
        if session is None:
            return "created-meanwhile"  # another run created the repository: re-plan
    with state.timer("write"):
        layout: dict[str, Any] = {}
        for part in parts:
            layout = ingest.write_part(pipeline, session, part) or layout
        # The write freed its Python objects (combined references, path lists) into the C
        # heap, where Icechunk's allocations at commit do not reuse all of it: handed back
        # first, the commit's peak does not stack on them (benchmarks/memory.py).
        allocator.release_freed_memory()
    records, files = _file_records(parts)
    fallback = _fallback(parts)
    metadata = {repository.METADATA_KEY: _ledger(state, parts, records, layout, fallback)}
    snapshot_id = _commit(
        state, session, _message(pipeline, parts, len(files)), metadata, files, last=last
    )
    if snapshot_id is None:
        return "branch-moved"
    _expire_journal(pipeline, selection, files)
    for part in parts:
        # For the summary: variables and dimensions, no values.
        part.existing = _stored_schema(pipeline, session, part.group, values="none")
    return state.result(
        "committed",
        parts,
        selection,
        attempt=attempt,
        snapshot_id=snapshot_id,
        files=files,
        fallback=fallback,
    )


def _list(state: _Run) -> list[SourceFile]:
    """The list stage: the source files the pipeline's URLs name now."""
    src = state.pipeline.source
    with state.timer("list"):
        listed = sources.list_sources(
            src.urls,
            is_glob=src.is_glob,
            storage=src.storage,
            unreadable=state.skipped if state.pipeline.on_error == "skip" else None,
        )
    # One file per folder is enough: a container covers a folder (the part of a reference URL
    # before its last "/", which percent-encoding neither adds nor removes).
    by_folder = {f.url.rsplit("/", 1)[0]: f.url for f in listed}
    state.containers = repository.container_prefixes(reference_url(u) for u in by_folder.values())
    state.started_at = datetime.now(UTC).isoformat()
    return listed


def _select(
    state: _Run, listed: list[SourceFile]
) -> tuple[icechunk.Session | None, Mapping[str, FileRecord], plan.Selection]:
    """The select stage: the branch tip's ledger, and the listed files it does not hold yet.

    The repository is created only later, when there is something valid to commit, so a first
    run on bad files leaves nothing behind: before that, the session is ``None``.
    """
    pipeline = state.pipeline
    repo = _open_if_exists(pipeline, state.containers)
    session = repository.writable_session(repo, pipeline.target.branch) if repo else None
    ledger = (
        repository.read_ledger(repo, session.snapshot_id, pipeline.target.group)
        if repo and session
        else {}
    )
    selection = plan.select_new(listed, ledger, on_changed=pipeline.on_changed)
    if pipeline.source.is_glob:
        state.missing = tuple(
            sources.missing_since_ingest(pipeline.source.urls[0], listed, list(ledger))
        )
    return session, ledger, selection


def _scan(state: _Run, selection: plan.Selection) -> None:
    """The scan stage: scan the selected files not scanned by an earlier attempt (on the
    cluster, started here when first needed: a run with nothing new costs no start-up; or in
    this process when the run is small, see :func:`_scans_in_process`)."""
    todo = [*selection.new, *(f for f, _ in selection.changed)]
    to_scan = [f for f in todo if f.url not in state.scanned and f.url not in state.skipped]
    if not to_scan:
        return
    journal = _journal(state.pipeline)
    if _scans_in_process(state, to_scan, journal):
        with state.timer("scan"), journal.working_on([f.url for f in to_scan]):
            done, failed = _scan_here(state.pipeline, to_scan)
        state.cluster_info = state.cluster_info or execute.IN_PROCESS
    else:
        if state.client is None:
            assert state.stack is not None
            state.client, state.cluster_info = state.stack.enter_context(
                execute.open_client(
                    workers=state.workers,
                    memory_limit=state.memory_limit,
                    choice=state.cluster_choice(),
                    search_path=state.pipeline.source.search_path,
                )
            )
            state.timer.client = state.client
        with state.timer("scan"):
            n_workers = state.cluster_info.n_workers if state.cluster_info else 1
            done, failed = _scan_files(
                state.client, state.pipeline, to_scan, state.run_id, n_workers
            )
            # Unpickling the results leaves CPython's free lists full (up to 2,000 tuples of
            # each length: one per unpickled slotted dataclass) and the comm's garbage, which
            # only a full collection frees: planning and the write reuse it, not add to it.
            gc.collect()
    state.scanned.update({f.url: s for f, s in done})
    state.skipped.update({f.url: str(e) for f, e in failed})


def _add_referenced_containers(state: _Run, selection: plan.Selection) -> bool:
    """Add the folders that the scanned references point into, and that the listing's
    containers miss, to ``state.containers``; whether any was added.

    Kerchunk reference sets point into other files than themselves (which the list stage
    cannot know without reading them): their containers come from their references.
    """
    if state.pipeline.source.format != "kerchunk":
        return False
    found: set[str] = set()
    for f in [*selection.new, *(f for f, _ in selection.changed)]:
        scanned = state.scanned.get(f.url)
        if scanned is None:
            continue
        one = scanned.cubes.values() if isinstance(scanned, sources.ScannedCubes) else [scanned]
        for s in one:
            found.update(repository.virtual_locations(s.dataset))
    missing = [p for p in found if not any(p.startswith(c) for c in state.containers)]
    if missing:
        state.containers = repository.container_prefixes([*state.containers, *missing])
    return bool(missing)


def _reopened(state: _Run, session: icechunk.Session) -> icechunk.Session | None:
    """A new session on the branch, its repository opened with ``state.containers`` (Icechunk
    refuses references outside the containers a session was opened with); ``None`` when the
    branch moved since ``session`` was opened (re-plan)."""
    pipeline = state.pipeline
    repo = _open_if_exists(pipeline, state.containers)
    fresh = repository.writable_session(repo, pipeline.target.branch) if repo else None
    if fresh is None or fresh.snapshot_id != session.snapshot_id:
        return None
    return fresh


#: Formats scanned in process by small runs. GRIB always scans on workers: its virtual
#: ingests may write variables natively (the fallback), which takes the cluster anyway.
_IN_PROCESS_FORMATS = ("netcdf3", "netcdf4", "zarr", "kerchunk")


def _journal(pipeline: Pipeline) -> execute.CrashJournal:
    t = pipeline.target
    return execute.CrashJournal(f"{t.repo}\n{t.branch}\n{t.group}\n{pipeline.name}")


def _expire_journal(
    pipeline: Pipeline, selection: plan.Selection, committed: Sequence[SourceFile] = ()
) -> None:
    """Drop the crash-journal entries of dead runs whose files are now all ingested (already,
    or by this run's commit), and those older than the journal's age limit."""
    done = {f.url for f in selection.already} | {f.url for f in committed}
    _journal(pipeline).expire(done)


def _scans_in_process(
    state: _Run, to_scan: Sequence[SourceFile], journal: execute.CrashJournal
) -> bool:
    """Whether to scan ``to_scan`` in this process rather than start a cluster for it.

    Only when no cluster was given or asked for (``client``, a scheduler address or a cluster
    factory from any origin: :func:`icepipe.execute.choose_cluster`, ``workers``), the
    ingest is virtual (native writes run on the workers anyway), there are at most
    :data:`icepipe.execute.IN_PROCESS_MAX_ITEMS` files, each is netCDF or Zarr, and none was
    being scanned in process by a run that died (:class:`icepipe.execute.CrashJournal`: such
    files go to workers, where a crashing parser kills a worker only and is named).
    """
    p = state.pipeline
    if state.client is not None or state.workers is not None:
        return False
    if state.cluster_choice().configured:
        return False
    if p.mode != "virtual":
        return False
    if len(to_scan) > execute.IN_PROCESS_MAX_ITEMS:
        return False
    formats: set[str] = set()
    if p.source.format != "auto":
        formats.add(p.source.format)
    else:
        try:
            formats.update(sources.detect_format(f.url, p.source.storage) for f in to_scan)
        except IcepipeError:
            return False  # the workers' scan reports it, as for any run
    if not formats <= set(_IN_PROCESS_FORMATS) or not journal.usable():
        return False
    suspects = journal.suspects()
    return not any(f.url in suspects for f in to_scan)


def _planned(
    state: _Run, selection: plan.Selection, session: Any, ledger: Mapping[str, FileRecord]
) -> tuple[list[ingest.Part], plan.Selection]:
    """The scanned files split into parts and planned (nothing planned when nothing is new),
    and the selection they come from.

    With ``on_error: skip``, a file planning refuses on its own (a late file with no room left
    on the axis, as a file skipped before and repaired after later ones were appended; a
    duplicate of an ingested file; a schema other than the stored one) is left out as files
    that cannot be read are, naming why, and the others are planned again: one such file must
    not stop every later run. A refusal naming several files of this run (two new files that
    disagree: which one is wrong?) still fails the run.
    """
    pipeline = state.pipeline
    while True:
        try:
            parts = _parts(pipeline, selection, state.scanned, session, ledger)
            _with_order_values(pipeline, session, parts, ledger)
            if any(part.new or part.changed for part in parts):
                _plan(pipeline, parts)
            return parts, selection
        except SourceError as exc:
            mine = {f.url for f in (*selection.new, *(f for f, _ in selection.changed))}
            refused = set(exc.urls) & mine
            if pipeline.on_error != "skip" or len(refused) != 1:
                raise
            state.skipped.update(dict.fromkeys(sorted(refused), str(exc)))
            selection = plan.Selection(
                new=tuple(f for f in selection.new if f.url not in refused),
                already=selection.already,
                changed=tuple((f, r) for f, r in selection.changed if f.url not in refused),
            )


def _plan(pipeline: Pipeline, parts: list[ingest.Part]) -> None:
    """The plan stage: where each part's new files go (appended, or into regions left on the
    axis) and where its changed files go back (see :mod:`icepipe.plan`)."""
    src = pipeline.source
    virtual = pipeline.mode == "virtual"
    for part in parts:
        part.append_plan = (
            plan.plan_append(
                [s.schema for s in part.new],
                part.existing,
                src.concat_dim,
                order_by=src.order_by,
                virtual=virtual,
                ledger_slots=part.ledger_slots,
            )
            if part.new
            else plan.AppendPlan(order=(), append=True, new_length=0)
        )
        part.reingest = [
            plan.plan_reingest(
                s.schema, r, part.existing, src.concat_dim, virtual=virtual, order_by=src.order_by
            )
            for s, r in part.changed
        ]


def _create(state: _Run) -> icechunk.Session | None:
    """Create the repository of a first run; ``None`` when another run created it (and
    committed to it) meanwhile."""
    t, src = state.pipeline.target, state.pipeline.source
    repo = repository.open_repo(
        t.repo,
        create=True,
        containers=state.containers,
        storage=t.storage,
        source_storage=src.storage,
        config=t.config,
    )
    session = repository.writable_session(repo, t.branch)
    if repository.read_ledger(repo, session.snapshot_id, t.group):
        return None
    state.created = True
    return session


def _ledger(
    state: _Run,
    parts: list[ingest.Part],
    records: tuple[FileRecord, ...],
    layout: Mapping[str, Any],
    fallback: Mapping[str, str],
) -> dict[str, Any]:
    """The commit's ledger entry (under ``repository.METADATA_KEY``): the run's provenance and
    one record per ingested file (:mod:`icepipe.repository.ledger`)."""
    pipeline, src = state.pipeline, state.pipeline.source
    record = repository.CommitRecord(
        version=__version__,
        pipeline=pipeline.name,
        pipeline_file=pipeline.path,
        mode=pipeline.mode,
        group=pipeline.target.group or "",
        concat_dim=src.concat_dim,
        order_by=src.order_by,
        run_id=state.run_id,
        started_at=state.started_at,
        cluster=state.ledger_cluster(),
        files=records,
        reingested=tuple(s.url for part in parts for s in part.reingest),
        skipped=tuple(SkippedFile(u, r) for u, r in state.skipped.items()),
        cubes=tuple(p.cube for p in parts if p.cube) if src.grib_cubes is not None else None,
        native_fallback=dict(fallback) or None,
        layout=NativeLayout(**layout) if layout else None,
    )
    return record.to_metadata()


def _message(pipeline: Pipeline, parts: list[ingest.Part], n: int) -> str:
    """The commit message: ``icepipe NAME: append 3 files into /``."""
    verb = (
        "append" if all(p.append_plan is None or p.append_plan.append for p in parts) else "ingest"
    )
    into = pipeline.target.group or "/"
    if pipeline.source.grib_cubes is not None:
        into = f"{len([p for p in parts if p.new or p.changed])} hypercube group(s) of {into}"
    return f"icepipe {pipeline.name}: {verb} {n} file{'s' if n != 1 else ''} into {into}"


def _commit(
    state: _Run,
    session: icechunk.Session,
    message: str,
    metadata: dict[str, Any],
    files: list[SourceFile],
    *,
    last: bool,
) -> str | None:
    """The commit stage: commit unless a source file changed while the run read it; return the
    snapshot id, or ``None`` when the branch moved and the run must re-plan.

    Raises
    ------
    SourceError
        A file was deleted, truncated or replaced while this run read it.
    ConflictError
        The branch moved under the last attempt.
    """
    t, src = state.pipeline.target, state.pipeline.source
    with state.timer("commit"):
        # A file deleted, truncated or replaced while this run read it must not be
        # recorded as ingested (its references would point at nothing, or elsewhere).
        gone = sources.changed_since_listing(files, src.storage)
    if gone:
        raise SourceError(
            f"{len(gone)} source file(s) changed while this run read them, so nothing "
            "was committed: "
            + "; ".join(f"{u}: {why}" for u, why in list(gone.items())[:5])
            + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            + ". Run again once the files are complete (the next run lists them anew)",
            urls=list(gone),
        )
    try:
        with state.timer("commit"), execute.interrupts_deferred(drop=True):
            return repository.commit(
                session, message=message, metadata=metadata, lock=t.repo, where="target.repo"
            )
    except ConflictError as exc:
        # Someone else moved the branch and our change could not be rebased onto it (e.g.
        # both appended to the same arrays): redo against the new tip.
        if not last:
            return None
        if isinstance(exc, StaleWriteError) or exc.conflicts:
            raise ConflictError(
                f"branch {t.branch!r} of {t.repo!r} moved while this run was writing and the "
                "change could not be rebased onto it; re-run to write against the new tip",
                conflicts=exc.conflicts,
            ) from exc
        raise


def _stored_schema(
    pipeline: Pipeline,
    session: Any,
    group: str | None,
    *,
    values: Literal["ends", "all", "none"] = "ends",
) -> TargetSchema:
    src = pipeline.source
    if session is None:
        return TargetSchema()
    return repository.read_target_schema(
        session, group, src.concat_dim, order_by=src.order_by, values=values
    )


def _with_order_values(
    pipeline: Pipeline, session: Any, parts: list[ingest.Part], ledger: Mapping[str, FileRecord]
) -> None:
    """Read every stored value of the ordering variable, and where the ledger places each
    ingested file, for the parts whose files need them (late arrivals, changed files:
    :func:`icepipe.plan.needs_order_values`); the others keep the stored range's ends, so
    that planning an append reads neither the whole axis nor every ledger record's place."""
    src = pipeline.source
    for part in parts:
        if plan.needs_order_values(
            [s.schema for s in part.new],
            len(part.changed),
            part.existing,
            src.concat_dim,
            order_by=src.order_by,
        ):
            part.existing = _stored_schema(pipeline, session, part.group, values="all")
            part.ledger_slots = plan.ledger_slots(ledger, cube=part.cube)


def _parts(
    pipeline: Pipeline,
    selection: plan.Selection,
    scanned: Mapping[str, sources.ScannedFile | sources.ScannedCubes],
    session: Any,
    ledger: Mapping[str, FileRecord],
) -> list[ingest.Part]:
    """Split the scanned new (and changed) files by target group, each with its stored schema:
    the pipeline's group, or one subgroup per GRIB hypercube (:func:`icepipe.plan.plan_cubes`),
    including those stored already (reported)."""
    src, group = pipeline.source, pipeline.target.group

    def steps(files: Sequence[sources.ScannedFile]) -> list[sources.ScannedFile]:
        if not files:  # nothing new: no need to import the combining code (xarray)
            return []
        return sources.assemble_steps(
            list(files),
            src.concat_dim,
            stack_dims=src.stack_dims,
            merge=src.merge,
            order_by=src.order_by,
        )

    if src.grib_cubes is None:
        new = [scanned[f.url] for f in selection.new if f.url in scanned]
        changed = [(scanned[f.url], r) for f, r in selection.changed if f.url in scanned]
        return [
            ingest.Part(
                cube=None,
                group=group,
                existing=_stored_schema(pipeline, session, group),
                new=steps([s for s in new if isinstance(s, sources.ScannedFile)]),
                changed=[(s, r) for s, r in changed if isinstance(s, sources.ScannedFile)],
                ledger_slots=[],  # read by _with_order_values when late files need them
            )
        ]
    cube_type = sources.ScannedCubes
    cubes = plan.plan_cubes(
        [s.cubes for f in selection.new if isinstance(s := scanned.get(f.url), cube_type)],
        [
            (f.url, s.cubes, r)
            for f, r in selection.changed
            if isinstance(s := scanned.get(f.url), cube_type)
        ],
        repository.ledger_cubes(ledger.values()),
    )
    return [
        ingest.Part(
            cube=name,
            group=repository.subgroup(group, name),
            existing=_stored_schema(pipeline, session, repository.subgroup(group, name)),
            new=steps(files.new),
            changed=list(files.changed),
            ledger_slots=[],
        )
        for name, files in cubes.items()
    ]


def _file_records(parts: list[ingest.Part]) -> tuple[tuple[FileRecord, ...], list[SourceFile]]:
    """The ledger records of a commit (one per source file) and the files ingested, in order.

    Files of one group record their place (``start``, ``length``) along the concat dimension;
    with ``grib_cubes`` a file's place in each hypercube group is under ``cubes``.
    """
    records: dict[str, FileRecord] = {}
    cubes: dict[str, dict[str, tuple[int, int]]] = {}
    files: dict[str, SourceFile] = {}
    for part in parts:
        by_url = part.by_url
        for slot in part.slots:
            for f in by_url[slot.url].sources:
                files.setdefault(f.url, f)
                if part.cube is None:
                    records[f.url] = FileRecord.of(f, start=slot.start, length=slot.length)
                else:
                    cubes.setdefault(f.url, {})[part.cube] = (slot.start, slot.length)
                    records[f.url] = FileRecord.of(files[f.url], cubes=cubes[f.url])
    return tuple(records.values()), list(files.values())


def _fallback(parts: list[ingest.Part]) -> dict[str, str]:
    """Variables written natively inside a virtual ingest (``cube/var`` with grib_cubes)."""
    out: dict[str, str] = {}
    for part in parts:
        for s in [*part.new, *(c for c, _ in part.changed)]:
            for name, reason in s.fallback.items():
                out.setdefault(repository.subgroup(part.cube, name), reason)
    return out


def _variables(parts: list[ingest.Part]) -> tuple[str, ...]:
    return tuple(
        sorted(repository.subgroup(p.cube, v) for p in parts for v in p.existing.variables)
    )


def _dims(parts: list[ingest.Part]) -> dict[str, int]:
    if len(parts) == 1 and parts[0].cube is None:
        return dict(parts[0].existing.dims)
    return {repository.subgroup(p.cube, d): n for p in parts for d, n in p.existing.dims.items()}


def _scan_files(
    client: Any,
    pipeline: Pipeline,
    files: list[SourceFile],
    run_id: str,
    n_workers: int,
) -> tuple[
    list[tuple[SourceFile, sources.ScannedFile | sources.ScannedCubes]],
    list[tuple[SourceFile, SourceError]],
]:
    """Scan ``files`` on the cluster in batches; return what was scanned and what failed.

    A batch whose worker died (a parser crashing the process) is scanned again file by file,
    so the error names the file that kills workers.
    """
    src = pipeline.source
    options = sources.ScanOptions.from_source(src, pipeline.mode)
    done, crashed = execute.run_tasks_collect(
        client,
        sources.scan_batch,
        execute.batches(files, n_workers),
        describe=lambda b: ", ".join(f.url for f in b),
        key=f"scan-{run_id}",
        isolate=False,  # crashed batches are scanned again file by file below
        transform=_with_listed,  # each batch as it arrives: one raw result held at a time
        options=options,
    )
    retried, failed = execute.run_tasks_collect(
        client,
        sources.scan_file,
        [f for batch, _ in crashed for f in batch],
        describe=_url,
        key=f"rescan-{run_id}",
        options=options,
    )
    scanned = [(f, s) for batch, b in done for f, s in zip(batch, b.results, strict=True)]
    return _scan_outcome(pipeline, [*scanned, *retried], failed)


def _with_listed(batch: list[SourceFile], b: sources.ScanBatch) -> sources.ScanBatch:
    """A batch's scans with the listed files, not the worker's copies of them: one object per
    file on the client (the copies are dropped as each batch arrives)."""
    return sources.ScanBatch(
        [
            replace(s, source=f) if isinstance(s, sources.ScannedFile) else s
            for f, s in zip(batch, b.results, strict=True)
        ]
    )


def _scan_here(
    pipeline: Pipeline, files: list[SourceFile]
) -> tuple[
    list[tuple[SourceFile, sources.ScannedFile | sources.ScannedCubes]],
    list[tuple[SourceFile, SourceError]],
]:
    """Scan ``files`` in this process: what was scanned and what failed, as
    :func:`_scan_files` returns them (the same task function, without the cluster)."""
    options = sources.ScanOptions.from_source(pipeline.source, pipeline.mode)
    results = sources.scan_files(files, options)
    return _scan_outcome(pipeline, list(zip(files, results, strict=True)), [])


def _scan_outcome(
    pipeline: Pipeline,
    scanned: list[tuple[SourceFile, sources.ScannedFile | sources.ScannedCubes | SourceError]],
    failed: list[tuple[SourceFile, SourceError]],
) -> tuple[
    list[tuple[SourceFile, sources.ScannedFile | sources.ScannedCubes]],
    list[tuple[SourceFile, SourceError]],
]:
    """Split scan results into the files scanned and the files that failed (raised together
    with ``on_error: fail``).

    A file that failed and is no longer the version listed was changed while this run read it
    (most often still being copied or written): its error says so, rather than calling the
    file corrupt.
    """
    ok = [(f, s) for f, s in scanned if not isinstance(s, SourceError)]
    failed = [*failed, *((f, s) for f, s in scanned if isinstance(s, SourceError))]
    if failed:
        moved = sources.changed_since_listing([f for f, _ in failed], pipeline.source.storage)
        failed = [
            (f, _changed_while_read(f, moved[f.url], e) if f.url in moved else e) for f, e in failed
        ]
    if pipeline.on_error == "fail":
        execute.raise_source_errors([e for _, e in failed])
    return ok, failed


def _changed_while_read(f: SourceFile, why: str, error: SourceError) -> SourceError:
    return SourceError(
        f"{f.url}: {why} while this run read it, so it was not ingested (is it still being "
        "written or copied?); the next run lists it anew and ingests it once it is complete. "
        f"Reading it failed with: {error}",
        url=f.url,
    )


def _url(f: SourceFile) -> str:
    return f.url


def _open_if_exists(pipeline: Pipeline, containers: list[str]) -> icechunk.Repository | None:
    t = pipeline.target
    try:
        return repository.open_repo(
            t.repo,
            create=False,
            containers=containers,
            storage=t.storage,
            source_storage=pipeline.source.storage,
            config=t.config,
        )
    except repository.RepoNotFoundError:
        return None
