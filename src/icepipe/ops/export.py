"""``icepipe export kerchunk``: a group of a virtual repository written as a kerchunk
reference set (JSON or a Parquet directory), for readers that still open reference files
with fsspec.

The references point to the same original files as the repository's; chunks the repository
stores itself (loaded coordinates) are inlined (:mod:`icepipe.repository.kerchunk`).

``OUT`` is a local path or an object-store URL (``s3://``, ``gs://``, ``az://``), written
through icepipe's storage layer (obstore) with the storage options given (credentials from
named environment variables, never from the command line). A JSON set is written with one
conditional ``PUT`` (never over an existing object); a Parquet set's record files go first
and its ``.zmetadata`` last, so that a reader never finds a partial set complete.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from icepipe.errors import ConfigError, IcepipeError
from icepipe.storage import (
    STORAGE_FIELDS,
    StorageOptions,
    is_local,
    parse_storage_options,
    refuse_credentials_in_url,
    scheme_of,
)

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
    storage: StorageOptions | None = None,
) -> ExportSummary:
    """Write ``group`` of ``repo`` at ``snapshot_id`` as a kerchunk reference set at ``out``
    (a ``.json`` file, or a Parquet reference directory): a local path, or an object-store
    URL reached with ``storage``.

    Raises
    ------
    NotExportableError
        A variable holds native chunks over ``inline_limit`` bytes, or uneven chunks.
    ConfigError
        ``out`` exists, is not a writable location (``http://``, credentials in the URL), no
        such group, or the object store refused the credentials (never shown).
    StorageError
        The object store failed in a way a retry may fix.
    """
    from icepipe.repository.kerchunk import DEFAULT_INLINE_LIMIT, virtual_dataset_for_export

    remote = not is_local(out)
    if remote:
        _check_remote(out, format, storage)
    elif os.path.exists(out):
        raise ConfigError(f"{out!r} exists; remove it, or choose another path", field="OUT")
    limit = DEFAULT_INLINE_LIMIT if inline_limit is None else inline_limit
    vds = virtual_dataset_for_export(repo, snapshot_id, group, inline_limit=limit)
    refs, inlined = 0, 0
    for var in vds.variables.values():
        manifest = var.data.manifest
        inlined += len(manifest._inlined or {})
        refs += sum(1 for _ in manifest.iter_nonempty_paths())
    if remote:
        _write_remote(vds, out, format, record_size, storage)
    elif format == "parquet":
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


def _check_remote(out: str, format: str, storage: StorageOptions | None) -> None:
    """Refuse what cannot be written, or exists, at the object-store URL ``out``."""
    import obstore

    from icepipe.sources.stores import store_and_path, store_for

    refuse_credentials_in_url(out, "OUT")
    if scheme_of(out) in ("http", "https"):
        raise ConfigError(
            f"{out!r}: icepipe writes to s3://, gs:// and az:// object stores, not to HTTP "
            "servers; export to a bucket or a local path",
            field="OUT",
        )
    try:
        if format == "parquet":
            taken = next(iter(obstore.list(store_for(out, storage), chunk_size=1)), [])
        else:
            store, path = store_and_path(out, storage)
            taken = [obstore.head(store, path)]
    except Exception as exc:
        if _not_found(exc):
            return
        raise _write_error(exc, out, "check") from exc
    if taken:
        raise ConfigError(f"{out!r} exists; remove it, or choose another URL", field="OUT")


def _write_remote(
    vds: Any, out: str, format: str, record_size: int, storage: StorageOptions | None
) -> None:
    import obstore

    from icepipe.sources.stores import store_and_path, store_for

    try:
        if format == "json":
            import ujson

            store, path = store_and_path(out, storage)
            data = ujson.dumps(vds.vz.to_kerchunk(format="dict")).encode()
            obstore.put(store, path, data, mode="create")
            return
        store = store_for(out, storage)
        with tempfile.TemporaryDirectory(prefix="icepipe-export-") as tmp:
            local = Path(tmp) / "set"
            vds.vz.to_kerchunk(str(local), format="parquet", record_size=record_size)
            files = sorted(p for p in local.rglob("*") if p.is_file())
            # .zmetadata last: it is what makes the folder a reference set to its readers.
            for f in sorted(files, key=lambda f: f.name == ".zmetadata"):
                obstore.put(store, f.relative_to(local).as_posix(), f.read_bytes())
    except Exception as exc:
        raise _write_error(exc, out, "write") from exc


def _not_found(exc: BaseException) -> bool:
    from icepipe.sources.stores import is_not_found

    return bool(is_not_found(exc))


def _write_error(exc: BaseException, out: str, what: str) -> IcepipeError:
    """The icepipe error for an object-store failure on ``out`` (no credential in it: obstore
    names the request, never the secrets it signed it with)."""
    from obstore.exceptions import AlreadyExistsError, PermissionDeniedError, UnauthenticatedError

    from icepipe.faults import storage_failure

    if isinstance(exc, IcepipeError):
        return exc
    if isinstance(exc, AlreadyExistsError):
        return ConfigError(
            f"{out!r} was created while exporting; remove it, or choose another URL", field="OUT"
        )
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return ConfigError(
            f"{out}: access denied when trying to {what} it; check the credentials the export "
            "uses (--access-key-id-env / --secret-access-key-env, or the standard AWS_* "
            "variables and profiles) and their permissions on the bucket",
            field="OUT",
        )
    return storage_failure(exc, f"{out}: cannot {what} it", where="OUT")


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
    p.add_argument(
        "out",
        help="the reference set to write (a local path or s3://, gs://, az:// URL; must not exist)",
    )
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
    _add_out_storage(p)

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
            storage=_out_storage(args),
        )
        print(
            f"{s.out}: {len(s.variables)} variable(s), {s.references} reference(s) to files, "
            f"{s.inlined} inline chunk(s), from snapshot {s.snapshot_id}"
        )
        return 0

    p.set_defaults(func=run)


def _add_out_storage(p: argparse.ArgumentParser) -> None:
    """How to reach an object-store ``OUT``: the pipeline's storage keys (``STORAGE_FIELDS``)
    as options, credentials only as the NAMES of environment variables."""
    g = p.add_argument_group("object storage of OUT (s3://, gs://, az://)")
    for key, field in STORAGE_FIELDS.items():
        flag = "--" + key.replace("_", "-")
        if field.kind == "boolean":
            g.add_argument(flag, dest=f"out_{key}", action="store_true", help=field.doc)
        else:
            metavar = "VAR" if key.endswith("_env") else key.upper()
            g.add_argument(flag, dest=f"out_{key}", default=None, metavar=metavar, help=field.doc)


def _out_storage(args: argparse.Namespace) -> StorageOptions:
    given = {k: getattr(args, f"out_{k}") for k in STORAGE_FIELDS}
    try:
        return parse_storage_options(
            {k: v for k, v in given.items() if v not in (None, False)}, "--"
        )
    except ConfigError as exc:
        # The storage table's keys are the options' names with hyphens on the command line.
        field = (exc.field or "").replace("_", "-")
        message = str(exc).removeprefix(f"{exc.field}: ")
        for key in STORAGE_FIELDS:
            message = message.replace(f"--{key}", "--" + key.replace("_", "-"))
        raise ConfigError(message, field=field or None) from exc
