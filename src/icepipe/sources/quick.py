"""Finished scans of local netCDF4 and netCDF3 files from a template: the packed result and
schema of a file laid out like one already scanned in this worker process, without a dataset.

The layouts are read by :mod:`~icepipe.sources.formats.hdf5_index` (netCDF4) and
:mod:`~icepipe.sources.formats.netcdf3_header` (netCDF3: the classic header, natively), which
give the same members (``layout_of``, ``chunk_table``, ``read_raw``, ``per_file_value``,
``hand_on``, ``discard``); what follows is the same for both. A netCDF3 file whose record
dimension is the concat dimension may hold another number of records than its template: its
skeleton is the template's with the record variables' shapes resized (one per length, shared).

:mod:`~icepipe.sources.formats.hdf5_index` rebuilds a file's virtual dataset from a template;
the scan then selects, checks and summarises that dataset, and packing takes it apart again
into its skeleton and columns (:mod:`~icepipe.sources.packed`). For a file whose layout key
(:func:`hdf5_index.layout_of`, over the variables the scan may keep) and scan options are those
of a file already scanned, all of that gives what the first file gave but for the file's own
columns: its chunk offsets and lengths,
its loaded values along the concat dimension, the attributes read per file and what the schema
takes from them. This module produces exactly those, onto the first file's skeleton.

The first file of each key is scanned the usual way; its result becomes the key's template once
building that same file's result from the template reproduces it exactly (schema, and the
packed dataset against the scanned one), else the key is marked unusable. A later file goes the
usual way when something the template does not cover differs: a loaded variable without the
concat dimension (coordinates, scalars) whose values differ, a loaded variable along it that
xarray's decoding would change, a chunk that is not stored. Scans with a ``preprocess`` hook
never come here (the hook sees each file's dataset). Templates live in the worker process.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from icepipe.cf import effective_time_encoding
from icepipe.errors import SourceError
from icepipe.model import FileSchema, SourceFile
from icepipe.sources.formats import hdf5_index
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.formats.templates import Templates
from icepipe.sources.packed import PackedDataset, Skeleton, attrs_differing, pack
from icepipe.storage import reference_url, scheme_of

__all__ = ["Pending", "forget", "remember", "scan_quick"]

_MAX_TEMPLATES = 16


@dataclass(frozen=True, eq=False)
class _Template:
    schema: FileSchema
    #: The first file's dataset packed (its own refs and values, not a batch's columns).
    packed: PackedDataset
    #: Raw bytes of each loaded variable in the first file.
    raw: dict[str, bytes]
    #: Loaded variables along the concat dimension whose raw values are their values.
    raw_ok: frozenset[str]
    #: The skeleton for other lengths along the concat dimension (netCDF3 files whose record
    #: dimension it is), by length: the files of one length share one.
    resized: dict[int, Skeleton] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Pending:
    """A file whose layout has no template yet: scan it the usual way, then
    :func:`remember` its result."""

    key: tuple[Any, ...]


_templates: Templates[_Template] = Templates(_MAX_TEMPLATES)


def forget() -> None:
    """Drop every template of this process (tests, benchmarks)."""
    _templates.clear()


def _index(fmt: str) -> Any:
    """The module reading layouts of ``fmt`` files (None: no quick route for them)."""
    if fmt == "netcdf4":
        from icepipe.sources.formats import netcdf4

        return hdf5_index if netcdf4.INDEXED_SCANS else None
    if fmt == "netcdf3":
        from icepipe.sources.formats import netcdf3, netcdf3_header

        return netcdf3_header if netcdf3.INDEXED_SCANS else None
    return None


def _applies(url: str, o: ScanOptions) -> bool:
    return (
        scheme_of(url) == "file"
        and o.preprocess is None
        and o.mode == "virtual"
        and o.grib_cubes is None
    )


def _layout_of(index: Any, path: str, o: ScanOptions) -> Any:
    """The layout of the file ``path``, keyed over the variables the scan may keep."""
    return index.layout_of(
        path, o.group, o.order_by, variables=o.variables, drop_variables=o.drop_variables
    )


def _key(layout: Any, o: ScanOptions) -> tuple[Any, ...]:
    # netCDF4 layouts keep their whole key for hdf5_index's own (whole-dataset) templates.
    key = layout.selected_key if isinstance(layout, hdf5_index.Layout) else layout.key
    return (key, o.concat_dim, o.variables, o.drop_variables)


def scan_quick(
    source: SourceFile, o: ScanOptions, fmt: str = "netcdf4"
) -> tuple[FileSchema, PackedDataset] | Pending | None:
    """The schema and packed dataset of the ``fmt`` (netCDF4 or netCDF3) file ``source`` from
    a template; :class:`Pending` when its layout has none yet; None when it goes the usual way.

    Raises
    ------
    SourceError
        A chunk reference points past the end of the file (truncated).
    """
    index = _index(fmt)
    if index is None or not _applies(source.url, o):
        return None
    path = source.url.removeprefix("file://")
    try:
        layout = _layout_of(index, path, o)
    except Exception:  # the usual route's errors name the problem
        return None
    if layout is None:
        return None
    key = (fmt, *_key(layout, o))
    known, template = _templates.lookup(key)
    if not known or template is None:
        index.hand_on(layout, path, o.group, o.order_by)  # the usual route reads it
        return Pending(key) if not known else None
    try:
        built = _build(template, layout, source, o, index)
    except SourceError:
        index.discard(layout)
        raise
    except Exception:  # whatever this module misreads goes the usual way, not wrong
        built = None
    if built is None:
        index.hand_on(layout, path, o.group, o.order_by)
        return None
    index.discard(layout)
    return built


def remember(
    pending: Pending, source: SourceFile, o: ScanOptions, schema: FileSchema, ds: Any
) -> None:
    """Make the usual scan of ``source`` (``schema``, dataset ``ds``) the template of its
    layout if building that file's result from it reproduces it exactly."""
    try:
        template = _template_of(pending, source, o, schema, ds)
    except Exception:  # a template this module cannot check is not used
        template = None
    _templates.put(pending.key, template)


def _template_of(
    pending: Pending, source: SourceFile, o: ScanOptions, schema: FileSchema, ds: Any
) -> _Template | None:
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        return None
    ds = copy.deepcopy(ds)  # what follows the scan may change its dataset in place
    packed = pack(ds, o.concat_dim)
    if packed is None or packed.source != source.url:
        return None
    fmt = pending.key[0]
    index = _index(fmt)
    if index is None:
        return None
    layout = _layout_of(index, source.url.removeprefix("file://"), o)
    if layout is None:
        return None
    try:
        if (fmt, *_key(layout, o)) != pending.key:
            return None
        raw: dict[str, bytes] = {}
        raw_ok = set()
        for v in packed.skeleton.variables:
            if v.kind == "virtual" or v.name not in layout.datasets:
                continue
            values = index.read_raw(layout.datasets[v.name])
            raw[v.name] = values.tobytes()
            if v.kind == "per-file" and hdf5_index.raw_decodes_to_itself(
                ds[v.name].variable, values
            ):
                raw_ok.add(v.name)
        template = _Template(schema=schema, packed=packed, raw=raw, raw_ok=frozenset(raw_ok))
        # Built again from the template, the file must give its own scan: with the template's
        # loaded values, and with the raw values of the variables that would take them.
        others = {n: b for n, b in raw.items() if n not in raw_ok}
        for check in (template, dataclasses.replace(template, raw=others)):
            built = _build(check, layout, source, o, index)
            if built is None or built[0] != schema:
                return None
            if not hdf5_index.same_dataset(built[1].to_dataset(), ds):
                return None
        return template
    finally:
        index.discard(layout)


def _build(
    template: _Template, layout: Any, source: SourceFile, o: ScanOptions, index: Any
) -> tuple[FileSchema, PackedDataset] | None:
    """The file of ``layout`` as ``template`` gives it (None: it goes the usual way)."""
    length = _records(template, layout, o)
    sk = template.packed.skeleton if length is None else _resized(template, length, o.concat_dim)
    if sk is None:
        return None
    ref_url = reference_url(source.url)
    refs: list[Any] = []
    values: list[np.ndarray[Any, Any]] = []
    per_file_values = iter(template.packed.values)
    end = 0
    for v in sk.variables:
        obj = layout.datasets.get(v.name)
        if obj is None:
            return None  # made by the reader, not read from the file
        if v.kind == "virtual":
            table = index.chunk_table(obj, tuple(v.metadata.chunks))
            if table is None or not table[0].all() or table[1].shape != v.form:
                return None
            refs.append((ref_url, table[1], table[2]))
            end = max(end, int((table[1] + table[2]).max()))
            continue
        mine = next(per_file_values) if v.kind == "per-file" else None
        raw = index.read_raw(obj)
        if raw.tobytes() == template.raw.get(v.name):
            if mine is not None:
                values.append(mine.copy())
        elif (
            mine is not None
            and v.name in template.raw_ok
            and raw.shape == _along(v, mine, length, o.concat_dim)
        ):
            values.append(raw)
        else:
            return None
    end = max(end, _end_left_out(layout, index))
    if end > source.size:
        raise SourceError(
            f"{source.url}: is truncated: its header places data up to byte {end} but the file "
            f"has {source.size} bytes; replace it, or remove it from source.urls",
            url=source.url,
        )
    attrs = _attrs(template, layout, index)
    packed = PackedDataset(
        skeleton=sk,
        refs=tuple(refs),
        values=tuple(values),
        attrs=attrs_differing(sk, attrs),
        source=source.url,
    )
    return _schema(template, packed, attrs, source, o, length), packed


def _end_left_out(layout: Any, index: Any) -> int:
    """Where the data of the datasets the selection leaves out ends: the usual route checks
    every reference of the file before selecting (and refuses masked chunks)."""
    end = int(getattr(layout, "left_out_end", 0))  # netCDF3: read from the header
    for name in getattr(layout, "left_out", ()):
        obj = layout.datasets[name]
        table = index.chunk_table(obj, obj.chunks or obj.shape)
        if table is not None:
            present, offsets, lengths = table
            end = max(end, int((offsets + lengths)[present].max()))
    return end


def _records(template: _Template, layout: Any, o: ScanOptions) -> int | None:
    """The file's length along the concat dimension when it is a netCDF3 record dimension
    and the file has another number of records than the template's (None otherwise)."""
    records = getattr(layout, "records", None)
    if records is None or records[0] != o.concat_dim:
        return None
    n = int(records[1])
    return None if n == template.schema.dims.get(o.concat_dim) else n


def _resized(template: _Template, length: int, concat_dim: str) -> Skeleton | None:
    """The template's skeleton with ``length`` records along ``concat_dim`` (None: a variable
    has that dimension elsewhere than first)."""
    known = template.resized.get(length)
    if known is not None:
        return known
    sk = template.packed.skeleton
    variables = []
    for v in sk.variables:
        if concat_dim not in v.dims or v.kind == "per-file":
            variables.append(v)
            continue
        if v.kind != "virtual" or v.dims[0] != concat_dim:
            return None
        metadata = dataclasses.replace(v.metadata, shape=(length, *v.metadata.shape[1:]))
        variables.append(dataclasses.replace(v, metadata=metadata, form=(length, *v.form[1:])))
    resized = dataclasses.replace(sk, variables=tuple(variables))
    return template.resized.setdefault(length, resized)


def _along(
    v: Any, values: np.ndarray[Any, Any], length: int | None, concat_dim: str
) -> tuple[int, ...]:
    """The shape of a per-file variable's ``values`` with ``length`` steps along the concat
    dimension (``None``: as they are)."""
    shape = list(values.shape)
    if length is not None:
        shape[v.dims.index(concat_dim)] = length
    return tuple(shape)


def _attrs(template: _Template, layout: Any, index: Any) -> dict[str, dict[Any, Any]]:
    """Every variable's attributes (``""``: the dataset's) as the file has them: the first
    file's, with the values read per file."""
    first = template.packed
    out: dict[str, dict[Any, Any]] = {}
    for name, per_file in (("", layout.group_attrs), *layout.var_attrs.items()):
        base = first.attrs.get(name)
        if base is None:
            if name and name not in first.skeleton.names:
                continue  # left out by source.variables / drop_variables
            base = first.skeleton.attrs if not name else _skeleton_var(first, name).attrs
        if not per_file:
            out[name] = base
            continue
        attrs = dict(base)
        for key, value in per_file.items():
            attrs[key] = index.per_file_value(value)
        out[name] = attrs
    return out


def _skeleton_var(packed: PackedDataset, name: str) -> Any:
    return next(v for v in packed.skeleton.variables if v.name == name)


def _schema(
    template: _Template,
    packed: PackedDataset,
    attrs: dict[str, dict[Any, Any]],
    source: SourceFile,
    o: ScanOptions,
    length: int | None = None,
) -> FileSchema:
    """The template's schema with what the file's own attributes and values change: time
    units and calendars, the values ordering files, and its ``length`` along the concat
    dimension when that differs from the template's."""
    from icepipe.sources.scan import concat_summary

    first = template.schema
    encodings = effective_time_encoding({n: attrs.get(n, {}) for n in packed.names})
    variables = {}
    for name, var in first.variables.items():
        units, calendar = encodings.get(name, (var.attrs_units, var.attrs_calendar))
        if (units, calendar) != (var.attrs_units, var.attrs_calendar):
            var = dataclasses.replace(var, attrs_units=units, attrs_calendar=calendar)
        if length is not None and o.concat_dim in var.dims:
            shape = list(var.shape)
            shape[var.dims.index(o.concat_dim)] = length
            var = dataclasses.replace(var, shape=tuple(shape))
        variables[name] = var
    order_var = o.order_by or o.concat_dim
    concat: tuple[Any, Any, Any] = (None, None, None)
    per_file = [v.name for v in packed.skeleton.variables if v.kind == "per-file"]
    if order_var in per_file and _skeleton_var(packed, order_var).dims == (o.concat_dim,):
        values = packed.values[per_file.index(order_var)]
        concat = concat_summary(np.asarray(values), attrs.get(order_var, {}))
    elif first.concat_values is not None:
        raise ValueError("the ordering variable is not loaded per file")  # not reproduced
    dims = first.dims if length is None else {**first.dims, o.concat_dim: length}
    return dataclasses.replace(
        first,
        url=source.url,
        dims=dims,
        variables=variables if variables != first.variables else first.variables,
        concat_values=concat[0],
        concat_units=concat[1],
        concat_calendar=concat[2],
    )
