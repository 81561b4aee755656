"""Commit a written session against a moving branch: the one commit function of icepipe, and
the one retry policy for redoing work when the branch moved.

Pipelines (:func:`icepipe.run`) and :func:`icepipe.to_icechunk` both commit through
:func:`commit`, and both wait between attempts with :class:`Retry`. What happens when another
writer moved the branch meanwhile (see ``shared/ICECHUNK_NOTES.md``):

=====================================================  ========================================
what the other writer changed                          what :func:`commit` does
=====================================================  ========================================
other arrays, other groups, other chunks of an array   rebases (``ConflictDetector``), commits
metadata of an array we wrote chunks into (a resize)   :class:`~icepipe.errors.StaleWriteError`
attributes of the group we wrote into                  :class:`~icepipe.errors.StaleWriteError`
anything, when this write is an append                 :class:`~icepipe.errors.StaleWriteError`
                                                       (appends resize, which never rebases)
the same chunks / created the same array or group      :class:`~icepipe.errors.ConflictError`
=====================================================  ========================================

A ``StaleWriteError`` means "redo the write on the new tip" (``to_icechunk`` does so itself); a
pipeline re-plans on either error, since a re-plan against the new tip finds the files another
run ingested meanwhile: that is how "each file exactly once" holds when two runs race.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import icechunk

from icepipe.errors import ConflictError, StaleWriteError
from icepipe.faults import storage_failure
from icepipe.repository.repo import _local_path, commit_lock
from icepipe.storage import is_local

__all__ = ["Retry", "commit", "describe_conflicts"]

# Commits of local repositories are serialised by commit_lock, so a rebase inside it only has
# to catch up once; the extra tries cover writers that do not take icepipe's lock.
_REBASE_TRIES = 5


@dataclass(frozen=True)
class Retry:
    """How often to redo work when the branch moved under it, and how long to wait between
    attempts: exponential backoff with jitter, so racing writers spread out.

    The wait after attempt ``n`` is ``min(cap, base * 2 ** (n - 1))`` seconds, times a random
    factor in ``[0.5, 1.5)``.
    """

    max_attempts: int = 5
    base: float = 0.05
    cap: float = 2.0

    def attempts(self) -> range:
        """The attempt numbers, from 1."""
        return range(1, self.max_attempts + 1)

    def is_last(self, attempt: int) -> bool:
        return attempt >= self.max_attempts

    def delay(self, attempt: int) -> float:
        """The wait in seconds after ``attempt`` failed (before jitter)."""
        return min(self.cap, self.base * 2.0 ** (attempt - 1))

    def wait(self, attempt: int) -> None:
        """Sleep before the attempt after ``attempt``."""
        time.sleep(self.delay(attempt) * random.uniform(0.5, 1.5))


def describe_conflicts(exc: BaseException) -> list[str]:
    """Readable lines from an icechunk ``RebaseFailedError`` (empty for other errors)."""
    out = []
    for c in getattr(exc, "conflicts", None) or []:
        chunks = getattr(c, "conflicted_chunks", None)
        where = f", chunks {list(chunks)[:10]}" if chunks else ""
        out.append(f"{c.path}: {c.conflict_type}{where}")
    return out


def _group_paths(group: str | None) -> set[str]:
    """Icechunk node paths of ``group`` and its parents (the groups a write rewrites)."""
    parts = [p for p in (group or "").strip("/").split("/") if p]
    return {"/"} | {"/" + "/".join(parts[: i + 1]) for i in range(len(parts))}


def _redo_resolves(conflict: Any, group: str | None) -> bool:
    """Whether replaying this write on the new tip loses nothing the other writer wrote.

    True when the other writer changed an array's metadata (e.g. resized it) we only wrote
    chunks into, or rewrote the attributes of our group: our region indices and variables
    stay valid on the tip. False when it wrote the same chunks, created the same nodes or
    deleted what we wrote into: replaying would overwrite it.
    """
    kind = conflict.conflict_type
    if kind == icechunk.ConflictType.ChunksUpdatedInUpdatedArray:
        return True
    return bool(
        kind == icechunk.ConflictType.ZarrMetadataDoubleUpdate
        and conflict.path in _group_paths(group)
    )


def _rebase_failed(
    exc: icechunk.RebaseFailedError, branch: str | None, group: str | None, appending: bool
) -> ConflictError:
    """The icepipe error for a rebase that failed: stale (redo) or a real conflict."""
    conflicts = list(exc.conflicts)
    lines = describe_conflicts(exc)
    if appending or all(_redo_resolves(c, group) for c in conflicts):
        return StaleWriteError(
            f"branch {branch!r} moved under this write and the change cannot be rebased: "
            f"{'; '.join(lines[:5])}; redo the write on the new tip",
            conflicts=lines,
        )
    real = [
        (c.path, line)
        for c, line in zip(conflicts, lines, strict=True)
        if not _redo_resolves(c, group)
    ]
    return ConflictError(
        f"another writer changed {', '.join(sorted({p for p, _ in real}))} on branch "
        f"{branch!r} while this write was running, and this write changes the same parts: "
        f"{'; '.join(line for _, line in real[:10])}. Nothing of this write was committed "
        "and the other writer's data stands; read the branch again and re-run the write if "
        "it should replace theirs",
        conflicts=lines,
    )


def commit(
    session: icechunk.Session,
    *,
    message: str,
    metadata: Mapping[str, Any],
    lock: str | None,
    group: str | None = None,
    appending: bool = False,
    allow_empty: bool = False,
    where: str | None = None,
) -> str:
    """Commit a written session; return the snapshot id.

    When the branch moved since the session started, the session is rebased with
    ``icechunk.ConflictDetector`` (disjoint changes); see the module docstring for what
    happens otherwise. Local repositories commit under :func:`~icepipe.repository.commit_lock`,
    because Icechunk's local storage silently loses racing commits.

    Parameters
    ----------
    session
        The written session.
    message, metadata
        Of the commit.
    lock
        The repository's location (path or URL; the lock is taken for local ones only), or
        ``None`` for a repository icepipe cannot lock (in memory).
    group
        The group written (to tell group attribute updates from array conflicts).
    appending
        Whether the write appended (resized arrays): such writes never rebase over another
        writer's change to the same arrays, and are redone instead.
    allow_empty
        Commit even when the session changed nothing.
    where
        The setting to fix when storage fails for good (``"target.repo"``).

    Raises
    ------
    StaleWriteError
        The branch moved in a way only redoing the write on the new tip resolves; nothing was
        committed.
    ConflictError
        Another writer wrote the same chunks (or created the same arrays): nothing was
        committed, their data stands, and the message names the arrays and chunks. Also when
        the local repository was removed while the write ran (a failed first run discards the
        repository it created, see :func:`~icepipe.repository.discard_unused_repo`).
    StorageError
        Storage failed while committing.
    """
    branch = session.branch
    try:
        with commit_lock(lock) if lock is not None else nullcontext():
            if lock is not None and is_local(lock) and not (_local_path(lock) / "repo").exists():
                raise ConflictError(
                    f"the repository {lock!r} was removed while this run was writing; re-run "
                    "to write it again"
                )
            return session.commit(
                message,
                metadata=dict(metadata),
                rebase_with=icechunk.ConflictDetector(),
                rebase_tries=_REBASE_TRIES,
                allow_empty=allow_empty,
            )
    except icechunk.RebaseFailedError as exc:  # before ConflictError: it subclasses it
        raise _rebase_failed(exc, branch, group, appending) from exc
    except icechunk.ConflictError as exc:
        raise StaleWriteError(
            f"branch {branch!r} kept moving while this write committed ({exc}); redo the "
            "write on the new tip"
        ) from exc
    except icechunk.IcechunkError as exc:
        of = f" of {lock!r}" if lock is not None else ""
        raise storage_failure(exc, f"commit to branch {branch!r}{of} failed", where=where) from exc
