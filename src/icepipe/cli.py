"""The ``icepipe`` command line (the only module importing argparse): thin commands over
:mod:`icepipe.ops` and :mod:`icepipe.repository`.

Exit codes (for schedulers): 0 success (also "nothing new", unless ``icepipe run
--nothing-new-exit-code N``), 1 unexpected error, 2 bad configuration or arguments, 3 bad
source data, 4 conflict (retry later), 5 transient storage or cluster error (retry), 6
validation failed (stored data differs from the sources), 130 interrupted.

The operations commands (status, validate, schedule, repo, diff, tag, branch, info) parse
their arguments here and call into :mod:`icepipe.ops`, which also renders their output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from icepipe import __version__
from icepipe.errors import IcepipeError

if TYPE_CHECKING:
    from icepipe.web.config import WebConfig

__all__ = ["main"]

if "__mp_main__" in sys.modules:
    # This process is a Dask worker the embedded cluster spawned: multiprocessing imports the
    # parent's main module (this one, or the script importing it) first thing. A terminal's
    # Ctrl-C reaches the whole process group; the run itself stops the workers, so they must
    # not die printing KeyboardInterrupt tracebacks of their own.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fmt_dims(dims: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items()) or "-"


#: Exit codes with a meaning of their own, which --nothing-new-exit-code must not reuse.
_RESERVED_EXIT_CODES = (1, 2, 3, 4, 5, 6, 130)


def _cmd_run(args: argparse.Namespace) -> int:
    from icepipe.errors import ConfigError
    from icepipe.ops.runner import run_pipeline_file

    nothing_new = args.nothing_new_exit_code
    if not 0 <= nothing_new <= 255 or nothing_new in _RESERVED_EXIT_CODES:
        raise ConfigError(
            f"expected 0 or a code in 7..255 other than 130 (1-6 and 130 mean errors); got "
            f"{nothing_new}",
            field="--nothing-new-exit-code",
        )
    outcome = run_pipeline_file(
        args.pipeline,
        workers=args.workers,
        scheduler=args.scheduler,
        cluster=args.cluster,
        memory_limit=args.memory_limit,
        state=args.state_dir,
        stage=args.stage,
        stage_sample=args.stage_sample,
        progress=args.progress,
        nothing_new_exit_code=nothing_new,
        argv=sys.argv,
    )
    pipeline, result = outcome.pipeline, outcome.result
    if args.json:
        doc = {**asdict(result), "exit_code": outcome.exit_code}
        report = str(outcome.report_file) if outcome.report_file else None
        print(json.dumps({**doc, "report_file": report}, indent=2, default=str))
        return outcome.exit_code
    where = f"{result.repo} [{result.branch}] {result.group or '/'}"
    for url, reason in result.files_skipped.items():
        print(f"{pipeline.name}: skipped {url} (retried next run): {reason}", file=sys.stderr)
    if result.files_missing:
        shown = ", ".join(result.files_missing[:5])
        more = f" and {len(result.files_missing) - 5} more" if len(result.files_missing) > 5 else ""
        consequence = (
            "reads of their data fail until they are restored"
            if pipeline.mode == "virtual"
            else "their data stay in the repository"
        )
        print(
            f"{pipeline.name}: {len(result.files_missing)} ingested file(s) no longer exist in "
            f"the sources (deleted or moved since): {shown}{more}; {consequence}",
            file=sys.stderr,
        )
    if result.status == "nothing-new":
        print(
            f"{pipeline.name}: nothing new ({result.files_already} file(s) already ingested) "
            f"in {where}; snapshot {result.snapshot_id}"
        )
        return outcome.exit_code
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.stages.items())
    variables = f"  variables  {', '.join(result.variables)}\n"
    dimensions = f"  dimensions {_fmt_dims(result.dims)}\n"
    if result.groups:
        # One line per hypercube group instead of hundreds of qualified names.
        variables = "".join(
            f"  group      {group}: {', '.join(names)} ({_fmt_dims(dims)})\n"
            for group, (names, dims) in result.by_group().items()
        )
        dimensions = ""
    fallback = "".join(
        f"  native     {name} (GRIB fallback, copied not referenced: {reason})\n"
        for name, reason in result.native_fallback.items()
    )
    print(
        f"{pipeline.name}: ingested {len(result.files_new)} new file(s) "
        f"({result.files_already} already present) into {where}\n"
        f"  snapshot   {result.snapshot_id}\n"
        f"{variables}{dimensions}{fallback}"
        f"  mode       {pipeline.mode}, {_ran_on(result.cluster)}\n"
        f"  time       {result.seconds:.2f}s ({stages})\n"
        f"  report     {outcome.report_file or 'not written (see the warning above)'}"
    )
    return 0


def _open_repo(location: str) -> tuple[Any, str]:
    """The repository a command names, and its default branch: a repository location, or a
    pipeline file (whose ``target`` says how to reach an object-store repository)."""
    from icepipe.repository import open_repo

    if location.endswith((".yaml", ".yml")) and os.path.isfile(location):
        from icepipe.spec import load_pipeline

        pipeline = load_pipeline(location)
        t = pipeline.target
        repo = open_repo(
            t.repo,
            storage=t.storage,
            source_storage=pipeline.source.storage,
            config=t.config,
        )
        return repo, t.branch
    from icepipe.ops.repos import open_location

    # catalog:org/name, a bare org/name the catalog holds, or a location.
    return open_location(location)[0], "main"


def _ran_on(cluster: dict[str, Any]) -> str:
    if cluster.get("address") == "in-process":
        return "scanned in this process (small run: no cluster started)"
    dashboard = f" (dashboard {cluster['dashboard']})" if cluster.get("dashboard") else ""
    return f"{cluster.get('workers', '?')} Dask worker(s){dashboard}"


def _add_alert_options(p: argparse.ArgumentParser) -> None:
    """``icepipe status`` as an alert check (exit codes in docs/operations.md)."""
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 10 if the last run failed, 11 if a scheduled run is late (see "
        "--schedule-grace); implied by --max-age and --max-pending",
    )
    p.add_argument(
        "--max-age",
        default=None,
        metavar="DURATION",
        help="exit 11 (late) when the last successful run is older than this (e.g. 26h)",
    )
    p.add_argument(
        "--max-pending",
        type=_count(minimum=0),
        default=None,
        metavar="N",
        help="exit 12 (behind) when more than N source files are not ingested yet",
    )
    p.add_argument(
        "--schedule-grace",
        default="1h",
        metavar="DURATION",
        help="how long a scheduled run may take before it counts as late (default 1h)",
    )


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster",
        default=None,
        metavar="MODULE:FACTORY",
        help="a function returning a distributed.Client or a cluster object (dask-jobqueue, "
        "dask-kubernetes, dask-gateway, Coiled); default: $ICEPIPE_CLUSTER, else the "
        "pipeline's cluster:, else Dask's scheduler-address, else an embedded LocalCluster",
    )
    p.add_argument(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        help="memory limit per worker of the embedded LocalCluster (e.g. 4GiB; default: the "
        "machine's memory shared among the workers)",
    )


def _cmd_log(args: argparse.Namespace) -> int:
    from icepipe.repository import read_log, resolve_ref

    repo, branch = _open_repo(args.repo)
    at = resolve_ref(repo, args.ref) if args.ref else None
    entries = read_log(repo, args.branch or branch, limit=args.n, snapshot_id=at)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2, default=str))
        return 0
    print(f"{'snapshot':<22} {'written (UTC)':<20} {'pipeline':<18} {'files':>5}  message")
    for e in entries:
        files = "" if e.n_files is None else str(e.n_files)
        print(
            f"{e.id:<22} {e.written_at.strftime('%Y-%m-%d %H:%M:%S'):<20} "
            f"{(e.pipeline or '-'):<18} {files:>5}  {e.message}"
        )
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, *, field: str = "--older-than") -> timedelta:
    """``90s``, ``15m``, ``6h``, ``7d``, ``2w`` (a bare number means seconds)."""
    from icepipe.errors import ConfigError

    t = text.strip().lower()
    unit = t[-1] if t and t[-1] in _UNITS else "s"
    number = t[:-1] if t and t[-1] in _UNITS else t
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(
            f"expected a duration like 90s, 15m, 6h, 7d or 2w; got {text!r}", field=field
        ) from None
    return timedelta(seconds=value * _UNITS[unit])


def _cmd_gc(args: argparse.Namespace) -> int:
    from icepipe.repository import collect_garbage

    older_than = parse_duration(args.older_than)  # bad input fails before any I/O
    repo, _ = _open_repo(args.repo)
    report = collect_garbage(repo, older_than, delete=args.delete)
    if args.json:
        print(json.dumps(asdict(report), indent=2, default=str))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{args.repo}: {verb} {report.chunks} chunk(s), {report.manifests} manifest(s), "
        f"{report.snapshots} snapshot(s), {report.transaction_logs} transaction log(s), "
        f"{report.bytes} bytes unreferenced by any branch or tag and older than "
        f"{report.cutoff:%Y-%m-%d %H:%M:%S} UTC"
    )
    if report.dry_run:
        print("dry run: nothing was deleted; add --delete to delete them")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icepipe",
        description="Ingest netCDF/GRIB/Zarr files into Icechunk repositories on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"icepipe {__version__}")
    parser.add_argument(
        "--catalog",
        default=None,
        help="repository catalog file (default: $ICEPIPE_CATALOG, else "
        "~/.config/icepipe/catalog.yaml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run a pipeline: ingest new source files in one commit")
    p_run.add_argument("pipeline", help="pipeline definition (YAML)")
    p_run.add_argument(
        "--workers", type=int, default=None, help="workers of the embedded LocalCluster"
    )
    p_run.add_argument(
        "--scheduler", default=None, help="address of an existing Dask scheduler to use instead"
    )
    _add_cluster_options(p_run)
    p_run.add_argument("--json", action="store_true", help="print the run result as JSON")
    _add_run_options(p_run)
    p_run.set_defaults(func=_cmd_run)

    p_log = sub.add_parser("log", help="list the commits of a branch")
    p_log.add_argument(
        "repo", help="repository location, or a pipeline file (for object-store options)"
    )
    p_log.add_argument(
        "--branch", default=None, help="default: main (or the pipeline file's target.branch)"
    )
    p_log.add_argument("--ref", default=None, help="a tag, snapshot id or REF~N instead")
    p_log.add_argument("-n", type=int, default=None, help="show at most N commits")
    p_log.add_argument("--json", action="store_true")
    p_log.set_defaults(func=_cmd_log)

    p_gc = sub.add_parser(
        "gc",
        help="find (or --delete) chunks and manifests of runs that never committed",
        description="Garbage-collect objects no branch or tag references (left by failed or "
        "killed runs). Dry run unless --delete. History is never expired: commit metadata is "
        "the ledger of ingested files.",
    )
    p_gc.add_argument(
        "repo", help="repository location, or a pipeline file (for object-store options)"
    )
    p_gc.add_argument(
        "--older-than",
        default="1d",
        help="only objects older than this (default 1d); keep it longer than your longest run",
    )
    p_gc.add_argument("--delete", action="store_true", help="delete (default: dry run)")
    p_gc.add_argument("--json", action="store_true")
    p_gc.set_defaults(func=_cmd_gc)
    _add_ops_commands(sub)
    from icepipe.ops.export import add_export_command

    add_export_command(sub, _open_repo)
    _add_web_command(sub)
    return parser


def _add_web_command(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="a read-only web catalog: repositories, history, arrays, pipelines, search",
    )
    p.add_argument(
        "pipelines",
        nargs="*",
        help="folders or files of pipelines whose repositories and runs are shown too",
    )
    p.add_argument("--catalog", dest="web_catalog", default=None, help="catalog file")
    p.add_argument("--state-dir", default=None, help="where run reports are (as for status)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--port", type=_count(minimum=0), default=8000, help="default 8000")
    p.add_argument(
        "--read-threads",
        type=_count(minimum=1),
        default=8,
        help="threads reading repositories (default 8)",
    )
    p.add_argument(
        "--max-waiting",
        type=_count(minimum=0),
        default=64,
        help="reads that may wait for a thread before requests get 503 busy (default 64)",
    )
    p.add_argument(
        "--request-timeout",
        type=_seconds,
        default=20.0,
        help="seconds a request may spend reading a repository before a 504 (default 20)",
    )
    p.set_defaults(func=_cmd_web)


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text}")
    return value


def _cmd_web(args: argparse.Namespace) -> int:
    from icepipe.errors import ConfigError

    try:
        from icepipe.web.server import serve
    except ImportError as exc:
        raise ConfigError(
            f"icepipe web needs the web extra ({exc.name} is missing): pip install 'icepipe[web]'"
        ) from None
    if args.web_catalog:
        from icepipe.catalog import CATALOG_ENV

        os.environ[CATALOG_ENV] = args.web_catalog
    serve(web_config(args), host=args.host, port=args.port)
    return 0


def web_config(args: argparse.Namespace) -> WebConfig:
    """The web server's settings from ``icepipe web``'s arguments (needs the web extra)."""
    from icepipe.web.config import WebConfig

    return WebConfig(
        pipelines=tuple(args.pipelines),
        catalog=args.web_catalog,
        state_dir=args.state_dir,
        workers=args.read_threads,
        max_waiting=args.max_waiting,
        request_timeout=args.request_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``icepipe`` command; returns the exit code.

    Run as the program (``argv`` not given), it leaves without interpreter finalization once
    the command is done (:func:`_leave`).
    """
    code = _main(argv)
    if argv is None:
        _leave(code)
    return code


def _leave(code: int) -> None:
    """Exit now, with ``code``, after flushing output and logs.

    A native runtime a run loads (HDF5 for the netCDF4 files small runs scan in this process,
    the Tokio runtimes of Icechunk and obstore) can crash while Python tears its modules down,
    turning a committed run into exit -11 (SIGSEGV); the tests' process leaves the same way
    (``tests/conftest.py``). Everything a command does is finished by then: its cluster is
    closed, its commit made, its report written.
    """
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.catalog:
        from icepipe.catalog import CATALOG_ENV

        # The environment carries it to pipeline loading and to scheduled runs' processes.
        os.environ[CATALOG_ENV] = args.catalog
    previous = _stop_on_sigterm()
    try:
        code: int = args.func(args)
        return code
    except IcepipeError as exc:
        print(f"icepipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        how = f" ({exc.args[0]})" if exc.args else ""
        print(f"icepipe: interrupted{how}; nothing was committed", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM: what Kubernetes, systemd and batch schedulers send to stop a process. Handled
    like Ctrl-C: the run stops before committing, reports itself interrupted, exits 130."""


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` (main thread only); return the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


# ----------------------------------------------------------------------------------------------
# Operations commands (icepipe.ops): run options, status, validate, schedule, repo, history, info
# ----------------------------------------------------------------------------------------------


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        default=None,
        help="where run reports go (default: $ICEPIPE_STATE_DIR, else .icepipe/ beside the "
        "pipeline file)",
    )
    p.add_argument(
        "--nothing-new-exit-code",
        type=int,
        default=0,
        metavar="N",
        help="exit with N (7-255) instead of 0 when there was nothing new to ingest",
    )
    p.add_argument(
        "--stage",
        action="store_true",
        help="ingest into a fresh branch stage/NAME-RUNID, validate it there, then move the "
        "target branch to it with a compare-and-set (exit 4 if the branch moved meanwhile)",
    )
    p.add_argument(
        "--stage-sample",
        type=_count(minimum=0),
        default=3,
        metavar="N",
        help="with --stage: how many newly ingested files to validate (default 3; 0: none)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="stage progress on stderr: a bar on a terminal, log lines otherwise (auto)",
    )


def _count(*, minimum: int) -> Any:
    """An argparse type: an integer of at least ``minimum`` (argparse exits 2 naming it)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer of at least {minimum}; got {value}"
            )
        return value

    return parse


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _cmd_status(args: argparse.Namespace) -> int:
    from icepipe.errors import ConfigError
    from icepipe.ops.render import render_status
    from icepipe.ops.status import alert_exit_code, check_alerts, find_pipelines, pipeline_status
    from icepipe.spec import load_pipeline

    checks = {
        "max_age": parse_duration(args.max_age, field="--max-age") if args.max_age else None,
        "max_pending": args.max_pending,
        "grace": parse_duration(args.schedule_grace, field="--schedule-grace"),
    }
    alerting = args.check or args.max_age is not None or args.max_pending is not None
    statuses, errors, alerts = [], [], []
    files = find_pipelines(args.path)
    if not files:
        raise ConfigError(f"no pipeline files (*.yaml, *.yml) in {args.path!r}")
    for f in files:
        try:
            pipeline = load_pipeline(f)
        except IcepipeError as exc:
            if len(files) == 1:
                raise
            errors.append(f"{f}: {exc}")
            continue
        statuses.append(pipeline_status(pipeline, state=args.state_dir, runs=args.runs))
        if alerting:
            alerts += check_alerts(statuses[-1], pipeline, **checks)
    if args.json:
        doc = {"pipelines": [asdict(s) for s in statuses], "errors": errors}
        _print_json({**doc, "alerts": [asdict(a) for a in alerts]} if alerting else doc)
    else:
        print(render_status(statuses, errors), end="")
        for a in alerts:
            print(f"ALERT {a.pipeline}: {a.kind}: {a.reason}")
    return alert_exit_code(alerts)


def _cmd_validate(args: argparse.Namespace) -> int:
    from icepipe.ops.render import render_validation
    from icepipe.ops.validate import validate_pipeline
    from icepipe.spec import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    report = validate_pipeline(
        pipeline, sample=None if args.all else args.sample, branch=args.branch, ref=args.ref
    )
    if args.json:
        _print_json(asdict(report))
    else:
        print(render_validation(report), end="")
    return 0


def _until(text: str | None) -> Any:
    """``--until``: an ISO time (UTC unless it says otherwise) or a duration from now."""
    from datetime import UTC, datetime

    from icepipe.errors import ConfigError

    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        return datetime.now(UTC) + parse_duration(text)
    except ConfigError:
        raise ConfigError(
            f"expected an ISO time (2026-01-01T02:00) or a duration (90s, 2h); got {text!r}",
            field="--until",
        ) from None


def _pass_through(args: argparse.Namespace) -> list[str]:
    """The options ``schedule serve|export`` hand to every ``icepipe run``, checked first (a
    bad value fails here, not at every fire time)."""
    from icepipe.execute import check_memory_limit, choose_cluster

    choose_cluster(scheduler=args.scheduler, cluster=args.cluster)
    check_memory_limit(args.memory_limit)
    out: list[str] = []
    if args.workers is not None:
        out += ["--workers", str(args.workers)]
    if args.scheduler:
        out += ["--scheduler", args.scheduler]
    if args.cluster:
        out += ["--cluster", args.cluster]
    if args.memory_limit:
        out += ["--memory-limit", args.memory_limit]
    if getattr(args, "nothing_new_exit_code", 0):
        out += ["--nothing-new-exit-code", str(args.nothing_new_exit_code)]
    return out


def _cmd_schedule_serve(args: argparse.Namespace) -> int:
    import logging
    import time as _time
    from pathlib import Path

    from icepipe.ops.reports import state_dir
    from icepipe.ops.schedule import Scheduler, load_scheduled

    until = _until(args.until)
    run_args = _pass_through(args)
    pipelines, notes = load_scheduled(args.path)
    folder = Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent
    state = state_dir(folder / "_", args.state_dir)
    logger = logging.getLogger("icepipe.schedule")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler: logging.Handler = (
        logging.FileHandler(args.log) if args.log else logging.StreamHandler(sys.stderr)
    )
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = _time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    try:
        for note in notes:
            logger.info(note)
        logger.info("state folder %s; %d pipeline(s) scheduled", state, len(pipelines))
        scheduler = Scheduler(
            pipelines,
            state=state,
            run_args=run_args,
            logger=logger,
            max_runs=args.max_runs,
            until=until,
            once=args.once,
            grace=args.grace,
        )
        scheduler.install_signal_handlers()
        return scheduler.serve()
    finally:
        logger.removeHandler(handler)
        handler.close()


def _cmd_schedule_export(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from icepipe.ops.schedule import export_schedules, load_scheduled

    pipelines, _ = load_scheduled(args.path)
    if args.command:
        command = shlex.split(args.command)
    elif args.format == "kubernetes":
        command = ["icepipe"]
    else:
        command = [sys.executable, "-m", "icepipe.cli"]
    kubernetes = _kubernetes_options(args) if args.format == "kubernetes" else None
    files = export_schedules(
        pipelines,
        args.format,
        command=command,
        state=Path(args.state_dir).absolute() if args.state_dir else None,
        run_args=_pass_through(args),
        kubernetes=kubernetes,
    )
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
            print(out / name)
        return 0
    for i, (name, text) in enumerate(files.items()):
        if len(files) > 1:
            print(f"{'' if i == 0 else chr(10)}# ---- {name} ----")
        print(text, end="")
    return 0


def _kubernetes_options(args: argparse.Namespace) -> Any:
    from icepipe.ops.kubernetes import KubernetesOptions, parse_resources

    requests, limits = parse_resources(args.resources) if args.resources else ({}, {})
    return KubernetesOptions(
        image=args.image,
        namespace=args.namespace,
        pipeline_dir=args.pipeline_dir,
        configmap=args.configmap,
        env_from_secrets=tuple(args.env_from_secret),
        requests=requests,
        limits=limits,
        service_account=args.service_account,
        state_dir=args.state_dir,
        state_claim=args.state_claim,
        validate_schedule=args.validate_schedule,
        validate_timezone=args.validate_timezone,
        validate_sample=args.validate_sample,
    )


def _cmd_repo(args: argparse.Namespace) -> int:
    from icepipe.catalog import catalog_path
    from icepipe.ops import repos
    from icepipe.ops.render import render_repo, render_repos

    if args.repo_command == "create":
        entry, created = repos.create_repo(
            args.name,
            args.url,
            description=args.description or "",
            storage=_storage_args(args),
            exists_ok=args.exists_ok,
        )
        verb = "created" if created else "registered the existing repository"
        print(f"{entry.name}: {verb} at {entry.url} (catalog {catalog_path()})")
    elif args.repo_command == "list":
        found = repos.list_repos(check=not args.no_check)
        if args.json:
            _print_json([asdict(r) for r in found])
        else:
            print(render_repos(found, str(catalog_path())), end="")
    elif args.repo_command == "stac":
        return _cmd_repo_stac(args)
    elif args.repo_command == "info":
        info = repos.repo_info(args.name)
        if args.json:
            _print_json(asdict(info))
        else:
            print(render_repo(info), end="")
    else:
        entry = repos.delete_repo(args.name, confirm=args.yes_delete_all_data, forget=args.forget)
        what = "removed from the catalog" if args.forget else f"deleted ({entry.url})"
        print(f"{entry.name}: {what}")
    return 0


def _cmd_repo_stac(args: argparse.Namespace) -> int:
    from icepipe.ops.stac import repo_collection, stac_target

    target = stac_target(args.name, group=args.group, branch=args.branch)
    collection = repo_collection(
        target,
        ref=args.ref,
        collection_id=args.id,
        title=args.title,
        description=args.description,
        license=args.license,
    )
    text = json.dumps(collection.to_dict(), indent=2) + "\n"
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
        snapshot = collection.extra_fields["version"]
        print(f"{args.output}: STAC Collection {collection.id} (snapshot {snapshot})")
    else:
        print(text, end="")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from icepipe.ops.render import render_diff
    from icepipe.repository import diff_refs

    repo, _ = _open_repo(args.repo)
    d = diff_refs(repo, args.a, args.b)
    if args.json:
        _print_json(asdict(d))
    else:
        print(render_diff(d), end="")
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    from icepipe.ops.render import render_refs
    from icepipe.repository import create_tag, list_refs, resolve_ref

    repo, branch = _open_repo(args.repo)
    if args.name is None:
        print(render_refs(list_refs(repo), "tag"), end="")
        return 0
    snapshot = resolve_ref(repo, args.snapshot or f"branch:{branch}")
    create_tag(repo, args.name, snapshot)
    print(f"tag {args.name} -> {snapshot}")
    return 0


def _cmd_branch(args: argparse.Namespace) -> int:
    from icepipe.errors import ConfigError
    from icepipe.ops.render import render_refs
    from icepipe.repository import create_branch, delete_branch, list_refs, resolve_ref

    repo, _ = _open_repo(args.repo)
    words = list(args.words)
    action = words.pop(0) if words else "list"
    if action == "list" and not words:
        refs = list_refs(repo)
        if args.json:
            _print_json([asdict(r) for r in refs])
        else:
            print(render_refs(refs), end="")
    elif action == "create" and len(words) == 2:
        snapshot = resolve_ref(repo, words[1])
        create_branch(repo, words[0], snapshot)
        print(f"branch {words[0]} -> {snapshot}")
    elif action == "delete" and len(words) == 1:
        tip = delete_branch(repo, words[0])
        print(f"deleted branch {words[0]} (was at {tip})")
    else:
        raise ConfigError(
            "expected `branch REPO list`, `branch REPO create NAME FROM` (FROM: a branch, tag "
            f"or snapshot) or `branch REPO delete NAME`; got {' '.join(args.words)!r}"
        )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from icepipe.ops.render import render_tree
    from icepipe.repository import resolve_ref, tree_info

    repo, branch = _open_repo(args.repo)
    ref = args.ref or f"branch:{args.branch or branch}"
    snapshot = resolve_ref(repo, ref)
    nodes = tree_info(repo, snapshot, exact=args.exact)
    if args.json:
        _print_json(
            {
                "snapshot_id": snapshot,
                "nodes": [{**asdict(n), "empty": n.empty} for n in nodes],
            }
        )
    else:
        print(render_tree(nodes, header=f"{args.repo} @ {ref} ({snapshot})"), end="")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from icepipe.errors import ConfigError
    from icepipe.ops.check import check_file
    from icepipe.ops.status import find_pipelines

    files = [f for path in args.paths for f in find_pipelines(path)]
    if not files:
        raise ConfigError(f"no pipeline files (*.yaml, *.yml) in {' '.join(args.paths)!r}")
    found = {str(f): check_file(f, kind=args.kind) for f in files}
    problems = [p for ps in found.values() for p in ps]
    if args.json:
        _print_json({"files": list(found), "problems": [asdict(p) for p in problems]})
    else:
        for name, ps in found.items():
            print("\n".join(map(str, ps)) if ps else f"{name}: ok")
    if problems:
        bad = sum(1 for ps in found.values() if ps)
        raise ConfigError(f"{len(problems)} problem(s) in {bad} of {len(files)} file(s)")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from icepipe.ops.schema import render_schema

    print(render_schema(args.kind), end="")
    return 0


def _add_config_commands(sub: Any) -> None:
    """``check`` and ``schema``: pipeline and catalog files before any run."""
    p = sub.add_parser(
        "check",
        help="load pipeline (or catalog) files without running them; report every problem",
        description="Check pipeline files (or a catalog file: a mapping with 'repos') without "
        "running them: every problem at once, as FILE:LINE:COLUMN, with 'did you mean' for "
        "misspelt keys and values. Exit 2 when any file has a problem.",
    )
    p.add_argument("paths", nargs="+", help="pipeline files or folders of them")
    p.add_argument(
        "--kind",
        choices=("pipeline", "catalog"),
        default=None,
        help="what the files are (default: a catalog when a file has 'repos' and no 'name')",
    )
    p.add_argument("--json", action="store_true", help="print the problems as JSON")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of pipeline (or catalog) files, for editors",
        description="Print the JSON Schema (draft 2020-12) of pipeline or catalog files, "
        "generated from the definitions the loader checks. Editors using the YAML language "
        "server read it from a first line `# yaml-language-server: $schema=PATH`.",
    )
    p.add_argument("kind", nargs="?", choices=("pipeline", "catalog"), default="pipeline")
    p.set_defaults(func=_cmd_schema)


def _add_ops_commands(sub: Any) -> None:
    from icepipe.ops.history_cmds import add_history_edit_commands

    _add_config_commands(sub)
    _add_check_commands(sub)
    _add_schedule_commands(sub)
    _add_repo_commands(sub)
    _add_history_commands(sub)
    add_history_edit_commands(sub)


def _add_check_commands(sub: Any) -> None:
    """``status`` and ``validate``."""
    p = sub.add_parser(
        "status",
        help="last runs, last commit and lag of a pipeline (or a folder of pipelines)",
    )
    p.add_argument("path", help="a pipeline file or a folder of them")
    p.add_argument("--state-dir", default=None, help="where run reports are (see `run`)")
    p.add_argument("--runs", type=int, default=5, help="how many recent runs to show")
    p.add_argument("--json", action="store_true")
    _add_alert_options(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "validate",
        help="re-read ingested data from the repository and compare it with the source files",
    )
    p.add_argument("pipeline", help="pipeline definition (YAML)")
    p.add_argument(
        "--sample",
        type=_count(minimum=1),
        default=3,
        metavar="N",
        help="how many ingested files to compare (default 3)",
    )
    p.add_argument("--all", action="store_true", help="compare every ingested file")
    p.add_argument("--branch", default=None, help="default: the pipeline's target.branch")
    p.add_argument("--ref", default=None, help="a tag, snapshot id or REF~N instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_validate)


def _add_schedule_commands(sub: Any) -> None:
    """``schedule serve`` and ``schedule export``."""
    p_sched = sub.add_parser("schedule", help="run pipelines on their schedule: serve or export")
    sched = p_sched.add_subparsers(dest="schedule_command", required=True)
    p = sched.add_parser(
        "serve",
        help="embedded scheduler: run due pipelines as subprocesses until SIGTERM/SIGINT",
    )
    p.add_argument("path", help="a folder of pipeline files (or one file)")
    p.add_argument("--log", default=None, help="log to this file (default: stderr)")
    p.add_argument("--state-dir", default=None, help="run reports and locks (see `run`)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after N runs finished")
    p.add_argument("--until", default=None, help="stop at a time (ISO) or after a duration")
    p.add_argument(
        "--once", action="store_true", help="stop after the first scheduled runs finished"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="on SIGTERM/SIGINT, seconds to let runs finish before interrupting them",
    )
    p.add_argument("--workers", type=int, default=None, help="passed to every `icepipe run`")
    p.add_argument("--scheduler", default=None, help="passed to every `icepipe run`")
    _add_cluster_options(p)
    p.add_argument("--nothing-new-exit-code", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_schedule_serve)

    p = sched.add_parser(
        "export", help="crontab lines, systemd units or Kubernetes CronJobs calling icepipe run"
    )
    p.add_argument("path", help="a folder of pipeline files (or one file)")
    p.add_argument("--format", choices=("cron", "systemd", "kubernetes"), required=True)
    p.add_argument("--output-dir", default=None, help="write files there instead of stdout")
    p.add_argument(
        "--command",
        default=None,
        help="how to invoke icepipe (default: this Python's `-m icepipe.cli`; `icepipe` for "
        "kubernetes)",
    )
    p.add_argument("--state-dir", default=None, help="--state-dir of every run")
    p.add_argument("--workers", type=int, default=None, help="passed to every `icepipe run`")
    p.add_argument("--scheduler", default=None, help="passed to every `icepipe run`")
    _add_cluster_options(p)
    p.add_argument(
        "--nothing-new-exit-code", type=int, default=0, help="passed to every `icepipe run`"
    )
    p.add_argument("--image", default="icepipe:latest", help="kubernetes: container image")
    p.add_argument("--namespace", default=None, help="kubernetes: namespace")
    p.add_argument(
        "--pipeline-dir", default=None, help="kubernetes: where pipeline files are in the pod"
    )
    p.add_argument(
        "--configmap", default=None, help="kubernetes: ConfigMap holding the pipeline files"
    )
    _add_kubernetes_options(p)
    p.set_defaults(func=_cmd_schedule_export)


def _add_kubernetes_options(p: argparse.ArgumentParser) -> None:
    """``schedule export --format kubernetes``: secrets, resources, identity, validation."""
    p.add_argument(
        "--env-from-secret",
        action="append",
        default=[],
        metavar="SECRET",
        help="kubernetes: a Secret whose keys become environment variables (the credentials "
        "the pipelines' *_env keys name); repeatable",
    )
    p.add_argument(
        "--resources",
        default=None,
        metavar="SPEC",
        help="kubernetes: container resources, e.g. cpu=2,memory=8Gi (requests = limits) or "
        "requests.cpu=1,limits.cpu=2,memory=8Gi",
    )
    p.add_argument("--service-account", default=None, help="kubernetes: the pods' account")
    p.add_argument(
        "--state-claim",
        default=None,
        metavar="PVC",
        help="kubernetes: a PersistentVolumeClaim mounted at --state-dir (run reports)",
    )
    p.add_argument(
        "--validate-schedule",
        default=None,
        metavar="CRON",
        help="kubernetes: also a CronJob per pipeline running `icepipe validate` on this schedule",
    )
    p.add_argument(
        "--validate-timezone",
        default=None,
        help="the zone of --validate-schedule (default: each pipeline's)",
    )
    p.add_argument(
        "--validate-sample",
        type=_count(minimum=1),
        default=None,
        metavar="N",
        help="kubernetes: `icepipe validate --sample N` (default: validate's)",
    )


def _add_repo_commands(sub: Any) -> None:
    """``repo create|list|info|delete``: the catalog."""
    p_repo = sub.add_parser("repo", help="repositories by name: the catalog")
    repo = p_repo.add_subparsers(dest="repo_command", required=True)
    p = repo.add_parser("create", help="create a repository and name it in the catalog")
    p.add_argument("name", help="org/name")
    p.add_argument("url", help="local path or s3://bucket/prefix")
    p.add_argument("--description", default=None)
    p.add_argument(
        "--exists-ok", action="store_true", help="register a repository that already exists"
    )
    _add_storage_options(p)
    p = repo.add_parser("list", help="the catalog's repositories")
    p.add_argument("--no-check", action="store_true", help="do not check that they exist")
    p.add_argument("--json", action="store_true")
    p = repo.add_parser("info", help="a repository's location, branches, tags and containers")
    p.add_argument("name", help="org/name, catalog:org/name or a location")
    p.add_argument("--json", action="store_true")
    p = repo.add_parser(
        "stac",
        help="a STAC Collection whose asset opens the repository (xpystac's Icechunk convention)",
    )
    p.add_argument("name", help="org/name, catalog:org/name, a location, or a pipeline file")
    p.add_argument(
        "--group",
        default=None,
        help="the group described (default: the pipeline's "
        "target.group, else the root or the only group holding data)",
    )
    p.add_argument("--branch", default=None, help="default: main (or the pipeline's branch)")
    p.add_argument("--ref", default=None, help="a tag, snapshot id or REF~N instead")
    p.add_argument("--id", default=None, help="collection id (default: org-name)")
    p.add_argument("--title", default=None)
    p.add_argument("--description", default=None)
    p.add_argument("--license", default="other", help="SPDX id (default: other)")
    p.add_argument("-o", "--output", default=None, help="write the JSON here (default: stdout)")
    p = repo.add_parser("delete", help="delete a repository and all its data")
    p.add_argument("name", help="org/name")
    p.add_argument(
        "--yes-delete-all-data",
        metavar="NAME",
        default=None,
        help="confirm by repeating the repository's name",
    )
    p.add_argument(
        "--forget", action="store_true", help="only remove it from the catalog; keep the data"
    )
    p_repo.set_defaults(func=_cmd_repo)


def _add_storage_options(p: argparse.ArgumentParser) -> None:
    """How to reach an object-store repository: recorded in the catalog (variable names for
    credentials, never their values)."""
    g = p.add_argument_group("object storage (s3://...; recorded in the catalog)")
    g.add_argument("--endpoint", default=None, help="http(s)://host:port of an S3-compatible store")
    g.add_argument("--region", default=None, help="the bucket's region")
    g.add_argument(
        "--force-path-style",
        "--path-style",
        action="store_true",
        help="http://host/bucket/key addressing (most S3-compatible stores)",
    )
    g.add_argument("--allow-http", action="store_true", help="allow an http:// endpoint")
    g.add_argument("--anonymous", action="store_true", help="unsigned requests (public bucket)")
    for key, what in (
        ("access-key-id-env", "the access key id"),
        ("secret-access-key-env", "the secret access key"),
        ("session-token-env", "the session token"),
    ):
        g.add_argument(
            f"--{key}", default=None, metavar="VAR", help=f"NAME of the variable holding {what}"
        )


def _storage_args(args: argparse.Namespace) -> dict[str, Any]:
    """The storage options given on the command line, as a pipeline's ``target`` keys."""
    keys = ("endpoint", "region", "access_key_id_env", "secret_access_key_env")
    out: dict[str, Any] = {k: getattr(args, k) for k in (*keys, "session_token_env")}
    out.update(
        {k: True for k in ("force_path_style", "allow_http", "anonymous") if getattr(args, k)}
    )
    return {k: v for k, v in out.items() if v is not None}


def _add_history_commands(sub: Any) -> None:
    """``diff``, ``tag``, ``branch`` and ``info`` on one repository."""
    repo_help = "repository location, catalog:org/name, or a pipeline file"
    p = sub.add_parser("diff", help="what changed between two branches, tags or snapshots")
    p.add_argument("repo", help=repo_help)
    p.add_argument("a", help="the older ref (branch, tag, snapshot id; REF~N for ancestors)")
    p.add_argument("b", help="the newer ref")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("tag", help="tag a snapshot (tags are immutable); no NAME: list tags")
    p.add_argument("repo", help=repo_help)
    p.add_argument("name", nargs="?", default=None, help="the new tag (never reusable)")
    p.add_argument("snapshot", nargs="?", default=None, help="a ref (default: the branch tip)")
    p.set_defaults(func=_cmd_tag)

    p = sub.add_parser(
        "branch", help="list, create (NAME FROM) or delete (NAME) branches of a repository"
    )
    p.add_argument("repo", help=repo_help)
    p.add_argument("words", nargs="*", help="list | create NAME FROM | delete NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_branch)

    p = sub.add_parser("info", help="tree of groups and arrays, with virtual vs native chunks")
    p.add_argument("repo", help=repo_help)
    p.add_argument("--branch", default=None, help="default: main (or the pipeline's branch)")
    p.add_argument("--ref", default=None, help="a tag, snapshot id or REF~N instead")
    p.add_argument(
        "--exact",
        action="store_true",
        help="ask every chunk its type instead of reading manifest statistics",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
