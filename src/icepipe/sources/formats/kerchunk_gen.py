"""Templates and ``gen`` keys of version-1 kerchunk reference sets, expanded as fsspec's
``ReferenceFileSystem`` expands them (``_process_templates``, ``_process_gen``).

A ``gen`` entry describes many references at once::

    {"key": "data/{{i}}.0", "url": "{{u}}/part-{{i}}.bin",
     "offset": "{{i * 1000}}", "length": "1000",
     "dimensions": {"i": {"start": 0, "stop": 50, "step": 1}}}

Every combination of the ``dimensions`` (a ``range(start=0, stop, step=1)`` or a list of
values) renders ``key``, ``url`` and, together or not at all, ``offset`` and ``length``, as
jinja2 templates (sandboxed) over the dimension values and the set's ``templates``. Generated
references come after ``refs`` and replace a key ``refs`` also has, as fsspec's do.

Unlike fsspec (which renders each template anew per reference, and ignores ``gen`` unless
``simple_templates=False``), each template is compiled once, templates that only substitute
names (``{{u}}/{{i}}``) are filled in without jinja2, and the combinations are generated one
at a time; a ``gen`` entry whose keys cannot fall in ``source.group`` is not expanded. A name
no template or dimension defines is an error here (jinja2 would render it empty).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from icepipe.errors import SourceError, short_message

__all__ = ["MAX_GENERATED", "expand_url", "generated_refs", "template_context"]

#: References the ``gen`` keys of one set may make: a larger product is almost surely a typo
#: (``"stop": 1e9``) and would exhaust memory before anything could be ingested.
MAX_GENERATED = 20_000_000

_NAME = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

Render = Callable[[Mapping[str, Any]], str]


def template_context(set_url: str, templates: Mapping[str, Any]) -> dict[str, Any]:
    """The set's ``templates`` as the values templates render with: text, or (for a template
    that itself holds ``{{ }}``) a function of keyword arguments, as in fsspec."""
    out: dict[str, Any] = {}
    for name, value in templates.items():
        text = str(value)
        if "{{" in text:
            inner = _compile(set_url, f"templates.{name}", text)
            out[str(name)] = lambda _r=inner, **kw: _r(kw)
        else:
            out[str(name)] = text
    return out


def expand_url(set_url: str, path: str, context: Mapping[str, Any]) -> str:
    """A reference's URL with its ``{{ }}`` templates filled in."""
    return _compile(set_url, "a reference URL", path)(context)


def generated_refs(
    set_url: str, gens: Any, context: Mapping[str, Any], group: str | None = None
) -> Iterator[tuple[str, list[Any]]]:
    """The references the ``gen`` entries make, one at a time: ``(key, [url])`` or
    ``(key, [url, offset, length])``.

    Raises
    ------
    SourceError
        An entry lacks ``key``, ``url`` or ``dimensions``, has only one of ``offset`` and
        ``length``, a dimension is neither a list nor ``{start, stop, step}``, a template does
        not render (syntax, an undefined name), an offset or length is not an integer, or the
        entries make more than :data:`MAX_GENERATED` references.
    """
    if not isinstance(gens, list):
        raise _bad(set_url, "'gen' is not a list of generator entries")
    entries = [_entry(set_url, i, gen) for i, gen in enumerate(gens)]
    total = sum(math.prod(len(values) for values in dims.values()) for _, dims, _ in entries)
    if total > MAX_GENERATED:
        raise _bad(
            set_url,
            f"its 'gen' keys make {total:,} references, more than icepipe expands "
            f"({MAX_GENERATED:,}); check the dimensions' start/stop/step",
        )
    for i, dims, gen in entries:
        if group is not None and not _may_hold(gen["key"], group):
            continue
        yield from _expand_entry(set_url, i, dims, gen, context)


def _expand_entry(
    set_url: str,
    i: int,
    dims: dict[str, range | list[Any]],
    gen: Mapping[str, Any],
    context: Mapping[str, Any],
) -> Iterator[tuple[str, list[Any]]]:
    where = f"gen[{i}]"
    clash = sorted(set(dims) & set(context))
    if clash:
        raise _bad(set_url, f"{where} names {clash[0]!r} both as a dimension and a template")
    key = _compile(set_url, f"{where}.key", gen["key"])
    url = _compile(set_url, f"{where}.url", gen["url"])
    ranged = "offset" in gen
    offset = _compile(set_url, f"{where}.offset", gen["offset"]) if ranged else None
    length = _compile(set_url, f"{where}.length", gen["length"]) if ranged else None
    names = list(dims)
    for values in itertools.product(*dims.values()):
        ctx = {**context, **dict(zip(names, values, strict=True))}
        if offset is None or length is None:
            yield key(ctx), [url(ctx)]
            continue
        start = _int(set_url, where, "offset", offset(ctx))
        yield key(ctx), [url(ctx), start, _int(set_url, where, "length", length(ctx))]


def _entry(set_url: str, i: int, gen: Any) -> tuple[int, dict[str, range | list[Any]], Any]:
    where = f"gen[{i}]"
    if not isinstance(gen, dict) or any(k not in gen for k in ("key", "url", "dimensions")):
        raise _bad(set_url, f"{where} is not an object with 'key', 'url' and 'dimensions'")
    if ("offset" in gen) != ("length" in gen):
        raise _bad(set_url, f"{where} has only one of 'offset' and 'length' (both, or neither)")
    if not isinstance(gen["dimensions"], dict):
        raise _bad(set_url, f"{where}.dimensions is not an object")
    dims: dict[str, range | list[Any]] = {}
    for name, spec in gen["dimensions"].items():
        if isinstance(spec, list):
            dims[str(name)] = spec
            continue
        try:
            dims[str(name)] = range(
                int(spec.get("start", 0)), int(spec["stop"]), int(spec.get("step", 1))
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise _bad(
                set_url,
                f"{where}.dimensions.{name} is {spec!r}, not a list nor "
                f"{{'start', 'stop', 'step'}} with integers ({short_message(exc)})",
            ) from exc
    return i, dims, gen


def _may_hold(key_template: Any, group: str) -> bool:
    """Whether keys rendered from ``key_template`` may lie in ``group`` (its literal text
    before the first ``{`` is compared with the group's path)."""
    literal = str(key_template).split("{", 1)[0]
    prefix = group.strip("/") + "/"
    return literal.startswith(prefix) or prefix.startswith(literal)


def _compile(set_url: str, where: str, template: Any) -> Render:
    """``template`` as a function of the values it renders with."""
    text = str(template)
    if "{" not in text:
        return lambda ctx: text
    pieces = _NAME.split(text)
    literals, names = pieces[0::2], pieces[1::2]
    if not any("{{" in t or "{%" in t or "{#" in t for t in literals):
        return _substitution(set_url, where, literals, names)
    import jinja2
    import jinja2.sandbox

    try:
        env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
        compiled = env.from_string(text)
    except jinja2.TemplateError as exc:
        raise _bad(set_url, f"{where} {text!r} is not a template ({short_message(exc)})") from exc

    def render(ctx: Mapping[str, Any]) -> str:
        try:
            return compiled.render(ctx)
        except Exception as exc:
            raise _bad(set_url, f"{where} {text!r} does not render ({short_message(exc)})") from exc

    return render


def _substitution(set_url: str, where: str, literals: list[str], names: list[str]) -> Render:
    """A template of ``{{name}}`` substitutions only, filled in as jinja2 would (``str``)."""

    def render(ctx: Mapping[str, Any]) -> str:
        out = [literals[0]]
        for name, literal in zip(names, literals[1:], strict=True):
            if name not in ctx:
                raise _bad(
                    set_url,
                    f"{where} uses {{{{{name}}}}}, which no template or dimension defines",
                )
            out.append(str(ctx[name]))
            out.append(literal)
        return "".join(out)

    return render


def _int(set_url: str, where: str, field: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad(set_url, f"{where}.{field} renders as {text!r}, not an integer") from None


def _bad(set_url: str, what: str) -> SourceError:
    return SourceError(
        f"{set_url}: {what}; fix the reference set (or expand it with fsspec and write it "
        "again), or remove it from source.urls",
        url=set_url,
    )
