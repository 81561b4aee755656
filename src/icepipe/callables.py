"""Functions named in configuration: ``"module:function"`` or ``"module.function"``.

Pipelines name user code in two places, a cluster factory (``cluster:``, ``--cluster``,
``$ICEPIPE_CLUSTER``) and a preprocess hook (``source.preprocess``); both are imported here, so
both accept the same forms and fail the same way: a :class:`~icepipe.errors.ConfigError` naming
the field, the value and the fix, never an ``ImportError`` traceback. A leaf module: it imports
nothing of icepipe but ``errors``.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

from icepipe.errors import ConfigError

__all__ = ["PATTERN", "import_callable", "split_callable"]

_NAME = r"[A-Za-z_]\w*"
_DOTTED = rf"{_NAME}(?:\.{_NAME})*"
_FORM = re.compile(rf"^(?P<module>{_DOTTED})(?::(?P<attr>{_DOTTED}))?$")
#: The forms :func:`split_callable` accepts, as a JSON Schema ``pattern`` (ECMA-262).
PATTERN = rf"^{_DOTTED}(?::{_DOTTED}|\.{_NAME})$"


def split_callable(spec: object, *, what: str, field: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``"module:attr"`` or ``"module.attr"`` (the last dotted part
    is the attribute; ``attr`` may itself be dotted after a colon: ``mod:Class.method``).

    Raises
    ------
    ConfigError
        ``spec`` has neither form (``field`` names where it came from).
    """
    m = _FORM.match(spec) if isinstance(spec, str) else None
    if m is None or (m["attr"] is None and "." not in m["module"]):
        noun, example = _EXAMPLES.get(what, ("function", "mymodule:function"))
        raise ConfigError(
            f"expected 'module:{noun}' or 'module.{noun}' for the {what} (e.g. {example!r}); "
            f"got {spec!r}",
            field=field,
        )
    if m["attr"] is not None:
        return m["module"], m["attr"]
    module, _, attr = m["module"].rpartition(".")
    return module, attr


_EXAMPLES = {
    "cluster factory": ("factory", "clusters:slurm"),
    "preprocess hook": ("function", "fixes:drop_bad_attrs"),
}


def import_callable(
    spec: str,
    *,
    what: str,
    field: str,
    search_path: str | None = None,
    install_where: str = "",
) -> Callable[..., Any]:
    """Import the function ``spec`` names (``search_path``, the pipeline's folder, first).

    Parameters
    ----------
    spec
        ``"module:function"`` or ``"module.function"``.
    what
        What the function is for, in messages (``"cluster factory"``).
    field
        Where ``spec`` came from (``"source.preprocess"``, ``"--cluster"``); the error's field.
    search_path
        A folder put first on ``sys.path`` (kept there: Dask workers and later imports look
        there too).
    install_where
        Where a missing module must be installed, in messages (``" on the client and every
        worker"``).

    Raises
    ------
    ConfigError
        ``spec`` is malformed; the module is not found, or fails while it is imported; it has
        no such attribute; or the attribute is not callable.
    """
    module_name, attr = split_callable(spec, what=what, field=field)
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
    module = _import_module(module_name, spec, what=what, field=field, where=install_where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"the {what} {spec!r}: {_named(obj)} has no attribute {part!r}"
                f"{_defined(obj)}; fix the name in {field}",
                field=field,
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"the {what} {spec!r} names an object of type {type(obj).__name__}, not a "
            f"function; name a function in {field}",
            field=field,
        )
    return obj  # type: ignore[no-any-return]


def _import_module(name: str, spec: str, *, what: str, field: str, where: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        if name == missing or name.startswith(missing + "."):
            raise ConfigError(
                f"cannot import module {name!r} of the {what} {spec!r} (no module named "
                f"{missing!r}); put it next to the pipeline file or install it{where}",
                field=field,
            ) from exc
        raise ConfigError(
            f"module {name!r} of the {what} {spec!r} imports {missing!r}, which is not "
            f"installed: install {missing!r}{where}",
            field=field,
        ) from exc
    except Exception as exc:  # a SyntaxError, or anything the module raises at import
        raise ConfigError(
            f"importing module {name!r} of the {what} {spec!r} failed: "
            f"{type(exc).__name__}: {exc}; fix the module",
            field=field,
        ) from exc


def _named(obj: Any) -> str:
    if hasattr(obj, "__spec__") and hasattr(obj, "__name__"):
        return f"module {obj.__name__!r}"
    return repr(obj) if not hasattr(obj, "__qualname__") else repr(obj.__qualname__)


def _defined(obj: Any) -> str:
    """``" (it defines f, g)"``: the public callables of ``obj``, a few of them."""
    try:
        members = vars(obj)
    except TypeError:  # no __dict__
        return ""
    home = getattr(obj, "__name__", None) if hasattr(obj, "__spec__") else None
    names = sorted(
        n
        for n, v in members.items()
        if not n.startswith("_")
        and callable(v)
        # A module's own functions and classes, not the names it imports.
        and (home is None or getattr(v, "__module__", home) == home)
    )
    if not names:
        return ""
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f" (it defines {shown})"
