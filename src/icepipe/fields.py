"""Validation of single fields of user-written mappings (pipelines, storage options).

Shared by :mod:`icepipe.spec`, :mod:`icepipe.storage` and :mod:`icepipe.catalog`, so that
all say the same thing about the same mistake.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from icepipe.errors import ConfigError

__all__ = ["describe", "no_unknown", "optional_str"]


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


def no_unknown(
    m: Mapping[Any, Any], allowed: Collection[str], prefix: str = "", *, context: str = ""
) -> None:
    """Refuse keys of ``m`` outside ``allowed`` (a typo must not be ignored silently).

    Raises
    ------
    ConfigError
        Naming the unknown keys, the allowed ones, and the first bad field (``prefix + key``);
        ``context`` (e.g. the file) starts the message.
    """
    unknown = sorted(str(k) for k in m if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{context + ': ' if context else ''}unknown key(s) "
            f"{', '.join(repr(k) for k in unknown)}; allowed: {', '.join(sorted(allowed))}",
            field=prefix + unknown[0],
        )
