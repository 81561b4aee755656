"""icepipe.locks: the portable lock layer, and ``import icepipe`` where ``fcntl`` is missing.

The Windows backend (``msvcrt.locking``) is NOT exercised here: CI has no Windows runner. What
is tested is that every icepipe module imports without ``fcntl`` (as on Windows), that the
Windows backend is then the one chosen, and that ``schedule serve`` refuses with a typed error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from icepipe import locks

_WITHOUT_FCNTL = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
    import icepipe
    failed = {}
    names = [m.name for m in pkgutil.walk_packages(icepipe.__path__, "icepipe.")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed[name] = repr(exc)
    from icepipe import locks
    from icepipe.errors import ConfigError
    from icepipe.ops.schedule import Scheduler
    try:
        Scheduler([], state=__import__("pathlib").Path("."))
        refused = None
    except ConfigError as exc:
        refused = str(exc)
    print(json.dumps({
        "modules": len(names),
        "failed": failed,
        "backend": locks.BACKEND,
        "windows_lock": callable(getattr(locks, "_windows_lock", None)),
        "windows_unlock": callable(getattr(locks, "_windows_unlock", None)),
        "serve_refused": refused,
    }))
    """
)


def test_every_module_imports_without_fcntl() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_FCNTL], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["modules"] > 40
    assert out["failed"] == {}
    assert out["backend"] == "msvcrt"
    assert out["windows_lock"] and out["windows_unlock"]
    assert "icepipe schedule serve needs a POSIX system" in out["serve_refused"]


def test_posix_backend_excludes_a_second_holder(tmp_path: Path) -> None:
    """flock locks belong to an open file: a second open of the same file cannot take it
    until the first is unlocked (or closed)."""
    assert locks.BACKEND == "fcntl"
    path = tmp_path / "x.lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT)
    second = os.open(path, os.O_RDWR)
    try:
        locks.lock(first)
        assert not locks.try_lock(second)
        locks.unlock(first)
        assert locks.try_lock(second)
        assert not locks.try_lock(first)
    finally:
        os.close(first)
        os.close(second)
    locks.require_posix("anything")  # no error here
