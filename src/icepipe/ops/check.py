"""``icepipe check``: load pipeline (and catalog) files without running them, and report every
problem at once, each at its ``file:line:column``, with "did you mean" for misspelt keys and
values.

Two passes, both from the definitions the loaders use, so that ``check`` says what ``run``
would:

1. a structural pass over the field tables (:data:`icepipe.spec.PIPELINE`,
   :data:`icepipe.catalog.CATALOG`): unknown keys, values outside their choices, wrong types
   and missing keys, in every section at once;
2. the loader itself (:func:`icepipe.spec.pipeline_from_dict`, one catalog entry at a time)
   on a copy where the first pass's problems are set aside (a misspelt key renamed to the key
   it resembles, a bad value removed), for the checks between fields. The loader stops at the
   first problem it finds, so it is run again with the field it named set aside, until it
   passes.

Line numbers come from the YAML nodes' marks (``yaml.compose``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from icepipe.catalog import CATALOG, check_entry
from icepipe.errors import ConfigError
from icepipe.fields import Field, did_you_mean
from icepipe.fields import describe as _describe
from icepipe.spec import PIPELINE, pipeline_from_dict
from icepipe.spec import _StrictLoader as StrictLoader  # the loader's YAML rules

__all__ = ["FileKind", "Problem", "check_file", "detect_kind"]

FileKind = Literal["pipeline", "catalog"]
Path_ = tuple[str | int, ...]
_PLACEHOLDER = "icepipe-check-placeholder"
_MAX_LOADER_PASSES = 50


@dataclass(frozen=True)
class Problem:
    """One problem of a checked file, where it is and what to do."""

    file: str
    line: int
    column: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}:{self.column}: error: {where}{self.message}"


@dataclass
class _Finding:
    """A problem of the structural pass: where (``path``), and how the copy handed to the
    loader sets it aside (``rename`` a misspelt key, else drop the value)."""

    path: Path_
    message: str
    at_key: bool = False
    rename: str | None = None
    missing: bool = False


def detect_kind(data: object) -> FileKind:
    """``catalog`` for a mapping with ``repos`` and none of a pipeline's sections."""
    if not isinstance(data, Mapping) or "repos" not in data:
        return "pipeline"
    return "pipeline" if {"name", "source", "target"} & {str(k) for k in data} else "catalog"


def check_file(path: str | Path, kind: FileKind | None = None) -> list[Problem]:
    """Every problem of a pipeline (or catalog) file; an empty list when it loads.

    ``kind`` None: a catalog when the file looks like one (:func:`detect_kind`).
    """
    p = Path(path)
    shown = str(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        return [Problem(shown, 1, 1, None, f"cannot read the file: {exc.strerror}")]
    except UnicodeDecodeError as exc:
        return [Problem(shown, 1, 1, None, f"not UTF-8 text ({exc.reason}); save it as UTF-8")]
    try:
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader: plain data only
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return [Problem(shown, line, col, None, f"not valid YAML: {_yaml_reason(exc)}")]
    marks = _Marks(node)
    kind = kind or detect_kind(data)
    table = PIPELINE if kind == "pipeline" else CATALOG
    findings: list[_Finding] = []
    _walk(data, table, (), findings)
    problems = [
        marks.problem(shown, f.path, f.message, at_key=f.at_key and not f.missing) for f in findings
    ]
    fixed = _set_aside(data, findings)
    reported = [f.path for f in findings]
    base = p.resolve().parent
    if kind == "pipeline":
        problems += _loader_pass(
            fixed, (), reported, marks, shown, lambda d: pipeline_from_dict(d, base, path=shown)
        )
    elif isinstance(fixed, Mapping) and isinstance(fixed.get("repos"), Mapping):
        for name, entry in fixed["repos"].items():
            at: Path_ = ("repos", str(name))
            problems += _loader_pass(
                entry,
                at,
                reported,
                marks,
                shown,
                partial(check_entry, str(name), base=base, where=shown),
            )
    return sorted(problems, key=lambda pr: (pr.line, pr.column))


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else str(exc).splitlines()[0]


# ----------------------------------------------------------------------------------------------
# Pass 1: the field tables
# ----------------------------------------------------------------------------------------------


def _walk(value: object, fld: Field, path: Path_, out: list[_Finding]) -> None:
    """Check ``value`` against ``fld``, appending every problem found to ``out``."""
    if value is None:
        return  # an empty value reads as absent (the loader says when that is wrong)
    if fld.kind == "section":
        _walk_section(value, fld, path, out)
    elif fld.kind == "map":
        if not isinstance(value, Mapping):
            out.append(_Finding(path, f"expected a mapping; got {_describe(value)}"))
            return
        for key, item in value.items():
            if fld.values is not None:
                _walk(item, fld.values, (*path, str(key)), out)
    elif fld.kind == "choice":
        if value not in fld.choices:
            guess = did_you_mean(value, fld.choices) if isinstance(value, str) else None
            hint = f"; did you mean {guess!r}?" if guess else ""
            out.append(
                _Finding(
                    path, f"expected one of {', '.join(fld.choices)}; got {_describe(value)}{hint}"
                )
            )
    else:
        expected = _wrong_type(value, fld)
        if expected:
            out.append(_Finding(path, f"expected {expected}; got {_describe(value)}"))


def _wrong_type(value: object, fld: Field) -> str | None:
    """What ``value`` should have been, when it is not of ``fld``'s kind."""
    if fld.kind == "string" and not (isinstance(value, str) and value.strip()):
        return "a non-empty string"
    if fld.kind == "boolean" and not isinstance(value, bool):
        return "true or false"
    if fld.kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return "an integer"
    if fld.kind == "strings" and not (
        isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
    ):
        return "a non-empty list of names"
    return None


def _walk_section(value: object, fld: Field, path: Path_, out: list[_Finding]) -> None:
    if not isinstance(value, Mapping):
        out.append(_Finding(path, f"expected a mapping; got {_describe(value)}"))
        return
    present = {str(k) for k in value}
    renamed: set[str] = set()
    for key, item in value.items():
        k = str(key)
        if k in fld.fields:
            _walk(item, fld.fields[k], (*path, k), out)
            continue
        refused = fld.refuse(k) if fld.refuse else None
        if refused:
            out.append(_Finding((*path, k), refused, at_key=True))
            continue
        absent = [name for name in fld.fields if name not in present and name not in renamed]
        guess = did_you_mean(k, absent)
        if guess:
            renamed.add(guess)
            hint = f"did you mean {guess!r}?"
        else:
            hint = f"allowed: {', '.join(fld.fields)}"
        out.append(_Finding((*path, k), f"unknown key {k!r}; {hint}", at_key=True, rename=guess))
    for name, sub in fld.fields.items():
        if sub.required and name not in present and name not in renamed:
            kind = "a mapping" if sub.kind == "section" else sub.doc
            out.append(_Finding((*path, name), f"missing; expected {kind}", missing=True))


def _set_aside(data: object, findings: list[_Finding]) -> object:
    """A copy of ``data`` without the problems of ``findings``: misspelt keys renamed to the
    key they resemble, other bad keys and values removed."""
    fixed = copy.deepcopy(data)
    for f in findings:
        if f.missing or not f.path:
            continue
        parent = _get(fixed, f.path[:-1])
        if not isinstance(parent, dict) or f.path[-1] not in parent:
            continue
        item = parent.pop(f.path[-1])
        if f.rename is not None:
            parent[f.rename] = item
    return fixed


# ----------------------------------------------------------------------------------------------
# Pass 2: the loader, for the checks between fields
# ----------------------------------------------------------------------------------------------


def _loader_pass(
    data: object,
    prefix: Path_,
    reported: list[Path_],
    marks: _Marks,
    file: str,
    load: Callable[[Any], object],
) -> list[Problem]:
    """Run ``load`` on ``data`` until it passes, setting aside the field each error names."""
    out: list[Problem] = []
    data = copy.deepcopy(data)
    seen: list[Path_] = list(reported)
    for _ in range(_MAX_LOADER_PASSES):
        try:
            load(data)
            return out
        except ConfigError as exc:
            message = _own_message(exc, file)
            if exc.field is None:
                out.append(marks.problem(file, prefix, message))
                return out
            path = _field_path(exc.field, prefix)
            if not any(_related(path, r) for r in seen):
                at_key = "unknown key" in message
                out.append(marks.problem(file, path, message, at_key=at_key))
            seen.append(path)
            if not _set_field_aside(data, path[len(prefix) :], prefix):
                return out
    return out


def _own_message(exc: ConfigError, file: str) -> str:
    """The message without the field (:class:`Problem` shows it) and the file name."""
    text = str(exc)
    if exc.field:
        text = text.removeprefix(f"{exc.field}: ")
    return text.removeprefix(f"{file}: ")


def _field_path(text: str, prefix: Path_) -> Path_:
    """``source.storage.region`` or ``target.config.x[0].dims`` as a path; catalog fields start
    with ``repos.<name>.`` (a name may hold dots: ``prefix`` says where it ends)."""
    head = ".".join(str(p) for p in prefix)
    if prefix and (text == head or text.startswith(head + ".")):
        rest = text[len(head) + 1 :]
        return (*prefix, *_field_path(rest, ())) if rest else prefix
    out: list[str | int] = []
    for part in filter(None, text.split(".")):
        name, *indices = re.split(r"\[(\d+)\]", part)
        out.append(name)
        out += [int(i) for i in indices if i]
    return tuple(out)


def _related(a: Path_, b: Path_) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _set_field_aside(data: object, path: Path_, prefix: Path_) -> bool:
    """Remove ``path`` from ``data``, or put a placeholder where a required key is missing;
    False when neither moves the loader on."""
    if not path:
        return False
    parent = _get(data, path[:-1])
    key = path[-1]
    if isinstance(parent, dict) and key in parent:
        del parent[key]
        return True
    if isinstance(parent, list) and isinstance(key, int) and key < len(parent):
        del parent[key]
        return True
    fld = _field_at(PIPELINE if not prefix else CATALOG, (*prefix, *path))
    if not isinstance(parent, dict) or fld is None:
        return False
    placeholders: dict[str, object] = {
        "string": _PLACEHOLDER,
        "custom": _PLACEHOLDER,
        "section": {},
        "strings": [_PLACEHOLDER],
    }
    if fld.kind not in placeholders:
        return False
    parent[key] = copy.deepcopy(placeholders[fld.kind])
    return True


def _field_at(table: Field, path: Path_) -> Field | None:
    fld: Field | None = table
    for part in path:
        if fld is None:
            return None
        fld = fld.values if fld.kind == "map" else fld.fields.get(str(part))
    return fld


def _get(data: object, path: Path_) -> object:
    for part in path:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_dict or in_list):
            return None
        data = cast(Any, data)[part]
    return data


# ----------------------------------------------------------------------------------------------
# Where things are in the file
# ----------------------------------------------------------------------------------------------


class _Marks:
    """Line and column (1-based) of every key and value of a composed YAML document."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.keys: dict[Path_, tuple[int, int]] = {}
        self.values: dict[Path_, tuple[int, int]] = {}
        if node is not None:
            self._index(node, ())

    def _index(self, node: yaml.Node, path: Path_) -> None:
        self.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in cast(list[tuple[yaml.Node, yaml.Node]], node.value):
                child = (*path, str(key_node.value))
                self.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                self._index(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(cast(list[yaml.Node], node.value)):
                self._index(item, (*path, i))

    def problem(self, file: str, path: Path_, message: str, *, at_key: bool = False) -> Problem:
        """A :class:`Problem` at ``path``'s key (``at_key``) or value; at its nearest enclosing
        key when ``path`` is not in the file (a missing key)."""
        where = (self.keys if at_key else self.values).get(path)
        probe = path
        while where is None and probe:
            probe = probe[:-1]
            where = self.keys.get(probe) if probe else self.values.get(probe)
        line, column = where or (1, 1)
        field = ".".join(str(p) for p in path) or None
        return Problem(file, line, column, field, message)
