"""Text from repositories made safe to show: what is not UTF-8, and what is too long.

Zarr attributes are JSON, and JSON strings may hold lone surrogates (``"\\udce9"``): how
Python carries bytes that were not UTF-8 (``surrogateescape``, e.g. a Latin-1 attribute of a
netCDF file). Such a string cannot be encoded as UTF-8 for a page, a JSON answer, SQLite or
a picture's title. :func:`safe_text` shows those bytes as ``\\xe9`` (and any other lone
surrogate as ``\\udXXX``): the page says what is stored, nothing fails.
"""

from __future__ import annotations

import re

__all__ = ["safe_text", "shorten"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` encodable as UTF-8: lone surrogates written as escapes (the same object when
    there is none)."""
    return _SURROGATE.sub(_escape, text) if _SURROGATE.search(text) else text


def shorten(text: str, most: int) -> str:
    """``text`` cut to ``most`` characters (``…`` ending a cut one)."""
    return text if len(text) <= most else text[: max(0, most - 1)] + "…"
