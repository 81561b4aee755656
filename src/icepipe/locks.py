"""Portable OS file locks: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows.

A leaf module (the standard library and :mod:`icepipe.errors` only), so that ``import
icepipe`` works where ``fcntl`` does not exist. The lock backend is chosen once, at import:
``fcntl`` when it imports, else ``msvcrt``.

The two differ, and icepipe relies only on what both give: an exclusive lock on an open file,
held until it is unlocked or the file is closed. POSIX ``flock`` locks also pass to child
processes with an inherited descriptor; ``icepipe schedule serve`` relies on that and so stays
POSIX-only (:func:`require_posix`). ``msvcrt.locking`` locks a byte range (byte 0 here) and
fails with ``OSError`` where ``flock`` would block, so the Windows backend retries.

The Windows backend is written against the documented ``msvcrt`` API but tested only for
importability on POSIX (``tests/test_locks.py``): icepipe's CI has no Windows runner.
"""

from __future__ import annotations

import os
import sys
import time
from types import ModuleType

from icepipe.errors import ConfigError

__all__ = ["BACKEND", "lock", "require_posix", "try_lock", "unlock"]


def _import_fcntl() -> ModuleType | None:
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


_fcntl = _import_fcntl()
#: ``"fcntl"`` (POSIX ``flock``) or ``"msvcrt"`` (Windows byte-range locks).
BACKEND = "fcntl" if _fcntl is not None else "msvcrt"
_WINDOWS_RETRY_SECONDS = 0.05


def lock(fd: int) -> None:
    """Take an exclusive lock on the open file ``fd``, waiting for other holders."""
    if _fcntl is not None:
        _fcntl.flock(fd, _fcntl.LOCK_EX)
    else:
        _windows_lock(fd, blocking=True)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` if no one holds it; False when someone does."""
    if _fcntl is not None:
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    return _windows_lock(fd, blocking=False)


def unlock(fd: int) -> None:
    """Release the lock :func:`lock` or :func:`try_lock` took on ``fd``."""
    if _fcntl is not None:
        _fcntl.flock(fd, _fcntl.LOCK_UN)
    else:
        _windows_unlock(fd)


def require_posix(what: str) -> None:
    """Refuse ``what`` (a command) where only the Windows lock backend exists.

    Raises
    ------
    ConfigError
        On Windows (no ``fcntl``), naming ``what`` and the alternative.
    """
    if _fcntl is None:
        raise ConfigError(
            f"{what} needs a POSIX system (locks inherited by child processes, process groups) "
            f"and this is {sys.platform}; schedule the pipelines with the Windows Task "
            "Scheduler calling `icepipe run PIPELINE.yaml`, or run the scheduler on Linux or "
            "macOS (`icepipe schedule export` writes cron, systemd and Kubernetes files)"
        )


def _windows_lock(fd: int, *, blocking: bool) -> bool:
    """``msvcrt.locking`` on byte 0 of ``fd`` (Windows only)."""
    import msvcrt

    while True:
        os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks from the current position
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            if not blocking:
                return False
            time.sleep(_WINDOWS_RETRY_SECONDS)
            continue
        return True


def _windows_unlock(fd: int) -> None:
    import msvcrt

    os.lseek(fd, 0, os.SEEK_SET)
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
