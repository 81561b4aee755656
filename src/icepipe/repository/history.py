"""Read what a branch already holds: the ingest ledger (from commit metadata), the commit log,
and the schema of the arrays in the target group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import icechunk
import numpy as np
import zarr

from icepipe.cf import effective_time_encoding, packing_of
from icepipe.errors import ConfigError
from icepipe.faults import storage_failure
from icepipe.model import TargetSchema, VariableSchema

__all__ = [
    "METADATA_KEY",
    "CommitInfo",
    "arrays_with_codec",
    "ledger_cubes",
    "read_group_attrs",
    "read_ingested",
    "read_ledger",
    "read_log",
    "read_target_schema",
    "subgroup",
]

#: Key of icepipe's provenance record in Icechunk commit metadata.
METADATA_KEY = "icepipe"


@dataclass(frozen=True)
class CommitInfo:
    """One commit of a branch, with icepipe's provenance when it made the commit."""

    id: str
    written_at: datetime
    message: str
    pipeline: str | None
    n_files: int | None
    mode: str | None
    group: str | None


def _branch_exists(repo: icechunk.Repository, branch: str) -> bool:
    return branch in repo.list_branches()


def read_ledger(
    repo: icechunk.Repository, snapshot_id: str, group: str | None
) -> dict[str, dict[str, Any]]:
    """Every source file recorded as ingested into ``group`` as of ``snapshot_id``.

    Returns ``url -> record``, the record being what :meth:`SourceFile.identity` stored (size,
    mtime, etag). Read it from the snapshot a writable session starts at, so that the plan and
    the commit see the same history.
    """
    ledger: dict[str, dict[str, Any]] = {}
    try:
        for snap in repo.ancestry(snapshot_id=snapshot_id):
            record = snap.metadata.get(METADATA_KEY)
            if not isinstance(record, dict) or record.get("group") != (group or ""):
                continue
            for f in record.get("files", []):
                # Walking newest first: the newest record of a URL wins.
                ledger.setdefault(f["url"], f)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot read the history of snapshot {snapshot_id}") from exc
    return ledger


def read_ingested(
    repo: icechunk.Repository, snapshot_id: str, group: str | None
) -> list[dict[str, Any]]:
    """The ledger records of ``group`` as of ``snapshot_id``, in the order the data holds them
    (oldest commit first, each commit's files in concat order)."""
    commits = []
    for snap in repo.ancestry(snapshot_id=snapshot_id):
        record = snap.metadata.get(METADATA_KEY)
        if isinstance(record, dict) and record.get("group") == (group or ""):
            commits.append(record.get("files", []))
    return [f for files in reversed(commits) for f in files]


def read_log(
    repo: icechunk.Repository, branch: str, *, limit: int | None = None
) -> list[CommitInfo]:
    """The commits of ``branch``, newest first.

    Raises
    ------
    ConfigError
        The branch does not exist.
    """
    if not _branch_exists(repo, branch):
        raise ConfigError(
            f"branch {branch!r} does not exist; branches: {', '.join(sorted(repo.list_branches()))}"
        )
    out: list[CommitInfo] = []
    for snap in repo.ancestry(branch=branch):
        record = snap.metadata.get(METADATA_KEY)
        rec = record if isinstance(record, dict) else {}
        files = rec.get("files")
        out.append(
            CommitInfo(
                id=snap.id,
                written_at=snap.written_at,
                message=snap.message,
                pipeline=rec.get("pipeline"),
                n_files=len(files) if isinstance(files, list) else None,
                mode=rec.get("mode"),
                group=rec.get("group"),
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def read_group_attrs(session: icechunk.Session, group: str | None) -> dict[str, Any]:
    """The attributes stored on ``group`` (empty when it does not exist)."""
    try:
        g = zarr.open_group(session.store, path=group or "", mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return {}
    return dict(g.attrs)


def subgroup(group: str | None, name: str) -> str:
    """``group/name``, or ``name`` at the root: where a GRIB hypercube's group (or one of its
    arrays) lives under a pipeline's ``target.group`` (``source.grib_cubes``)."""
    return f"{group}/{name}" if group else name


def ledger_cubes(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The GRIB hypercubes (``source.grib_cubes``) that ledger records place files in."""
    return sorted({str(c) for r in records for c in (r.get("cubes") or {})})


def arrays_with_codec(
    session: icechunk.Session, group: str | None, names: Sequence[str], codec: str
) -> list[str]:
    """Which of the arrays ``names`` of ``group`` use the Zarr codec named ``codec``."""
    try:
        g = zarr.open_group(session.store, path=group or "", mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return []
    out = []
    for name in names:
        arr = g.get(name)
        if isinstance(arr, zarr.Array) and arr.metadata.zarr_format == 3:
            configs = [c.to_dict() for c in arr.metadata.codecs]
            if any(isinstance(c, dict) and c.get("name") == codec for c in configs):
                out.append(name)
    return out


def read_target_schema(
    session: icechunk.Session, group: str | None, concat_dim: str, *, order_by: str | None = None
) -> TargetSchema:
    """Summarise the arrays already stored in ``group`` (empty if the group does not exist).

    Dtypes are the stored (encoded) dtypes, which is what virtual references must match.
    """
    try:
        g = zarr.open_group(session.store, path=group or "", mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return TargetSchema()
    variables: dict[str, VariableSchema] = {}
    dims: dict[str, int] = {}
    concat_first = concat_last = None
    order_values: tuple[float, ...] | None = None
    arrays = dict(g.arrays())
    # Bounds are stored as the source files have them (usually without units): compare them
    # in their parent's encoding, by the rule the scan of a file applies.
    encodings = effective_time_encoding({n: a.attrs.asdict() for n, a in arrays.items()})
    for name, arr in arrays.items():
        names = arr.metadata.dimension_names if arr.metadata.zarr_format == 3 else None
        if names is None:
            raw = arr.attrs.get("_ARRAY_DIMENSIONS", ())
            names = tuple(str(d) for d in raw) if isinstance(raw, list | tuple) else ()
        arr_dims = tuple(str(d) for d in names)
        for d, n in zip(arr_dims, arr.shape, strict=False):
            dims[d] = int(n)
        dtype = arr.dtype.to_native_dtype() if hasattr(arr.dtype, "to_native_dtype") else arr.dtype
        variables[name] = VariableSchema(
            dims=arr_dims,
            shape=tuple(int(s) for s in arr.shape),
            dtype=str(dtype),
            chunks=tuple(int(c) for c in arr.chunks),
            attrs_units=encodings[name][0],
            attrs_calendar=encodings[name][1],
            packing=packing_of(arr.attrs, str(dtype)),
        )
        if name == (order_by or concat_dim) and arr_dims == (concat_dim,) and arr.shape[0] > 0:
            values = np.asarray(arr[:])
            if values.dtype.kind in "iuf":
                concat_first, concat_last = float(values[0]), float(values[-1])
                order_values = tuple(float(v) for v in values)
    return TargetSchema(
        variables=variables,
        dims=dims,
        concat_first=concat_first,
        concat_last=concat_last,
        order_values=order_values,
    )
