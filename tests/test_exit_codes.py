"""The exit-code table of docs/operations.md is true: every error class icepipe defines or
raises is in it, with the exit code the class carries and the CLI returns; the storage-failure
table matches :mod:`icepipe.faults` (issue 11)."""

from __future__ import annotations

import ast
import errno
import importlib
import pkgutil
import re

import pytest

import icepipe
from icepipe import errors, faults
from icepipe.cli import Terminated, main
from icepipe.ops.runner import exit_code_of
from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "operations.md"
SRC = REPO_ROOT / "src" / "icepipe"


def _table(marker: str) -> list[list[str]]:
    text = DOC.read_text()
    m = re.search(rf"<!-- {marker}: begin -->\n(.*?)<!-- {marker}: end -->", text, re.DOTALL)
    assert m, f"no {marker} in {DOC}"
    rows = [ln for ln in m.group(1).splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def _documented() -> dict[str, int]:
    out = {}
    for row in _table("exit-code-table"):
        name = re.match(r"`(\w+)`", row[0])
        if name:
            out[name.group(1)] = int(row[1])
    return out


def _error_classes() -> dict[str, type[BaseException]]:
    """Every IcepipeError subclass defined anywhere in the package, and the CLI's own."""
    for info in pkgutil.walk_packages(icepipe.__path__, "icepipe."):
        importlib.import_module(info.name)
    found: dict[str, type[BaseException]] = {"Terminated": Terminated}
    todo: list[type[BaseException]] = [errors.IcepipeError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def test_every_error_class_is_in_the_table_with_its_exit_code() -> None:
    documented = _documented()
    classes = _error_classes()
    missing = sorted(set(classes) - set(documented))
    assert not missing, f"error classes missing from {DOC.name}'s exit-code table: {missing}"
    stale = sorted(set(documented) - set(classes) - {"KeyboardInterrupt"})
    assert not stale, f"the table lists classes that no longer exist: {stale}"
    for name, cls in classes.items():
        code = 130 if issubclass(cls, KeyboardInterrupt) else cls.exit_code  # type: ignore[attr-defined]
        assert documented[name] == code, f"{name}: documented {documented[name]}, code {code}"
    assert documented["KeyboardInterrupt"] == 130


def _instance(cls: type[BaseException]) -> BaseException:
    obj = cls.__new__(cls)
    BaseException.__init__(obj, "boom")
    return obj


@pytest.mark.parametrize("name", sorted(_documented()))
def test_the_cli_maps_each_error_to_its_documented_code(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real entry point: a command raising the error exits with the code."""
    cls = {**_error_classes(), "KeyboardInterrupt": KeyboardInterrupt}[name]
    exc = _instance(cls)
    assert exit_code_of(exc) == _documented()[name]  # the run report's code

    def boom(repo: str) -> None:
        raise exc

    monkeypatch.setattr("icepipe.cli._open_repo", boom)
    assert main(["log", "somewhere"]) == _documented()[name]
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("icepipe: ")


def _raised_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                names.add(exc.id)
            elif isinstance(exc, ast.Attribute):
                names.add(exc.attr)
    return names


def test_every_raise_site_raises_a_documented_error_or_a_classified_failure() -> None:
    """Walk every ``raise`` in src/: icepipe errors raised must be in the table; storage
    failures go through faults.storage_failure (classified, documented below the table)."""
    classes = _error_classes()
    documented = _documented()
    raised: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for name in _raised_names(ast.parse(path.read_text(), str(path))):
            raised.setdefault(name, []).append(str(path.relative_to(SRC)))
    for name, where in raised.items():
        if name in classes:
            assert name in documented, f"{name} raised in {where} is not in the table"
    assert "storage_failure" in raised  # the classified sites exist ...
    # ... and nowhere does an icechunk/OS failure become a bare "retry" StorageError with the
    # raw message: every `StorageError(` left in src/ is one that can really pass on retry.
    direct = {
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "StorageError(" in p.read_text() and p.name != "errors.py"
    }
    assert direct <= {
        "execute.py",  # unreachable scheduler, workers died: the cluster may come back
        "faults.py",  # the classifier itself
        "repository/native.py",  # killed workers; in-memory repositories seen from workers
        "repository/repo.py",  # config updates racing other writers
    }, direct


def test_storage_failure_table_matches_the_classifier() -> None:
    rows = _table("storage-failure-table")
    text = " ".join(row[0] for row in rows)
    for code in faults.PERMANENT_ERRNOS:
        name = errno.errorcode[code]
        row = next(r for r in rows if name in r[0])
        assert row[1:] == ["`ConfigError`", "2"], row
    for name in ("ENOSPC", "EDQUOT"):
        row = next(r for r in rows if name in r[0])
        assert row[1:] == ["`StorageError`", "5"], row
    assert "NoSuchBucket" in text and "403" in text
