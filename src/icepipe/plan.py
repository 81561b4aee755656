"""Pure planning: which files are new, in what order they go, and whether they fit together.

Nothing here does I/O; every function takes and returns plain values, so it is tested directly
(and with Hypothesis) without files or repositories.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from dataclasses import replace as dataclass_replace
from typing import Any

from icepipe.errors import ConfigError, SchemaMismatchError, SourceError
from icepipe.model import FileSchema, SourceFile, TargetSchema, TimeConversion, VariableSchema

__all__ = [
    "AppendPlan",
    "CubeFiles",
    "EdgePlan",
    "Selection",
    "Slot",
    "TimeConversion",
    "ledger_slots",
    "needs_order_values",
    "time_conversion",
    "plan_append",
    "calendar_keys",
    "plan_chunks",
    "plan_cubes",
    "plan_calendar_edges",
    "plan_edges",
    "plan_regions",
    "plan_reingest",
    "select_new",
]


@dataclass(frozen=True)
class Selection:
    """The listed files split by what the ledger says of them."""

    new: tuple[SourceFile, ...]
    already: tuple[SourceFile, ...]
    #: Files ingested before that changed since, with their ledger record (``on_changed:
    #: reingest``); empty otherwise.
    changed: tuple[tuple[SourceFile, Mapping[str, Any]], ...] = ()


@dataclass(frozen=True)
class Slot:
    """Where one file's data goes along ``concat_dim``: ``start`` and ``length`` positions."""

    url: str
    start: int
    length: int


@dataclass(frozen=True)
class AppendPlan:
    """What a run writes: files appended in concat order, and files written into regions
    of the existing arrays (late arrivals into room left on the axis, re-ingested files)."""

    order: tuple[str, ...]
    append: bool
    new_length: int
    regions: tuple[Slot, ...] = ()
    appends: tuple[Slot, ...] = ()
    #: url -> variable -> how to rewrite its time values into the stored encoding.
    conversions: Mapping[str, Mapping[str, TimeConversion]] = dataclass_field(default_factory=dict)
    #: Virtual variables the appends store on a rectilinear grid along the concat dimension
    #: (their chunks differ between files); the others keep one regular grid.
    rectilinear: tuple[str, ...] = ()


def _is_time_units(units: str | None) -> bool:
    return bool(units) and " since " in str(units)


def time_conversion(
    units_from: str, units_to: str, calendar: str | None
) -> tuple[float, float] | None:
    """``(scale, offset)`` mapping values in ``units_from`` to ``units_to``, or None when the
    units are not a fixed multiple of each other (e.g. months vs days)."""
    import cftime

    fixed = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 604800.0}
    aliases = {
        "sec": "second",
        "min": "minute",
        "hr": "hour",
        "h": "hour",
        "d": "day",
        "s": "second",
    }

    def seconds(u: str) -> float | None:
        word = u.split(" since ")[0].strip().lower().rstrip("s") or "s"
        word = aliases.get(word, word)
        return fixed.get(word)

    a, b = seconds(units_from), seconds(units_to)
    if a is None or b is None:
        return None
    cal = calendar or "standard"
    try:
        epoch = cftime.num2date(0, units_from, cal)
        offset = float(cftime.date2num(epoch, units_to, cal))
    except (ValueError, TypeError):
        return None
    return a / b, offset


def _normalized(
    s: FileSchema, conversions: Mapping[str, TimeConversion], order_var: str
) -> FileSchema:
    """``s`` as it will be once its time variables are converted to the stored encoding."""
    if not conversions:
        return s
    variables = dict(s.variables)
    for name, conv in conversions.items():
        variables[name] = dataclass_replace(
            variables[name], dtype=conv.dtype, attrs_units=conv.units, attrs_calendar=conv.calendar
        )
    c = conversions.get(order_var)
    if c is None:
        return dataclass_replace(s, variables=variables)
    return dataclass_replace(
        s,
        variables=variables,
        concat_values=tuple(v * c.scale + c.offset for v in s.concat_values or ()),
        concat_units=c.units,
        concat_calendar=c.calendar,
    )


def _conversions(
    ordered: Sequence[FileSchema],
    ref_vars: Mapping[str, VariableSchema],
    ref_name: str,
    *,
    virtual: bool,
    ref_url: str | None = None,
) -> dict[str, dict[str, TimeConversion]]:
    """How to bring each file's time variables to the reference encoding (lossless only)."""
    out: dict[str, dict[str, TimeConversion]] = {}
    for f in ordered:
        for name, var in f.variables.items():
            ref = ref_vars.get(name)
            if ref is None or not _is_time_units(var.attrs_units):
                continue
            if (var.attrs_units, var.attrs_calendar, var.dtype) == (
                ref.attrs_units,
                ref.attrs_calendar,
                ref.dtype,
            ):
                continue
            where = (
                f"{f.url}: {name!r} is encoded as {var.dtype} {var.attrs_units!r} "
                f"(calendar {var.attrs_calendar!r}) but {ref_name} uses {ref.dtype} "
                f"{ref.attrs_units!r} (calendar {ref.attrs_calendar!r})"
            )
            if (var.attrs_calendar or "standard") != (ref.attrs_calendar or "standard"):
                raise SchemaMismatchError(
                    f"{where}: different calendars cannot be combined; rewrite the file",
                    urls=[f.url, *([ref_url] if ref_url else [])],
                )
            if virtual and var.chunks is not None:
                raise SchemaMismatchError(
                    f"{where}: it is stored as virtual references, which cannot be re-encoded; "
                    "use mode: native, or rewrite the file with the same time encoding",
                    urls=[f.url, *([ref_url] if ref_url else [])],
                )
            conv = (
                (1.0, 0.0)  # only the dtype differs: cast, checked exact when converted
                if var.attrs_units == ref.attrs_units
                else time_conversion(str(var.attrs_units), str(ref.attrs_units), var.attrs_calendar)
            )
            if conv is None:
                raise SchemaMismatchError(
                    f"{where}: the units are not a fixed multiple of each other; rewrite the "
                    "file with the same time encoding",
                    urls=[f.url, *([ref_url] if ref_url else [])],
                )
            out.setdefault(f.url, {})[name] = TimeConversion(
                conv[0], conv[1], ref.dtype, str(ref.attrs_units), ref.attrs_calendar
            )
    return out


def select_new(
    listed: Sequence[SourceFile],
    ledger: Mapping[str, Mapping[str, Any]],
    *,
    on_changed: str = "fail",
) -> Selection:
    """Split ``listed`` into files not yet ingested and files already in the ledger.

    Raises
    ------
    SourceError
        A file was ingested before and has changed since (same URL, different size or mtime),
        and ``on_changed`` is ``"fail"``.
    """
    new: list[SourceFile] = []
    already: list[SourceFile] = []
    changed: list[str] = []
    changed_urls: list[str] = []
    changed_files: list[tuple[SourceFile, Mapping[str, Any]]] = []
    for f in listed:
        record = ledger.get(f.url)
        if record is None:
            new.append(f)
        elif f.same_version(record):
            already.append(f)
        elif on_changed == "reingest":
            changed_files.append((f, record))
        else:
            changed_urls.append(f.url)
            # Object stores identify versions by ETag: show it when that is what differs.
            etags = (
                f", etag {record.get('etag')}" if f.etag and record.get("etag") else "",
                f", etag {f.etag}" if f.etag and record.get("etag") else "",
            )
            changed.append(
                f"{f.url} (ingested: size {record.get('size')}, mtime {record.get('mtime')}"
                f"{etags[0]}; now: size {f.size}, mtime {f.mtime}{etags[1]})"
            )
    if changed:
        raise SourceError(
            "source file(s) changed after they were ingested: "
            + "; ".join(changed[:5])
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            + ". Restore the original file, or set on_changed: reingest to overwrite its data "
            "in place",
            urls=changed_urls,
        )
    return Selection(new=tuple(new), already=tuple(already), changed=tuple(changed_files))


def _fmt_var(v: VariableSchema) -> str:
    return f"dims {v.dims}, dtype {v.dtype}"


def _decoded_chars(var: VariableSchema, ref: VariableSchema) -> bool:
    """``var`` is a char array (``|S1``, last dim the string length) and ``ref`` the same array
    stored decoded, as a native ingest stores it (``|S<length>`` without that dim)."""
    return (
        var.dtype == "|S1"
        and len(var.dims) == len(ref.dims) + 1
        and var.dims[:-1] == ref.dims
        and ref.dtype == f"|S{var.shape[-1]}"
    )


def _check_grid(other: FileSchema, grid: str | None, ref_name: str) -> None:
    """Raise when ``other`` lies on another raster grid (CRS, geotransform or size) than
    ``ref_name`` (a file, or the repository): its x/y would be replaced by the others'."""
    if other.grid != grid and (other.grid is not None or grid is not None):
        raise SchemaMismatchError(
            f"{other.url}: has another CRS or grid than {ref_name} ({other.grid} vs {grid}); "
            "files stacked into one dataset must share CRS, transform and size: warp it onto "
            "the others' grid (gdalwarp -t_srs/-te/-tr), ingest it into another group, or "
            "remove it from source.urls",
            urls=(other.url,) if ref_name == "the repository" else (other.url, ref_name),
        )


def _check_against(
    ref_name: str,
    ref_vars: Mapping[str, VariableSchema],
    other: FileSchema,
    concat_dim: str,
    *,
    ref_url: str | None,
    order_by: str | None = None,
    virtual: bool = True,
) -> None:
    """Raise when ``other`` does not have exactly the variables of the reference, or they
    would not decode as in their file."""
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
            "along one dimension must hold the same variables: list the variables some files "
            f"lack in source.drop_variables ({', '.join([*missing, *extra])}), or fix or remove "
            "the file",
            urls=urls,
        )
    for name, ref in ref_vars.items():
        var = other.variables[name]
        if _decoded_chars(var, ref) or _decoded_chars(ref, var):
            # Either side a char array the other has joined into strings: xarray encodes
            # appends into the stored form (its char_dim_name), and reads both alike.
            continue
        time_drift = _is_time_units(var.attrs_units) and _is_time_units(ref.attrs_units)
        if var.dims != ref.dims or (var.dtype != ref.dtype and not time_drift):
            raise SchemaMismatchError(
                f"{other.url}: variable {name!r} has {_fmt_var(var)} but {ref_name} has "
                f"{_fmt_var(ref)}; fix or remove the file",
                urls=urls,
            )
        _check_packing(name, var, ref, other.url, ref_name, urls, virtual=virtual)
        for d, n, rn in zip(var.dims, var.shape, ref.shape, strict=True):
            if d != concat_dim and n != rn:
                raise SchemaMismatchError(
                    f"{other.url}: dimension {d!r} of {name!r} has length {n} but {rn} in "
                    f"{ref_name}; only {concat_dim!r} may differ between files: fix or remove "
                    "the file",
                    urls=urls,
                )
        if (
            name in (concat_dim, order_by)
            and not time_drift
            and (var.attrs_units != ref.attrs_units or var.attrs_calendar != ref.attrs_calendar)
        ):
            raise SchemaMismatchError(
                f"{other.url}: coordinate {name!r} has units {var.attrs_units!r} / calendar "
                f"{var.attrs_calendar!r} but {ref_name} has {ref.attrs_units!r} / "
                f"{ref.attrs_calendar!r}; rewrite the file with the same time encoding",
                urls=urls,
            )


def _differs(a: float | str | None, b: float | str | None) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return not (a == b or (a != a and b != b))  # NaN equals NaN here
    return a != b


def _check_packing(
    name: str,
    var: VariableSchema,
    ref: VariableSchema,
    url: str,
    ref_name: str,
    urls: tuple[str, ...],
    *,
    virtual: bool,
) -> None:
    """Raise when ``var``'s raw values would not decode as in its file once stored beside
    ``ref``'s: another packing (both modes: rewriting would round), other fill values (virtual
    references keep raw values; native ingests re-encode masked values, which is exact)."""
    mine, theirs = dict(var.packing), dict(ref.packing)

    def shown(values: dict[str, float | str], keys: list[str]) -> str:
        return ", ".join(f"{k} {values.get(k)!r}" for k in keys)

    scale = [k for k in ("scale_factor", "add_offset") if _differs(mine.get(k), theirs.get(k))]
    if scale:
        raise SchemaMismatchError(
            f"{url}: variable {name!r} is packed with {shown(mine, scale)} but {ref_name} with "
            f"{shown(theirs, scale)}, so its values would not decode as in the file. Rewrite "
            f"the file with the same packing, ingest it into another group, or list {name!r} "
            "in source.drop_variables",
            urls=urls,
        )
    fills = [k for k in ("_FillValue", "missing_value") if _differs(mine.get(k), theirs.get(k))]
    if fills and virtual and var.chunks is not None:
        raise SchemaMismatchError(
            f"{url}: variable {name!r} has {shown(mine, fills)} but {ref_name} has "
            f"{shown(theirs, fills)}: virtual references keep the file's raw values, which the "
            "stored attributes would not mask. Use mode: native (masked values are re-encoded "
            "exactly), or rewrite the file with the same fill values",
            urls=urls,
        )


def _virtual_grids(
    ordered: Sequence[FileSchema], target: TargetSchema, concat_dim: str
) -> tuple[str, ...]:
    """The virtual variables the appends store on a rectilinear grid along ``concat_dim``.

    A variable keeps today's regular grid when every file (and the stored array) has the same
    chunks and only the last file ends in a partial chunk. Otherwise its chunks differ from
    file to file (365- and 366-day years, months of 28 to 31 days): it gets one edge per chunk
    of each file, which works when every file but the last tiles its own length exactly (one
    chunk per file, or chunks that divide it). Formats store a file's partial last chunk
    padded to the full chunk length (HDF5, Zarr), and a padded chunk can only be the last
    chunk of an array (zarr-specs #394).

    Raises
    ------
    SourceError
        A padded chunk would sit inside the array (a file, or the stored array, ends in a
        partial chunk and more data follows), or the chunks differ along another dimension.
    """
    out: list[str] = []
    for name, first_var in ordered[0].variables.items():
        if first_var.chunks is None or concat_dim not in first_var.dims:
            continue
        axis = first_var.dims.index(concat_dim)
        tvar = target.variables.get(name)
        stored = tvar if tvar is not None and tvar.chunks is not None else None
        _check_other_axes(name, ordered, stored, axis)
        if stored is not None and sum(stored.chunk_lengths(axis)) > stored.shape[axis]:
            raise SourceError(
                f"variable {name!r} already in the repository ends with a partial chunk "
                f"({stored.shape[axis]} steps along {concat_dim!r}, chunks "
                f"{_shown_edges(stored.chunk_lengths(axis))}): the file ingested last stores "
                "it padded, so nothing can follow it virtually. Ingest these files into a new "
                "group, or use mode: native",
                urls=[ordered[0].url],
            )
        padded = [
            f
            for f in ordered[:-1]
            if f.variables[name].shape[axis] % (f.variables[name].chunks or (1,) * (axis + 1))[axis]
        ]
        if padded:
            f = padded[0]
            var = f.variables[name]
            raise SourceError(
                f"{f.url}: variable {name!r} has {var.shape[axis]} steps along {concat_dim!r} "
                f"in chunks of {(var.chunks or ())[axis]}, so its last chunk is partial and "
                "stored padded to the full length; with more data after it no Zarr chunk grid "
                "can describe it (zarr-specs #394). Use mode: native to rewrite the data, "
                f"list {name!r} in source.drop_variables, or rewrite the file with chunks "
                "that divide its length (e.g. one chunk per file)",
                urls=[f.url],
            )
        same = all(f.variables[name].chunks == first_var.chunks for f in ordered)
        if same and (stored is None or (not stored.edges and stored.chunks == first_var.chunks)):
            continue  # one regular grid, as VirtualiZarr writes it
        out.append(name)
    return tuple(out)


def _shown_edges(edges: Sequence[int]) -> str:
    shown = ", ".join(map(str, edges[:4]))
    return f"({shown}{', ...' if len(edges) > 4 else ''})"


def _check_other_axes(
    name: str, ordered: Sequence[FileSchema], stored: VariableSchema | None, axis: int
) -> None:
    """Chunks may differ between files along the concat dimension only."""

    def others(chunks: tuple[int, ...] | None) -> tuple[int, ...]:
        return tuple(c for i, c in enumerate(chunks or ()) if i != axis)

    expected = others(stored.chunks if stored is not None else ordered[0].variables[name].chunks)
    for f in ordered:
        var = f.variables[name]
        if others(var.chunks) != expected:
            raise SourceError(
                f"{f.url}: variable {name!r} is chunked {var.chunks} but "
                f"{'the repository' if stored is not None else ordered[0].url} uses "
                f"{stored.chunks if stored is not None else ordered[0].variables[name].chunks}; "
                "virtual references can combine different chunk lengths only along the concat "
                "dimension. Use mode: native to rewrite the data, or ingest these files into "
                "separate groups",
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
    virtual: bool = True,
    ledger_slots: Sequence[Slot] = (),
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
    _check_has_steps(schemas, concat_dim)
    # Time encodings that drift between files (units, dtype) are brought to the stored
    # encoding, or the first file's for a new group, where that is lossless.
    by_url_first = sorted(schemas, key=lambda s: s.url)[0]
    ref_vars = target.variables if not target.is_empty else by_url_first.variables
    ref_name = "the repository" if not target.is_empty else by_url_first.url
    conversions = _conversions(
        schemas,
        ref_vars,
        ref_name,
        virtual=virtual,
        ref_url=None if not target.is_empty else by_url_first.url,
    )
    schemas = [_normalized(s, conversions.get(s.url, {}), order_by or concat_dim) for s in schemas]
    have_values = all(s.concat_values for s in schemas)
    if have_values:
        ordered = sorted(schemas, key=lambda s: (s.concat_values or (0.0,))[0])
    else:
        ordered = sorted(schemas, key=lambda s: s.url)
    _check_combine(ordered, target, concat_dim, order_by=order_by, virtual=virtual)
    late: list[FileSchema] = []
    if have_values:
        _check_increasing(ordered, concat_dim, order_by)
        late = _late(ordered, target, concat_dim)
        ordered = [s for s in ordered if s not in late]
    regions = plan_regions(late, target, concat_dim, ledger_slots, virtual=virtual)
    rectilinear: tuple[str, ...] = ()
    if virtual and ordered:
        # Native ingests rewrite the data into their own chunk grid: any source chunking works.
        rectilinear = _virtual_grids(ordered, target, concat_dim)
    start = target.dims.get(concat_dim, 0) if not target.is_empty else 0
    appends = []
    for s in ordered:
        appends.append(Slot(s.url, start, s.dims[concat_dim]))
        start += s.dims[concat_dim]
    return AppendPlan(
        order=tuple(s.url for s in ordered),
        append=not target.is_empty,
        new_length=sum(s.dims[concat_dim] for s in ordered),
        regions=tuple(regions),
        appends=tuple(appends),
        conversions=conversions,
        rectilinear=rectilinear,
    )


def _check_has_steps(schemas: Sequence[FileSchema], concat_dim: str) -> None:
    """Every file has steps along ``concat_dim``."""
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


def _check_combine(
    ordered: Sequence[FileSchema],
    target: TargetSchema,
    concat_dim: str,
    *,
    order_by: str | None,
    virtual: bool,
) -> None:
    """The files combine with the stored arrays, and with the first of them.

    Each file is compared with the stored arrays first, when there are any: a file that does
    not match them is named alone (the one to fix or skip), not as disagreeing with whichever
    new file came first."""
    ref = ordered[0]
    if not target.is_empty:
        for s in ordered:
            if s.grid is not None:  # a raster (GeoTIFF): compared with the stored grid
                _check_grid(s, target.grid, "the repository")
            _check_against(
                "the repository",
                target.variables,
                s,
                concat_dim,
                ref_url=None,
                order_by=order_by,
                virtual=virtual,
            )
    for s in ordered[1:]:
        _check_grid(s, ref.grid, ref.url)
        _check_against(
            ref.url,
            ref.variables,
            s,
            concat_dim,
            ref_url=ref.url,
            order_by=order_by,
            virtual=virtual,
        )


def _check_increasing(ordered: Sequence[FileSchema], concat_dim: str, order_by: str | None) -> None:
    """Files (in order) do not overlap, and each file's values increase strictly."""
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


def _late(ordered: Sequence[FileSchema], target: TargetSchema, concat_dim: str) -> list[FileSchema]:
    """The files whose values start inside the range already stored (late arrivals).

    Raises
    ------
    SourceError
        A file straddles the end of the stored range.
    """
    last = target.concat_last
    if last is None:
        return []
    late = [s for s in ordered if (s.concat_values or (0.0,))[0] <= last]
    for s in late:
        if (s.concat_values or (0.0,))[-1] > last:
            raise SourceError(
                f"{s.url}: straddles the end of the data already ingested along "
                f"{concat_dim!r} (its values run from {(s.concat_values or (0.0,))[0]:.15g} "
                f"to {(s.concat_values or (0.0,))[-1]:.15g}, the stored ones end at "
                f"{last:.15g}): it would duplicate data. Remove or fix the file",
                url=s.url,
            )
    return late


def plan_chunks(
    dims: Mapping[str, int],
    concat_dim: str,
    first_length: int,
    *,
    chunks: Mapping[str, int],
    shards: Mapping[str, int] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Target chunk lengths per dimension, and the Dask chunk lengths that write them.

    Missing dimensions get one chunk for the whole dimension, except ``concat_dim``, which grows
    with every append and defaults to ``first_length`` (the first file's length along it). Every
    Dask chunk covers whole shards (or whole chunks without sharding), so no two write tasks ever
    touch one stored object: merging forks that overlap would silently keep only one of them.

    Returns
    -------
    (chunk_lengths, task_lengths)
        Both map every dimension in ``dims`` to a length.

    Raises
    ------
    ConfigError
        ``chunks`` or ``shards`` name a dimension the data does not have.
    """
    from icepipe.errors import ConfigError

    for key, mapping in (("chunks", chunks), ("shards", shards or {})):
        unknown = sorted(set(mapping) - set(dims))
        if unknown:
            raise ConfigError(
                f"no dimension(s) {', '.join(unknown)} in the data; dimensions: {', '.join(dims)}",
                field=f"{key}.{unknown[0]}",
            )
    chunk_len = {
        d: min(chunks.get(d, first_length if d == concat_dim else n), max(n, 1))
        if d != concat_dim
        else chunks.get(d, max(first_length, 1))
        for d, n in dims.items()
    }
    task_len = dict(chunk_len)
    for d, n in (shards or {}).items():
        task_len[d] = n
    return chunk_len, task_len


def _covering(ledger_slots: Sequence[Slot], start: int, length: int) -> Slot | None:
    for s in ledger_slots:
        if s.start < start + length and start < s.start + s.length:
            return s
    return None


def _check_region_chunks(
    f: FileSchema, target: TargetSchema, concat_dim: str, start: int, length: int
) -> None:
    """Virtual region writes replace whole chunks: the region must sit on chunk boundaries."""
    n = target.dims.get(concat_dim, 0)
    for name, var in target.variables.items():
        fvar = f.variables.get(name)
        # Loaded variables (coordinates) are native arrays: partial chunks are rewritten whole.
        if var.chunks is None or concat_dim not in var.dims or fvar is None or fvar.chunks is None:
            continue
        axis = var.dims.index(concat_dim)
        if var.edges:
            _check_rectilinear_region(f, name, var, fvar, axis, start, length, concat_dim)
            continue
        c = var.chunks[axis]
        if start % c or (length % c and start + length != n):
            raise SourceError(
                f"{f.url}: belongs at positions {start}..{start + length - 1} of {concat_dim!r}, "
                f"which do not fall on the stored chunks of {name!r} (chunks of {c}); virtual "
                "references can only replace whole chunks. Use mode: native, or re-ingest the "
                "group",
                url=f.url,
            )


def _check_rectilinear_region(
    f: FileSchema,
    name: str,
    var: VariableSchema,
    fvar: VariableSchema,
    axis: int,
    start: int,
    length: int,
    concat_dim: str,
) -> None:
    """A file's chunks must be exactly the stored chunks at its place (rectilinear grid)."""
    stored = var.chunk_lengths(axis)
    bounds = list(itertools.accumulate(stored, initial=0))
    mine = fvar.chunk_lengths(axis)
    k = bounds.index(start) if start in bounds else -1
    padded_inside = sum(mine) != length and start + length != var.shape[axis]
    if k < 0 or tuple(stored[k : k + len(mine)]) != mine or padded_inside:
        here = tuple(e for e, b in zip(stored, bounds, strict=False) if start <= b < start + length)
        raise SourceError(
            f"{f.url}: belongs at positions {start}..{start + length - 1} of {concat_dim!r}, "
            f"but its chunks of {name!r} {_shown_edges(mine)} are not the stored chunks there "
            f"{_shown_edges(here)}{'' if k >= 0 else ', no chunk starts at ' + str(start)}; "
            "virtual references can only replace whole chunks. Use mode: native, or re-ingest "
            "the group",
            url=f.url,
        )


def plan_regions(
    late: Sequence[FileSchema],
    target: TargetSchema,
    concat_dim: str,
    ledger_slots: Sequence[Slot],
    *,
    virtual: bool,
) -> list[Slot]:
    """Place files whose values fall inside the ingested range.

    A file goes into its region when the stored axis already holds exactly its values at
    positions no ingested file covers (room left on a pre-allocated axis); a file whose values
    are covered is a duplicate; any other file does not fit.

    Raises
    ------
    SourceError
        Duplicates, or no room on the axis.
    """
    stored = target.order_values or ()
    index = {v: i for i, v in enumerate(stored)}
    slots: list[Slot] = []
    for f in late:
        vals = f.concat_values or ()
        pos = [index.get(v) for v in vals]
        if not vals or any(p is None for p in pos):
            raise SourceError(
                f"{f.url}: its {concat_dim!r} values ({vals[0]:.15g} .. {vals[-1]:.15g}) fall "
                "inside the range already ingested, but the stored axis has no room for them "
                "(they are not all among its values): it cannot be appended without breaking "
                "the order. Ingest it into a new group, or rebuild the group with all files",
                url=f.url,
            )
        start = int(pos[0])  # type: ignore[arg-type]
        if pos != list(range(start, start + len(vals))):
            raise SourceError(
                f"{f.url}: its {concat_dim!r} values are not contiguous on the stored axis; "
                "fix the file or rebuild the group",
                url=f.url,
            )
        holder = _covering([*ledger_slots, *slots], start, len(vals))
        if holder is not None:
            raise SourceError(
                f"{f.url}: duplicates data already ingested from {holder.url} (the same "
                f"{concat_dim!r} values, positions {start}..{start + len(vals) - 1}); "
                "duplicates are not stored. Remove one of the files",
                urls=(f.url, holder.url),
            )
        if virtual:
            _check_region_chunks(f, target, concat_dim, start, len(vals))
        slots.append(Slot(f.url, start, len(vals)))
    return slots


def plan_reingest(
    schema: FileSchema,
    record: Mapping[str, Any],
    target: TargetSchema,
    concat_dim: str,
    *,
    virtual: bool,
    order_by: str | None = None,
) -> Slot:
    """Place a changed file back into the region its previous version was ingested into.

    Raises
    ------
    SourceError
        The ledger has no position for it, its length along ``concat_dim`` changed, or its
        ordering values (or their encoding) differ from those stored at its position.
    """
    start, length = record.get("start"), record.get("length")
    if not isinstance(start, int) or not isinstance(length, int):
        raise SourceError(
            f"{schema.url}: changed after it was ingested, but its position was not recorded "
            "(ingested by an older icepipe); rebuild the group to re-ingest it",
            url=schema.url,
        )
    if schema.dims.get(concat_dim) != length:
        raise SourceError(
            f"{schema.url}: changed after it was ingested and now has "
            f"{schema.dims.get(concat_dim)} steps along {concat_dim!r} instead of {length}; it "
            "cannot be re-ingested in place. Rebuild the group",
            url=schema.url,
        )
    _check_against(
        "the repository", target.variables, schema, concat_dim, ref_url=None, virtual=virtual
    )
    _check_same_place(schema, target, concat_dim, start, length, order_by=order_by)
    if virtual:
        _check_region_chunks(schema, target, concat_dim, start, length)
    return Slot(schema.url, start, length)


def _check_same_place(
    schema: FileSchema,
    target: TargetSchema,
    concat_dim: str,
    start: int,
    length: int,
    *,
    order_by: str | None,
) -> None:
    """A re-issued file goes back where its previous version was only if it describes the same
    steps: same ordering values, same encoding. Otherwise its data would be stored under the
    old labels."""
    name = order_by or concat_dim
    stored = target.order_values
    if stored is None or schema.concat_values is None:
        return
    old = stored[start : start + length]
    ref = target.variables.get(name)
    var = schema.variables.get(name)
    same_units = (
        ref is None
        or var is None
        or ((ref.attrs_units, ref.attrs_calendar) == (var.attrs_units, var.attrs_calendar))
    )
    if same_units and tuple(old) == tuple(schema.concat_values):
        return

    def span(values: Sequence[float]) -> str:
        return f"{values[0]:g}..{values[-1]:g}" if values else "(none)"

    units = (
        ""
        if same_units or var is None or ref is None
        else (f" (units {var.attrs_units!r} instead of {ref.attrs_units!r})")
    )
    raise SourceError(
        f"{schema.url}: changed after it was ingested, and its {name!r} values moved: stored "
        f"{span(old)}, now {span(schema.concat_values)}{units}; re-ingesting it in place would "
        "store its data under the old values. Restore the file, or rebuild the group (a file "
        "with new values belongs under a new name)",
        url=schema.url,
    )


def needs_order_values(
    new: Sequence[FileSchema],
    n_changed: int,
    target: TargetSchema,
    concat_dim: str,
    *,
    order_by: str | None = None,
) -> bool:
    """Whether planning these files needs every stored value of the ordering variable
    (``target.order_values``), not only the stored range's ends.

    Appending after the stored range needs only its last value; a changed file goes back to
    its stored values, and a file starting at or before the stored end is a late arrival
    (placed among the stored values, or a duplicate): those need them all. A file whose
    ordering variable has other units than the stored one counts as late (its values are
    compared once converted).
    """
    last = target.concat_last
    if last is None:
        return False
    if n_changed:
        return True
    name = order_by or concat_dim
    ref = target.variables.get(name)
    for s in new:
        var = s.variables.get(name)
        if not s.concat_values:
            continue
        other_units = (
            ref is not None
            and var is not None
            and (var.attrs_units, var.attrs_calendar) != (ref.attrs_units, ref.attrs_calendar)
        )
        if other_units or s.concat_values[0] <= last:
            return True
    return False


def ledger_slots(ledger: Mapping[str, Mapping[str, Any]], *, cube: str | None = None) -> list[Slot]:
    """Where the ledger's files sit along the concat dimension (of one hypercube group with
    ``cube``); records without a valid place (older icepipe versions) are left out."""
    out = []
    for url, r in ledger.items():
        if cube:
            place = (r.get("cubes") or {}).get(cube)
            if not isinstance(place, list) or len(place) != 2:
                continue
            start, length = place
        else:  # read for every file of the branch: no intermediate lists
            start, length = r.get("start"), r.get("length")
        if isinstance(start, int) and isinstance(length, int):
            out.append(Slot(url, start, length))
    return out


@dataclass(frozen=True)
class CubeFiles[T]:
    """The files of one GRIB hypercube group (``source.grib_cubes``) a run writes."""

    #: The new files' parts of this hypercube, in selection order.
    new: tuple[T, ...] = ()
    #: Changed files' parts with the ledger record placing them in this hypercube's group
    #: (``start``, ``length`` taken from its ``cubes`` entry), for :func:`plan_reingest`.
    changed: tuple[tuple[T, Mapping[str, Any]], ...] = ()


def plan_cubes[T](
    new: Sequence[Mapping[str, T]],
    changed: Sequence[tuple[str, Mapping[str, T], Mapping[str, Any]]],
    recorded: Sequence[str] = (),
) -> dict[str, CubeFiles[T]]:
    """Split files by GRIB hypercube group: one entry per hypercube, by name (sorted).

    Parameters
    ----------
    new
        Per new file, its hypercubes by name.
    changed
        Per changed file: its URL, its hypercubes now, and its ledger record (whose ``cubes``
        maps each hypercube it filled to ``[start, length]``).
    recorded
        Hypercubes the ledger holds already: they get an entry (to report) even when no file
        of this run fills them.

    Raises
    ------
    SourceError
        A changed file now holds other hypercubes than those it was ingested into: it cannot
        go back into its regions.
    """
    by_cube: dict[str, list[T]] = {}
    for cubes in new:
        for name, cube in cubes.items():
            by_cube.setdefault(name, []).append(cube)
    changed_by_cube: dict[str, list[tuple[T, Mapping[str, Any]]]] = {}
    for url, cubes, record in changed:
        places = record.get("cubes") or {}
        if set(cubes) != set(places):
            raise SourceError(
                f"{url}: changed after it was ingested, and now holds the GRIB hypercubes "
                f"{', '.join(sorted(cubes)) or '(none)'} instead of "
                f"{', '.join(sorted(places)) or '(none)'}; it cannot be re-ingested in place. "
                "Rebuild the groups, or restore the file",
                url=url,
            )
        # A changed file goes back into the region of each cube it filled.
        for name, cube in cubes.items():
            start, length = places[name]
            changed_by_cube.setdefault(name, []).append(
                (cube, {**record, "start": start, "length": length})
            )
    names = sorted(set(by_cube) | set(changed_by_cube) | set(recorded))
    return {
        name: CubeFiles(tuple(by_cube.get(name, ())), tuple(changed_by_cube.get(name, ())))
        for name in names
    }


# ----------------------------------------------------------------------------------------------
# Rectilinear grids along the concat dimension: one chunk per file, or per calendar period
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgePlan:
    """The chunk edges along the concat dimension after a write, and where the write starts.

    ``rewrite_from`` is the first position whose chunk the write (re)writes: the stored length
    for an append that starts a new chunk, or the start of the stored last chunk when the new
    steps complete it (a month begun by the previous run). Stored values from ``rewrite_from``
    on are read back and written again with the new ones, since a chunk's length cannot grow
    in place.
    """

    edges: tuple[int, ...]
    rewrite_from: int


_KEY_LENGTH = {"year": 1, "month": 2, "day": 3}


def calendar_keys(
    values: Sequence[float], units: str | None, calendar: str | None, rule: str, *, what: str
) -> list[tuple[int, ...]]:
    """The calendar period of each time value: ``(year,)``, ``(year, month)`` or ``(year,
    month, day)`` for ``rule`` ``year``, ``month``, ``day``, decoded with cftime in the
    variable's own calendar (``noleap``, ``360_day``, ``proleptic_gregorian``, ...).

    Raises
    ------
    ConfigError
        The values are not CF times (``units`` without ``since``) or cannot be decoded.
    """
    import cftime

    field = f"chunks.{what}"
    if not _is_time_units(units):
        raise ConfigError(
            f"{rule!r} chunks need a time coordinate along {what!r}, but its values have units "
            f"{units!r} (not 'UNIT since DATE'); give {what!r} a chunk length, or 'file'",
            field=field,
        )
    try:
        dates = cftime.num2date(
            list(values), str(units), calendar or "standard", only_use_cftime_datetimes=True
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(
            f"{rule!r} chunks need the times along {what!r} decoded, but units {units!r} "
            f"(calendar {calendar!r}) do not decode: {exc}; give {what!r} a chunk length, or "
            "'file'",
            field=field,
        ) from exc
    n = _KEY_LENGTH[rule]
    return [(int(d.year), int(d.month), int(d.day))[:n] for d in dates]


def plan_calendar_edges(
    keys: Sequence[tuple[int, ...]],
    *,
    stored_edges: Sequence[int] = (),
    stored_last_key: tuple[int, ...] | None = None,
) -> EdgePlan:
    """Edges for new steps in calendar periods ``keys`` (one per step, non-decreasing),
    appended after ``stored_edges``: one chunk per period; a first new period equal to the
    stored last one (``stored_last_key``) extends the stored last chunk.

    Raises
    ------
    ValueError
        ``keys`` go back in time (the plan orders files before this).
    """
    if any(b < a for a, b in itertools.pairwise(keys)) or (
        keys and stored_last_key is not None and keys[0] < stored_last_key
    ):
        raise ValueError("calendar keys must not decrease")
    runs = [len(list(g)) for _, g in itertools.groupby(keys)]
    edges = [int(e) for e in stored_edges]
    length = sum(edges)
    rewrite_from = length
    if runs and edges and stored_last_key is not None and keys[0] == stored_last_key:
        rewrite_from -= edges[-1]
        edges[-1] += runs.pop(0)
    return EdgePlan(edges=(*edges, *runs), rewrite_from=rewrite_from)


def plan_edges(
    rule: str,
    files: Sequence[FileSchema],
    target: TargetSchema,
    concat_dim: str,
    *,
    stored_edges: Sequence[int] = (),
    order_by: str | None = None,
) -> EdgePlan:
    """Edges along ``concat_dim`` after appending ``files`` (in concat order) to the stored
    arrays (edges ``stored_edges``), for a ``chunks.<concat_dim>`` rule (:data:`CHUNK_RULES`
    of :mod:`icepipe.spec`): ``file`` gives each file its own chunk; ``day``, ``month``,
    ``year`` cut at the starts of calendar periods of the ordering variable's decoded times
    (``order_by``, by default the ``concat_dim`` coordinate), continuing a period the stored
    data end in.

    Raises
    ------
    ConfigError
        A calendar rule on values that are not decodable CF times.
    """
    if rule == "file":
        edges = tuple(int(e) for e in stored_edges)
        return EdgePlan(
            edges=(*edges, *(f.dims[concat_dim] for f in files)), rewrite_from=sum(edges)
        )
    keys: list[tuple[int, ...]] = []
    for f in files:
        if f.concat_values is None:
            raise ConfigError(
                f"{f.url}: {rule!r} chunks need the time values along {concat_dim!r}, but the "
                f"file has no coordinate {order_by or concat_dim!r}; give {concat_dim!r} a chunk "
                "length, or 'file'",
                field=f"chunks.{concat_dim}",
            )
        keys += calendar_keys(
            f.concat_values, f.concat_units, f.concat_calendar, rule, what=concat_dim
        )
    last: tuple[int, ...] | None = None
    stored = target.variables.get(order_by or concat_dim)
    # The stored range's last value (read whatever planning reads: see needs_order_values).
    if stored_edges and target.concat_last is not None and stored is not None:
        last = calendar_keys(
            (target.concat_last,),
            stored.attrs_units,
            stored.attrs_calendar,
            rule,
            what=concat_dim,
        )[0]
    return plan_calendar_edges(keys, stored_edges=stored_edges, stored_last_key=last)
