"""Repository maintenance: reclaim the space of runs that never committed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import icechunk

from icepipe.errors import ConfigError
from icepipe.faults import storage_failure

__all__ = ["GcReport", "collect_garbage"]


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection found (``dry_run``) or deleted."""

    dry_run: bool
    cutoff: datetime
    chunks: int
    manifests: int
    snapshots: int
    transaction_logs: int
    bytes: int


def collect_garbage(
    repo: icechunk.Repository, older_than: timedelta, *, delete: bool = False
) -> GcReport:
    """Find (or delete, with ``delete=True``) objects no branch or tag references.

    These are mostly the chunks and manifests written by runs that failed or were killed before
    their commit. Only objects older than ``older_than`` are considered, so that a run still in
    progress (whose chunks no commit references *yet*) is never harmed: keep it longer than
    your longest ingest.

    Snapshots are never expired here: their commit metadata is icepipe's ledger of ingested
    files, and dropping it would make the next run ingest those files again.

    Raises
    ------
    ConfigError
        ``older_than`` is negative.
    StorageError
        The storage failed.
    """
    if older_than < timedelta(0):
        raise ConfigError(f"expected a duration >= 0; got {older_than}", field="--older-than")
    cutoff = datetime.now(UTC) - older_than
    try:
        summary = repo.garbage_collect(cutoff, dry_run=not delete)
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, "garbage collection failed") from exc
    return GcReport(
        dry_run=not delete,
        cutoff=cutoff,
        chunks=summary.chunks_deleted,
        manifests=summary.manifests_deleted,
        snapshots=summary.snapshots_deleted,
        transaction_logs=summary.transaction_logs_deleted,
        bytes=summary.bytes_deleted,
    )
