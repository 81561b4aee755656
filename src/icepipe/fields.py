"""Validation of single fields of user-written mappings (pipelines, storage options).

Shared by :mod:`icepipe.spec`, :mod:`icepipe.storage` and :mod:`icepipe.catalog`, so that
all say the same thing about the same mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from icepipe.errors import ConfigError

__all__ = ["Field", "Kind", "describe", "did_you_mean", "no_unknown", "optional_str"]

#: What a :class:`Field` holds: ``custom`` values are checked by their loader alone and
#: described to JSON Schema by :attr:`Field.schema`.
Kind = Literal["string", "boolean", "integer", "choice", "strings", "section", "map", "custom"]


@dataclass(frozen=True)
class Field:
    """One key of a user-written mapping (a pipeline, a catalog entry): its kind, allowed
    choices, nested keys and documentation.

    The tables of these (:data:`icepipe.spec.PIPELINE`, :data:`icepipe.catalog.CATALOG`) are
    read by the loaders for their unknown-key and choice checks, by ``icepipe check`` (which
    reports every problem at once) and by ``icepipe schema`` (the JSON Schema), so the three
    cannot drift apart.

    Attributes
    ----------
    kind
        ``string`` (non-empty), ``boolean``, ``integer``, ``choice`` (one of ``choices``),
        ``strings`` (a non-empty list of names), ``section`` (a mapping of ``fields``),
        ``map`` (a mapping of any names to ``values``) or ``custom`` (any other shape,
        described by ``schema``).
    schema
        JSON Schema of a ``custom`` value; for other kinds, keywords added to the generated
        schema (``pattern``, ``minimum``, ``oneOf`` of required keys, ...).
    refuse
        For a section: a key -> message hook naming keys refused with their own fix (a
        secret pasted into a pipeline), or None.
    """

    kind: Kind
    doc: str
    choices: tuple[str, ...] = ()
    fields: Mapping[str, Field] = field(default_factory=dict)
    values: Field | None = None
    required: bool = False
    default: Any = None
    schema: Mapping[str, Any] = field(default_factory=dict)
    refuse: Callable[[str], str | None] | None = field(default=None, compare=False)

    def json_schema(self) -> dict[str, Any]:
        """This field as a JSON Schema (draft 2020-12) fragment, with its doc and default."""
        out: dict[str, Any] = {"description": self.doc}
        if self.default is not None:
            out["default"] = self.default
        if self.kind == "string":
            out.update(type="string", minLength=1)
        elif self.kind in ("boolean", "integer"):
            out["type"] = self.kind
        elif self.kind == "choice":
            out["enum"] = list(self.choices)
        elif self.kind == "strings":
            out.update(type="array", minItems=1, items={"type": "string", "minLength": 1})
        elif self.kind == "section":
            out.update(
                type="object",
                properties={k: f.json_schema() for k, f in self.fields.items()},
                additionalProperties=False,
            )
            required = [k for k, f in self.fields.items() if f.required]
            if required:
                out["required"] = required
        elif self.kind == "map" and self.values is not None:
            out.update(type="object", additionalProperties=self.values.json_schema())
        out.update(self.schema)
        return out


def did_you_mean(word: object, options: Collection[str]) -> str | None:
    """The option closest to a misspelt ``word`` (difflib), or None when none is close."""
    close = difflib.get_close_matches(str(word), sorted(options), n=1, cutoff=0.6)
    return close[0] if close else None


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
        guess = did_you_mean(unknown[0], allowed)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise ConfigError(
            f"{context + ': ' if context else ''}unknown key(s) "
            f"{', '.join(repr(k) for k in unknown)}{hint}; allowed: {', '.join(sorted(allowed))}",
            field=prefix + unknown[0],
        )
