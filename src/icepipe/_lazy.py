"""PEP 562 lazy attributes for a package's ``__init__`` (``icepipe``, ``icepipe.repository``,
``icepipe.sources``): a public name is imported from its module on first use, so importing the
package costs nothing until a name is needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, table: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``table`` maps each lazy name to the module holding
    it; once imported, the value is stored in ``namespace`` (the package's ``globals()``), so
    later lookups are plain attribute reads."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
