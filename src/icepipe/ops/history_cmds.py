"""``icepipe rollback``, ``icepipe mv`` and ``icepipe rm``: history and layout edits of one
branch (see :mod:`icepipe.repository.edits`), registered by :mod:`icepipe.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from icepipe.errors import ConfigError

__all__ = ["add_history_edit_commands"]

_REPO_HELP = "repository location, catalog:org/name, or a pipeline file"


def _open(location: str) -> tuple[Any, str]:
    from icepipe.cli import _open_repo

    return _open_repo(location)


def _cmd_rollback(args: argparse.Namespace) -> int:
    from icepipe.repository.edits import rollback_branch

    repo, default = _open(args.repo)
    branch = args.branch or default
    done = rollback_branch(repo, branch, args.to, expected=args.expect)
    if args.json:
        print(json.dumps(asdict(done), indent=2, default=str))
        return 0
    print(f"branch {branch}: {done.from_id} -> {done.to_id} ({len(done.commits)} commit(s) undone)")
    for c in done.commits:
        files = "" if c.n_files is None else f" ({c.n_files} file(s))"
        print(f"  undone {c.id} {c.message}{files}")
    if done.files:
        print(
            f"  {len(done.files)} source file(s) are no longer recorded as ingested: the next "
            "run ingests them again"
        )
    print("  the undone snapshots stay readable by id until `icepipe gc` expires them")
    return 0


def _cmd_mv(args: argparse.Namespace) -> int:
    from icepipe.repository.edits import move_node

    repo, default = _open(args.repo)
    branch = args.branch or default
    snapshot = move_node(repo, branch, args.source, args.dest, force=args.force)
    print(f"moved {args.source} -> {args.dest} on {branch}; snapshot {snapshot}")
    return 0


def _confirm(question: str, yes: bool) -> None:
    """Ask ``question`` on the terminal unless ``yes``; refuse without a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(
            "refusing to delete without confirmation: stdin is not a terminal; pass --yes"
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ConfigError("not confirmed: nothing was deleted")


def _cmd_rm(args: argparse.Namespace) -> int:
    from icepipe.repository.edits import remove_node

    repo, default = _open(args.repo)
    branch = args.branch or default
    _confirm(
        f"delete {args.path} (and everything in it) from branch {branch} of {args.repo}?", args.yes
    )
    snapshot = remove_node(repo, branch, args.path, force=args.force)
    print(
        f"removed {args.path} from {branch}; snapshot {snapshot} (earlier snapshots keep it: "
        f"`icepipe rollback {args.repo} --to {branch}~1` brings it back)"
    )
    return 0


def add_history_edit_commands(sub: Any) -> None:
    """Register ``rollback``, ``mv`` and ``rm`` on the ``icepipe`` subparsers."""
    p = sub.add_parser(
        "rollback",
        help="move a branch back to an earlier snapshot (compare-and-set); the files of the "
        "undone commits are ingested again by the next run",
    )
    p.add_argument("repo", help=_REPO_HELP)
    p.add_argument("--to", required=True, help="a tag, snapshot id or REF~N on the branch")
    p.add_argument("--branch", default=None, help="default: main (or the pipeline's branch)")
    p.add_argument(
        "--expect",
        default=None,
        metavar="SNAPSHOT",
        help="only if the branch is still at SNAPSHOT (default: its tip when the command reads it)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("mv", help="move or rename a group or array (one commit)")
    p.add_argument("repo", help=_REPO_HELP)
    p.add_argument("source", help="path of the group or array, e.g. /raw/tas")
    p.add_argument("dest", help="its new path (the parent group must exist)")
    p.add_argument("--branch", default=None, help="default: main (or the pipeline's branch)")
    p.add_argument("--force", action="store_true", help="also a pipeline's target group")
    p.set_defaults(func=_cmd_mv)

    p = sub.add_parser("rm", help="delete a group (with its contents) or an array (one commit)")
    p.add_argument("repo", help=_REPO_HELP)
    p.add_argument("path", help="path of the group or array")
    p.add_argument("--branch", default=None, help="default: main (or the pipeline's branch)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="also a pipeline's target group")
    p.set_defaults(func=_cmd_rm)
