"""``icepipe export kerchunk``: a group of a virtual repository written as a kerchunk
reference set (JSON or a Parquet directory), for readers that still open reference files
with fsspec.

The references point to the same original files as the repository's; chunks the repository
stores itself (loaded coordinates) are inlined (:mod:`icepipe.repository.kerchunk`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from icepipe.errors import ConfigError

__all__ = ["ExportSummary", "add_export_command", "export_kerchunk"]


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out: str
    snapshot_id: str
    variables: tuple[str, ...]
    references: int
    inlined: int


def export_kerchunk(
    repo: Any,
    snapshot_id: str,
    out: str,
    *,
    group: str | None = None,
    format: Literal["json", "parquet"] = "json",
    inline_limit: int | None = None,
    record_size: int = 100_000,
) -> ExportSummary:
    """Write ``group`` of ``repo`` at ``snapshot_id`` as a kerchunk reference set at ``out``
    (a local path: a ``.json`` file, or a Parquet reference directory).

    Raises
    ------
    NotExportableError
        A variable holds native chunks over ``inline_limit`` bytes, or uneven chunks.
    ConfigError
        ``out`` exists, or no such group.
    """
    from icepipe.repository.kerchunk import DEFAULT_INLINE_LIMIT, virtual_dataset_for_export

    if os.path.exists(out):
        raise ConfigError(f"{out!r} exists; remove it, or choose another path", field="OUT")
    limit = DEFAULT_INLINE_LIMIT if inline_limit is None else inline_limit
    vds = virtual_dataset_for_export(repo, snapshot_id, group, inline_limit=limit)
    refs, inlined = 0, 0
    for var in vds.variables.values():
        manifest = var.data.manifest
        inlined += len(manifest._inlined or {})
        refs += sum(1 for _ in manifest.iter_nonempty_paths())
    if format == "parquet":
        vds.vz.to_kerchunk(out, format="parquet", record_size=record_size)
    else:
        vds.vz.to_kerchunk(out, format="json")
    return ExportSummary(
        out=out,
        snapshot_id=snapshot_id,
        variables=tuple(str(v) for v in vds.variables),
        references=refs,
        inlined=inlined,
    )


def add_export_command(sub: Any, open_repo: Callable[[str], tuple[Any, str]]) -> None:
    """``export kerchunk REPO OUT`` under the CLI's subcommands; ``open_repo`` opens what a
    command names (a location, ``catalog:org/name`` or a pipeline file) and gives its branch."""
    p_export = sub.add_parser("export", help="write a repository out for other tools")
    formats = p_export.add_subparsers(dest="export_format", required=True)
    p = formats.add_parser(
        "kerchunk",
        help="a group of a virtual repository as a kerchunk reference set (JSON or Parquet)",
    )
    p.add_argument("repo", help="repository location, catalog:org/name, or a pipeline file")
    p.add_argument("out", help="the reference set to write (a local path; must not exist)")
    p.add_argument("--group", default=None, help="the group to export (default: the root)")
    p.add_argument("--ref", default=None, help="a branch, tag or snapshot id (default: main)")
    p.add_argument("--format", choices=("json", "parquet"), default="json")
    p.add_argument(
        "--inline-limit",
        type=int,
        default=None,
        help="bytes of repository-stored chunks a variable may hold, inlined into the set "
        "(default: 1 MiB)",
    )
    p.add_argument(
        "--record-size", type=int, default=100_000, help="parquet: references per record file"
    )

    def run(args: argparse.Namespace) -> int:
        from icepipe.repository import resolve_ref

        repo, branch = open_repo(args.repo)
        group = args.group
        if group is None and args.repo.endswith((".yaml", ".yml")):
            from icepipe.spec import load_pipeline

            group = load_pipeline(args.repo).target.group
        snapshot = resolve_ref(repo, args.ref or f"branch:{branch}")
        s = export_kerchunk(
            repo,
            snapshot,
            args.out,
            group=group,
            format=args.format,
            inline_limit=args.inline_limit,
            record_size=args.record_size,
        )
        print(
            f"{s.out}: {len(s.variables)} variable(s), {s.references} reference(s) to files, "
            f"{s.inlined} inline chunk(s), from snapshot {s.snapshot_id}"
        )
        return 0

    p.set_defaults(func=run)
