"""The rules of docs/architecture.md that code can break without a test failing elsewhere:
no function in src/ over 100 lines, and imports pointing one way.

Read from the source with :mod:`ast` (nothing is imported). An import under ``if
TYPE_CHECKING:`` never runs, so it counts for type annotations only; an import inside a
function counts like one at the top of the module.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
MAX_FUNCTION_LINES = 100


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. icepipe.sources.scan
    name: str  # what it imports, absolute: icepipe.repository.ledger, icechunk.xarray
    line: int
    typing_only: bool  # under `if TYPE_CHECKING:`
    in_function: bool

    def of(self, *prefixes: str) -> bool:
        """Whether the imported name is one of ``prefixes`` or inside one."""
        return any(self.name == p or self.name.startswith(p + ".") for p in prefixes)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.name}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.Module, module: str, *, package: bool = False) -> list[Import]:
    """Every import statement of ``tree`` (the source of ``module``), names made absolute."""
    found: list[Import] = []
    base = module.split(".") if package else module.split(".")[:-1]

    def visit(node: ast.AST, typing_only: bool, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, node.lineno, typing_only, in_function))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = base[: len(base) - (node.level - 1)]
                name = ".".join([*head, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            # `from icepipe import repository` and `from . import ledger` import modules.
            whole = name == "icepipe" or (node.level and not node.module)
            names = [f"{name}.{a.name}" for a in node.names] if whole else [name]
            found.extend(Import(module, n, node.lineno, typing_only, in_function) for n in names)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True, in_function)
            for child in node.orelse:
                visit(child, typing_only, in_function)
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only, inner)

    visit(tree, False, False)
    return found


def long_functions(tree: ast.Module, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """Functions and methods (nested ones too) longer than ``limit`` lines, counted from the
    ``def`` line to the last line of the body, docstring included."""
    return [
        (node.name, length)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > limit
    ]


def _sources() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted((SRC / "icepipe").rglob("*.py")):
        yield _module_name(path), path, ast.parse(path.read_text(), str(path))


def _all_imports() -> list[Import]:
    return [
        imp
        for module, path, tree in _sources()
        for imp in imports_of(tree, module, package=path.name == "__init__.py")
    ]


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# ----------------------------------------------------------------------------------------------
# The rules
# ----------------------------------------------------------------------------------------------


def test_no_function_in_src_is_over_100_lines() -> None:
    too_long = [
        f"{path.relative_to(SRC)}: {name} ({n} lines)"
        for _module, path, tree in _sources()
        for name, n in long_functions(tree)
    ]
    assert not too_long, f"split these into smaller functions: {too_long}"


def test_plan_is_pure() -> None:
    """``plan`` takes plain records: it imports neither sources, repository nor icechunk."""
    bad = [
        str(i)
        for i in _all_imports()
        if _in(i.module, "icepipe.plan")
        and i.of("icepipe.sources", "icepipe.repository", "icechunk", "obstore")
    ]
    assert not bad, bad


def test_sources_and_repository_never_import_each_other() -> None:
    bad = [
        str(i)
        for i in _all_imports()
        if (_in(i.module, "icepipe.sources") and i.of("icepipe.repository"))
        or (_in(i.module, "icepipe.repository") and i.of("icepipe.sources"))
    ]
    assert not bad, bad


def test_only_repository_imports_icechunk() -> None:
    """At module level or inside functions; type annotations (``TYPE_CHECKING``) may name it."""
    bad = [
        str(i)
        for i in _all_imports()
        if i.of("icechunk") and not i.typing_only and not _in(i.module, "icepipe.repository")
    ]
    assert not bad, bad


def test_lower_layers_never_import_the_stages_above_them() -> None:
    """Nothing below ``pipeline`` imports ``pipeline``, ``ingest``, ``cli`` or ``ops``."""
    lower = ("icepipe.plan", "icepipe.sources", "icepipe.repository", "icepipe.execute")
    lower += ("icepipe.storage", "icepipe.spec", "icepipe.model", "icepipe.errors")
    bad = [
        str(i)
        for i in _all_imports()
        if _in(i.module, *lower)
        and i.of("icepipe.pipeline", "icepipe.ingest", "icepipe.cli", "icepipe.ops")
    ]
    assert not bad, bad


def test_spec_imports_only_leaf_modules() -> None:
    """A pipeline file loads without the I/O stack."""
    leaves = ("icepipe.storage", "icepipe.fields", "icepipe.globs", "icepipe.cron")
    leaves += ("icepipe.catalog", "icepipe.errors")
    bad = [
        str(i)
        for i in _all_imports()
        if i.module == "icepipe.spec" and i.of("icepipe") and not i.of(*leaves)
    ]
    assert not bad, bad


def test_storage_is_a_leaf() -> None:
    """``icepipe.storage`` imports no icechunk, and obstore only inside the functions that
    build stores, so that ``spec`` and ``catalog`` validate without them."""
    own = ("icepipe.storage", "icepipe.errors", "icepipe.fields")
    bad = [
        str(i)
        for i in _all_imports()
        if _in(i.module, "icepipe.storage")
        and (
            (i.of("icepipe") and not i.of(*own))
            or i.of("icechunk")
            or (i.of("obstore") and not i.in_function and not i.typing_only)
        )
    ]
    assert not bad, bad


def test_web_sits_on_top() -> None:
    """``icepipe.web`` (the read-only web catalog) is imported by nothing but itself and the
    ``web`` command of ``cli``; it reads through ``repository``, ``ops`` and ``catalog`` and
    never imports the write stack (``pipeline``, ``ingest``, ``execute``, ``cli``)."""
    bad = [
        str(i)
        for i in _all_imports()
        if (i.of("icepipe.web") and not _in(i.module, "icepipe.web") and i.module != "icepipe.cli")
        or (
            _in(i.module, "icepipe.web")
            and i.of("icepipe.pipeline", "icepipe.ingest", "icepipe.execute", "icepipe.cli")
        )
    ]
    assert not bad, bad


# ----------------------------------------------------------------------------------------------
# The checks themselves see what they must
# ----------------------------------------------------------------------------------------------


def _parse(text: str) -> ast.Module:
    return ast.parse(textwrap.dedent(text))


def test_imports_are_read_with_where_they_run() -> None:
    tree = _parse(
        """
        from __future__ import annotations
        from typing import TYPE_CHECKING
        import icechunk.xarray
        from . import ledger
        from ..sources import scan
        from icepipe import repository, plan
        if TYPE_CHECKING:
            import icechunk
        else:
            import obstore
        def f():
            from icepipe.sources.formats import grib
        class C:
            def m(self):
                import obstore.store
        """
    )
    got = {
        (i.name, i.typing_only, i.in_function)
        for i in imports_of(tree, "icepipe.repository.native")
    }
    assert got == {
        ("__future__", False, False),
        ("typing", False, False),
        ("icechunk.xarray", False, False),
        ("icepipe.repository.ledger", False, False),
        ("icepipe.sources", False, False),
        ("icepipe.repository", False, False),
        ("icepipe.plan", False, False),
        ("icechunk", True, False),
        ("obstore", False, False),
        ("icepipe.sources.formats", False, True),
        ("obstore.store", False, True),
    }
    (own,) = imports_of(_parse("from . import x"), "icepipe.ops", package=True)
    assert own.name == "icepipe.ops.x"


@pytest.mark.parametrize(("body", "too_long"), [(98, False), (99, True)])
def test_function_length_counts_from_def_to_the_last_line(body: int, too_long: bool) -> None:
    # def line + docstring + `body` lines: 100 lines with body=98.
    lines = ["@decorator", "def f():", '    """Doc."""'] + ["    x = 1"] * body
    tree = ast.parse("\n".join(lines))
    assert long_functions(tree) == ([("f", body + 2)] if too_long else [])
    nested = ast.parse("class C:\n    def m(self):\n" + "        pass\n" * 101)
    assert long_functions(nested) == [("m", 102)]
