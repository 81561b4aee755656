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


#: A name starting with a dot (``.hidden``, macOS's ``._f.nc``, rsync's ``.f.nc.Xa1b2``) is
#: matched only by a pattern segment starting with a dot, as the shell and ``glob.glob`` do:
#: this is put before a wildcard that starts a segment.
_NO_DOT = r"(?!\.)"


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob (``*``, ``?``, ``[...]``, ``**``) to a regex; ``*`` never crosses ``/``.

    As in the shell, wildcards do not match a leading dot: ``*.nc`` does not list ``._a.nc``
    and ``**`` does not descend into ``.snapshot/``; ``.*.nc`` or ``.snapshot/*.nc`` do.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        starts = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**/", i):
            # At a segment's start: any folders, none hidden. Within one (``a**/b``): the
            # rest of that name, then any folders, or nothing (``ab``).
            deeper = f"(?:{_NO_DOT}[^/]+/)*"
            out.append(deeper if starts else f"(?:[^/]*/{deeper})?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(f"{_NO_DOT if starts else ''}[^/]*(?:/{_NO_DOT}[^/]*)*")
            i += 2
            continue
        if starts and c in "*?[" and (c != "[" or _class_end(pattern, i) is not None):
            out.append(_NO_DOT)
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = _class_end(pattern, i)
            if end is None:
                out.append(re.escape(c))
            else:
                out.append(_class(pattern[i + 1 : end]))
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)  # names may hold newlines


def _class_end(pattern: str, start: int) -> int | None:
    """The index of the ``]`` closing the class opened at ``start``, or ``None`` (then ``[`` is
    a plain character). A ``]`` right after ``[`` or ``[!`` is a member, as in fnmatch."""
    j = start + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    end = pattern.find("]", j)
    return None if end == -1 else end


def _class(body: str) -> str:
    """The regex of a glob class ``[body]`` (``!`` or ``^`` first negates), as fnmatch
    translates it: reversed ranges (``b-a``) match nothing, regex syntax in members is escaped."""
    negate = body[:1] in ("!", "^")
    members = body[1:] if negate else body
    # Split at the hyphens of ranges: not the first member, nor a hyphen ending a range.
    chunks: list[str] = []
    start, k = 0, 1
    while (h := members.find("-", k)) >= 0:
        chunks.append(members[start:h])
        start, k = h + 1, h + 3
    if members[start:]:
        chunks.append(members[start:])
    elif chunks:
        chunks[-1] += "-"  # a trailing hyphen is a member
    for n in range(len(chunks) - 1, 0, -1):
        if chunks[n - 1][-1:] > chunks[n][:1]:  # a reversed range: drop it
            chunks[n - 1] = chunks[n - 1][:-1] + chunks[n][1:]
            del chunks[n]
    escaped = "-".join(re.sub(r"([-\\\[\]^&~|])", r"\\\1", c) for c in chunks)
    if not escaped:
        return "[^/]" if negate else "(?!)"  # empty: never matches (negated: any character)
    return f"[{'^' if negate else ''}{escaped}]"
