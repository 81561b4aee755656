"""Read what a branch already holds: the ingest ledger (the :mod:`~icepipe.repository.ledger`
records in commit metadata), the commit log, and the schema of the arrays in the target group."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import icechunk
import numpy as np
import zarr

from icepipe.cf import effective_time_encoding, grid_of, packing_of
from icepipe.errors import ConfigError
from icepipe.faults import storage_failure
from icepipe.model import TargetSchema, VariableSchema
from icepipe.repository.grids import rectilinear_enabled, stored_chunks
from icepipe.repository.ledger import METADATA_KEY, CommitRecord, FileRecord, read_record

__all__ = [
    "METADATA_KEY",
    "CommitInfo",
    "arrays_with_codec",
    "ledger_cubes",
    "read_group_attrs",
    "read_ingested",
    "read_ledger",
    "read_commits",
    "read_history",
    "read_log",
    "read_target_schema",
    "subgroup",
]


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

    @classmethod
    def of(cls, snap: icechunk.SnapshotInfo, record: CommitRecord | None) -> CommitInfo:
        """The commit ``snap`` with its ledger ``record`` (``None``: icepipe did not write it)."""
        rec = record or CommitRecord()
        return cls(
            id=snap.id,
            written_at=snap.written_at,
            message=snap.message,
            pipeline=rec.pipeline,
            n_files=rec.n_files,
            mode=rec.mode,
            group=rec.group,
        )


def _branch_exists(repo: icechunk.Repository, branch: str) -> bool:
    return branch in repo.list_branches()


def read_commits(
    repo: icechunk.Repository, snapshot_id: str, group: str | None
) -> Iterator[CommitRecord]:
    """The ledger records of the commits into ``group`` as of ``snapshot_id``, newest first.

    Raises
    ------
    LedgerVersionError
        A commit's record is of a newer ledger format: upgrade icepipe.
    """
    for snap in repo.ancestry(snapshot_id=snapshot_id):
        record = read_record(snap.metadata, snapshot_id=snap.id)
        if record is not None and record.is_of(group):
            yield record


def read_commits_below(
    repo: icechunk.Repository, snapshot_id: str, group: str | None
) -> Iterator[CommitRecord]:
    """The ledger records of the commits into ``group`` or any group below it (every group
    for the root), as of ``snapshot_id``, newest first."""
    root = (group or "").strip("/")
    for snap in repo.ancestry(snapshot_id=snapshot_id):
        record = read_record(snap.metadata, snapshot_id=snap.id)
        if record is None:
            continue
        at = (record.group or "").strip("/")
        if not root or at == root or at.startswith(root + "/"):
            yield record


def read_ledger(
    repo: icechunk.Repository, snapshot_id: str, group: str | None
) -> dict[str, FileRecord]:
    """Every source file recorded as ingested into ``group`` as of ``snapshot_id``.

    Returns ``url -> record`` (the newest record of each URL). Read it from the snapshot a
    writable session starts at, so that the plan and the commit see the same history.

    Raises
    ------
    LedgerVersionError
        A commit's record is of a newer ledger format: upgrade icepipe.
    """
    ledger: dict[str, FileRecord] = {}
    try:
        for record in read_commits(repo, snapshot_id, group):
            for f in record.files or ():
                # Walking newest first: the newest record of a URL wins.
                ledger.setdefault(f.url, f)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot read the history of snapshot {snapshot_id}") from exc
    return ledger


def read_ingested(
    repo: icechunk.Repository, snapshot_id: str, group: str | None
) -> list[FileRecord]:
    """The ledger records of ``group`` as of ``snapshot_id``, in the order the data holds them
    (oldest commit first, each commit's files in concat order)."""
    commits = [record.files or () for record in read_commits(repo, snapshot_id, group)]
    return [f for files in reversed(commits) for f in files]


def read_log(
    repo: icechunk.Repository,
    branch: str,
    *,
    limit: int | None = None,
    snapshot_id: str | None = None,
) -> list[CommitInfo]:
    """The commits of ``branch`` (or, given ``snapshot_id``, of that snapshot and its
    ancestors), newest first.

    Raises
    ------
    ConfigError
        The branch does not exist.
    """
    if snapshot_id is None and not _branch_exists(repo, branch):
        raise ConfigError(
            f"branch {branch!r} does not exist; branches: {', '.join(sorted(repo.list_branches()))}"
        )
    out: list[CommitInfo] = []
    history = (
        repo.ancestry(snapshot_id=snapshot_id) if snapshot_id else repo.ancestry(branch=branch)
    )
    for snap in history:
        out.append(CommitInfo.of(snap, read_record(snap.metadata, snapshot_id=snap.id)))
        if limit is not None and len(out) >= limit:
            break
    return out


def read_history(
    repo: icechunk.Repository, snapshot_id: str, *, limit: int
) -> list[tuple[CommitInfo, CommitRecord | None]]:
    """The ``limit`` newest commits of ``snapshot_id``'s history (itself first), each with its
    ledger record (``None`` for commits icepipe did not make): what :func:`read_log` gives,
    plus the files each commit ingested.

    Raises
    ------
    LedgerVersionError
        A commit's record is of a newer ledger format: upgrade icepipe.
    StorageError
        The history cannot be read.
    """
    out: list[tuple[CommitInfo, CommitRecord | None]] = []
    try:
        for snap in repo.ancestry(snapshot_id=snapshot_id):
            if len(out) >= limit:
                break
            record = read_record(snap.metadata, snapshot_id=snap.id)
            out.append((CommitInfo.of(snap, record), record))
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot read the history of snapshot {snapshot_id}") from exc
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


def ledger_cubes(records: Iterable[FileRecord]) -> list[str]:
    """The GRIB hypercubes (``source.grib_cubes``) that ledger records place files in."""
    return sorted({c for r in records for c in (r.cubes or {})})


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
    session: icechunk.Session,
    group: str | None,
    concat_dim: str,
    *,
    order_by: str | None = None,
    values: Literal["ends", "all", "none"] = "ends",
) -> TargetSchema:
    """Summarise the arrays already stored in ``group`` (empty if the group does not exist).

    Dtypes are the stored (encoded) dtypes, which is what virtual references must match.

    ``values`` says how much of the ordering variable (``order_by``, else ``concat_dim``) to
    read: ``"ends"`` its first and last values only (``concat_first``/``concat_last``: two
    chunks, whatever the length of the axis), ``"all"`` every value as well
    (``order_values``: placing late files and re-ingested ones), ``"none"`` nothing.
    """
    with rectilinear_enabled():
        return _read_target_schema(session, group, concat_dim, order_by=order_by, values=values)


def _read_target_schema(
    session: icechunk.Session,
    group: str | None,
    concat_dim: str,
    *,
    order_by: str | None,
    values: Literal["ends", "all", "none"],
) -> TargetSchema:
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
        chunks, edges = stored_chunks(arr)
        variables[name] = VariableSchema(
            dims=arr_dims,
            shape=tuple(int(s) for s in arr.shape),
            dtype=str(dtype),
            chunks=chunks,
            attrs_units=encodings[name][0],
            attrs_calendar=encodings[name][1],
            packing=packing_of(arr.attrs, str(dtype)),
            edges=edges,
        )
        ordering = name == (order_by or concat_dim) and arr_dims == (concat_dim,)
        if ordering and arr.shape[0] > 0 and values != "none":
            # Read only the axis's ends (its first and last chunks; groups written before
            # icepipe stored them in few chunks hold one per file) unless every value is asked
            # for, so that planning does not grow with the archive.
            read = np.asarray(arr[:] if values == "all" else [arr[0], arr[-1]])
            if read.dtype.kind in "iuf":
                concat_first, concat_last = float(read[0]), float(read[-1])
                order_values = tuple(float(v) for v in read) if values == "all" else None
    return TargetSchema(
        variables=variables,
        dims=dims,
        concat_first=concat_first,
        concat_last=concat_last,
        order_values=order_values,
        grid=_stored_grid(arrays, dims),
    )


def _stored_grid(arrays: dict[str, Any], dims: dict[str, int]) -> str | None:
    """The raster grid of a group holding a CF grid mapping ``spatial_ref`` (GeoTIFF
    ingests), as :func:`icepipe.cf.grid_of` describes a source file's."""
    ref = arrays.get("spatial_ref")
    if ref is None or "x" not in dims or "y" not in dims:
        return None
    return grid_of(ref.attrs.asdict(), dims["x"], dims["y"])
