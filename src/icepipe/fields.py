"""Validation of single fields of user-written mappings (pipelines, storage options).

Shared by :mod:`icepipe.spec` and :mod:`icepipe.storage` so that both say the same thing about
the same mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icepipe.errors import ConfigError

__all__ = ["describe", "optional_str"]


def describe(value: object) -> str:
    """``type value`` for error messages: ``int 3``, ``str ''``."""
    return f"{type(value).__name__} {value!r}"


def optional_str(m: Mapping[str, Any], key: str, prefix: str) -> str | None:
    """``m[key]`` stripped, or None when absent.

    Raises
    ------
    ConfigError
        The value is not a non-empty string (the field is ``prefix + key``).
    """
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string; got {describe(value)}", field=prefix + key)
    return value.strip()
