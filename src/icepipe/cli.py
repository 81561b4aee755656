"""The ``icepipe`` command line: thin commands over :mod:`icepipe.pipeline` and ``target``.

Exit codes (for schedulers): 0 success (also "nothing new"), 1 unexpected error, 2 bad
configuration or arguments, 3 bad source data, 4 conflict (retry later), 5 transient storage or
cluster error (retry).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta

from icepipe import __version__
from icepipe.errors import IcepipeError

__all__ = ["main"]


def _fmt_dims(dims: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items()) or "-"


def _cmd_run(args: argparse.Namespace) -> int:
    from icepipe.pipeline import run
    from icepipe.spec import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    result = run(pipeline, workers=args.workers, scheduler=args.scheduler)
    if args.json:
        print(json.dumps(asdict(result), indent=2, default=str))
        return 0
    where = f"{result.repo} [{result.branch}] {result.group or '/'}"
    for url, reason in result.files_skipped.items():
        print(f"{pipeline.name}: skipped {url} (retried next run): {reason}", file=sys.stderr)
    if result.status == "nothing-new":
        print(
            f"{pipeline.name}: nothing new ({result.files_already} file(s) already ingested) "
            f"in {where}; snapshot {result.snapshot_id}"
        )
        return 0
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.stages.items())
    print(
        f"{pipeline.name}: ingested {len(result.files_new)} new file(s) "
        f"({result.files_already} already present) into {where}\n"
        f"  snapshot   {result.snapshot_id}\n"
        f"  variables  {', '.join(result.variables)}\n"
        f"  dimensions {_fmt_dims(result.dims)}\n"
        f"  mode       {pipeline.mode}, {result.cluster.get('workers', '?')} Dask worker(s)\n"
        f"  time       {result.seconds:.2f}s ({stages})"
    )
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    from icepipe.target import open_repo, read_log

    entries = read_log(open_repo(args.repo), args.branch, limit=args.n)
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


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``6h``, ``7d``, ``2w`` (a bare number means seconds)."""
    from icepipe.errors import ConfigError

    t = text.strip().lower()
    unit = t[-1] if t and t[-1] in _UNITS else "s"
    number = t[:-1] if t and t[-1] in _UNITS else t
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(
            f"expected a duration like 90s, 15m, 6h, 7d or 2w; got {text!r}", field="--older-than"
        ) from None
    return timedelta(seconds=value * _UNITS[unit])


def _cmd_gc(args: argparse.Namespace) -> int:
    from icepipe.target import collect_garbage, open_repo

    older_than = parse_duration(args.older_than)  # bad input fails before any I/O
    report = collect_garbage(open_repo(args.repo), older_than, delete=args.delete)
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
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run a pipeline: ingest new source files in one commit")
    p_run.add_argument("pipeline", help="pipeline definition (YAML)")
    p_run.add_argument(
        "--workers", type=int, default=None, help="workers of the embedded LocalCluster"
    )
    p_run.add_argument(
        "--scheduler", default=None, help="address of an existing Dask scheduler to use instead"
    )
    p_run.add_argument("--json", action="store_true", help="print the run result as JSON")
    p_run.set_defaults(func=_cmd_run)

    p_log = sub.add_parser("log", help="list the commits of a branch")
    p_log.add_argument("repo", help="repository location")
    p_log.add_argument("--branch", default="main")
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
    p_gc.add_argument("repo", help="repository location")
    p_gc.add_argument(
        "--older-than",
        default="1d",
        help="only objects older than this (default 1d); keep it longer than your longest run",
    )
    p_gc.add_argument("--delete", action="store_true", help="delete (default: dry run)")
    p_gc.add_argument("--json", action="store_true")
    p_gc.set_defaults(func=_cmd_gc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``icepipe`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except IcepipeError as exc:
        print(f"icepipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("icepipe: interrupted; nothing was committed", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
