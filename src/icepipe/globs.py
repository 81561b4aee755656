"""Glob patterns over paths and URLs (``*``, ``?``, ``[...]``, ``**``): pure string functions,
shared by the pipeline spec (checks at load time) and the listing of sources."""

from __future__ import annotations

import re

__all__ = ["MAGIC_CHARS", "glob_to_regex", "split_glob"]

#: Characters that make a path a pattern.
MAGIC_CHARS = frozenset("*?[")


def split_glob(path: str) -> tuple[str, str]:
    """Split ``/a/b/*/c*.nc`` into the literal directory ``/a/b`` and the pattern ``*/c*.nc``."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(c in MAGIC_CHARS for c in part):
            return "/".join(parts[:i]) or "/", "/".join(parts[i:])
    return "/".join(parts[:-1]) or "/", parts[-1]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob (``*``, ``?``, ``[...]``, ``**``) to a regex; ``*`` never crosses ``/``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)  # names may hold newlines
