"""Pure planning: which files are new, in what order they go, and whether they fit together.

Nothing here does I/O; every function takes and returns plain values, so it is tested directly
(and with Hypothesis) without files or repositories.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from icepipe.errors import SchemaMismatchError, SourceError
from icepipe.model import FileSchema, SourceFile, TargetSchema, VariableSchema

__all__ = ["AppendPlan", "Selection", "plan_append", "select_new"]


@dataclass(frozen=True)
class Selection:
    """The listed files split by what the ledger says of them."""

    new: tuple[SourceFile, ...]
    already: tuple[SourceFile, ...]


@dataclass(frozen=True)
class AppendPlan:
    """The new files in concat order, and whether they extend an existing group."""

    order: tuple[str, ...]
    append: bool
    new_length: int


def select_new(listed: Sequence[SourceFile], ledger: Mapping[str, Mapping[str, Any]]) -> Selection:
    """Split ``listed`` into files not yet ingested and files already in the ledger.

    Raises
    ------
    SourceError
        A file was ingested before and has changed since (same URL, different size or mtime).
    """
    new: list[SourceFile] = []
    already: list[SourceFile] = []
    changed: list[str] = []
    changed_urls: list[str] = []
    for f in listed:
        record = ledger.get(f.url)
        if record is None:
            new.append(f)
        elif f.same_version(dict(record)):
            already.append(f)
        else:
            changed_urls.append(f.url)
            changed.append(
                f"{f.url} (ingested: size {record.get('size')}, mtime {record.get('mtime')}; "
                f"now: size {f.size}, mtime {f.mtime})"
            )
    if changed:
        raise SourceError(
            "source file(s) changed after they were ingested: "
            + "; ".join(changed[:5])
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            + ". Restore the original file, or ingest the new version into a new branch or repo",
            urls=changed_urls,
        )
    return Selection(new=tuple(new), already=tuple(already))


def _fmt_var(v: VariableSchema) -> str:
    return f"dims {v.dims}, dtype {v.dtype}"


def _check_against(
    ref_name: str,
    ref_vars: Mapping[str, VariableSchema],
    other: FileSchema,
    concat_dim: str,
    *,
    ref_url: str | None,
    order_by: str | None = None,
) -> None:
    """Raise when ``other`` does not have exactly the variables of the reference."""
    urls = tuple(u for u in (other.url, ref_url) if u)
    missing = sorted(set(ref_vars) - set(other.variables))
    extra = sorted(set(other.variables) - set(ref_vars))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing)}")
        if extra:
            parts.append(f"has extra {', '.join(extra)}")
        raise SchemaMismatchError(
            f"{other.url}: variables differ from {ref_name}: {'; '.join(parts)}. Files combined "
            "along one dimension must hold the same variables: fix or remove the file",
            urls=urls,
        )
    for name, ref in ref_vars.items():
        var = other.variables[name]
        if var.dims != ref.dims or var.dtype != ref.dtype:
            raise SchemaMismatchError(
                f"{other.url}: variable {name!r} has {_fmt_var(var)} but {ref_name} has "
                f"{_fmt_var(ref)}; fix or remove the file",
                urls=urls,
            )
        for d, n, rn in zip(var.dims, var.shape, ref.shape, strict=True):
            if d != concat_dim and n != rn:
                raise SchemaMismatchError(
                    f"{other.url}: dimension {d!r} of {name!r} has length {n} but {rn} in "
                    f"{ref_name}; only {concat_dim!r} may differ between files: fix or remove "
                    "the file",
                    urls=urls,
                )
        if name in (concat_dim, order_by) and (
            var.attrs_units != ref.attrs_units or var.attrs_calendar != ref.attrs_calendar
        ):
            raise SchemaMismatchError(
                f"{other.url}: coordinate {name!r} has units {var.attrs_units!r} / calendar "
                f"{var.attrs_calendar!r} but {ref_name} has {ref.attrs_units!r} / "
                f"{ref.attrs_calendar!r}; rewrite the file with the same time encoding",
                urls=urls,
            )


def _check_chunks(ordered: Sequence[FileSchema], target: TargetSchema, concat_dim: str) -> None:
    """Virtual concatenation needs one regular chunk grid along ``concat_dim``."""
    for name, first_var in ordered[0].variables.items():
        if first_var.chunks is None or concat_dim not in first_var.dims:
            continue
        axis = first_var.dims.index(concat_dim)
        expected = first_var.chunks
        tvar = target.variables.get(name)
        if tvar is not None and tvar.chunks is not None:
            expected = tvar.chunks
            if tvar.shape[axis] % tvar.chunks[axis]:
                raise SourceError(
                    f"variable {name!r} already in the repository ends with a partial chunk "
                    f"({tvar.shape[axis]} steps, chunks of {tvar.chunks[axis]}): nothing can be "
                    "appended to it virtually. Ingest into a new group, or use mode: native",
                    urls=[ordered[0].url],
                )
        for i, f in enumerate(ordered):
            var = f.variables[name]
            if var.chunks != expected:
                raise SourceError(
                    f"{f.url}: variable {name!r} is chunked {var.chunks} but "
                    f"{'the repository' if tvar is not None and i == 0 else ordered[0].url} "
                    f"uses {expected}; virtual references cannot combine different chunk shapes "
                    "(this needs Zarr variable chunking, ZEP003). Use mode: native to rewrite "
                    "the data, or ingest these files into separate groups",
                    urls=[f.url],
                )
            last = i == len(ordered) - 1
            if not last and var.chunks is not None and var.shape[axis] % var.chunks[axis]:
                raise SourceError(
                    f"{f.url}: variable {name!r} has {var.shape[axis]} steps along "
                    f"{concat_dim!r} in chunks of {var.chunks[axis]}, so its last chunk is "
                    "partial and the next file cannot follow it virtually (files of different "
                    "lengths, e.g. 365- and 366-day years). Use mode: native to rewrite the data",
                    urls=[f.url],
                )


def _order_hint(schema: FileSchema, concat_dim: str, order_by: str | None) -> str:
    if order_by is not None:
        return ""
    others = [
        n
        for n, v in schema.variables.items()
        if v.dims == (concat_dim,) and n != concat_dim and v.dtype[0] in "iuf"
    ]
    if not others:
        return ""
    return (
        f"; or, if {concat_dim!r} does not hold real coordinates, set source.order_by to a "
        f"variable that orders the files ({', '.join(others)})"
    )


def plan_append(
    schemas: Sequence[FileSchema],
    target: TargetSchema,
    concat_dim: str,
    *,
    order_by: str | None = None,
) -> AppendPlan:
    """Order new files along ``concat_dim`` and check they combine with each other and the target.

    Files are ordered by the values of ``order_by`` (default: the ``concat_dim`` coordinate),
    not by their names; by URL when they have no such variable.

    Raises
    ------
    SchemaMismatchError
        Variables, dimensions, dtypes or time encodings differ between files or from the target.
    SourceError
        Coordinates overlap (duplicates) or fall inside the range already ingested, or the chunk
        grids cannot be combined virtually.
    """
    if not schemas:
        raise ValueError("plan_append needs at least one file")
    for s in schemas:
        if concat_dim not in s.dims:
            raise SourceError(
                f"{s.url}: has no dimension {concat_dim!r}; set source.concat_dim to one of "
                f"{', '.join(s.dims)}",
                url=s.url,
            )
        if s.dims[concat_dim] == 0:
            # An empty file would switch off ordering and the duplicate checks (no values).
            raise SourceError(
                f"{s.url}: has no steps along {concat_dim!r} (empty, or still being written?); "
                "remove it from source.urls, or run again once it holds data",
                url=s.url,
            )
    have_values = all(s.concat_values for s in schemas)
    if have_values:
        ordered = sorted(schemas, key=lambda s: (s.concat_values or (0.0,))[0])
    else:
        ordered = sorted(schemas, key=lambda s: s.url)

    ref = ordered[0]
    for s in ordered[1:]:
        _check_against(ref.url, ref.variables, s, concat_dim, ref_url=ref.url, order_by=order_by)
    if not target.is_empty:
        _check_against(
            "the repository", target.variables, ref, concat_dim, ref_url=None, order_by=order_by
        )

    if have_values:
        for prev, cur in itertools.pairwise(ordered):
            pv, cv = prev.concat_values or (), cur.concat_values or ()
            if pv[-1] >= cv[0]:
                raise SourceError(
                    f"{cur.url} and {prev.url} overlap along {concat_dim!r} (values up to "
                    f"{pv[-1]:.15g} and from {cv[0]:.15g}): duplicate timestamps are not stored. "
                    "Remove one of the files" + _order_hint(cur, concat_dim, order_by),
                    urls=(cur.url, prev.url),
                )
        for s in ordered:
            vals = s.concat_values or ()
            if any(b <= a for a, b in itertools.pairwise(vals)):
                raise SourceError(
                    f"{s.url}: coordinate {concat_dim!r} is not strictly increasing inside the "
                    "file; fix the file",
                    url=s.url,
                )
        first_new = (ordered[0].concat_values or (0.0,))[0]
        if target.concat_last is not None and first_new <= target.concat_last:
            raise SourceError(
                f"{ordered[0].url}: starts at {concat_dim}={first_new:.15g}, which is not after "
                f"the last value already ingested ({target.concat_last:.15g}); appending it would "
                "break the order or duplicate data. Remove the file, or ingest it into a new "
                "group",
                url=ordered[0].url,
            )

    _check_chunks(ordered, target, concat_dim)
    return AppendPlan(
        order=tuple(s.url for s in ordered),
        append=not target.is_empty,
        new_length=sum(s.dims[concat_dim] for s in ordered),
    )
