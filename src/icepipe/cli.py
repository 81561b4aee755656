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
