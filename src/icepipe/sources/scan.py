"""Scanning: a source file turned into virtual references plus the schema planning checks.

The format-specific part (recognising a file, parsing it into virtual datasets) is the
format's reader (:mod:`icepipe.sources.formats`); what follows it is the same for every format:
selection (``source.variables``/``drop_variables``), ``preprocess``, the checks that name a bad
file, and the schema. :func:`scan_file` runs on Dask workers. It takes and returns only
picklable values, and converts every failure of the underlying parsers into a
:class:`SourceError` that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from icepipe.cf import effective_time_encoding, packing_of
from icepipe.errors import IcepipeError, SourceError, short_message
from icepipe.model import FileSchema, SourceFile, VariableSchema
from icepipe.sources import grib_quick
from icepipe.sources.formats import Opened, Reader, ScanOptions, detect_format, reader_for
from icepipe.sources.formats.common import is_virtual
from icepipe.sources.hooks import apply_preprocess
from icepipe.sources.packed import PackedDataset, Skeleton, in_columns, pack
from icepipe.sources.quick import Pending, remember, scan_quick
from icepipe.sources.stores import access_error
from icepipe.storage import reference_url, scheme_of

__all__ = [
    "ScanBatch",
    "ScanOptions",
    "ScannedCubes",
    "ScannedFile",
    "detect_format",
    "pack_results",
    "sanitize_attrs",
    "scan_batch",
    "scan_file",
    "scan_files",
    "schema_of",
]


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A source file turned into a virtual dataset, plus the schema that planning checks."""

    source: SourceFile
    schema: FileSchema
    #: The virtual dataset, or (scans packed by :func:`scan_files`) its columns, from which
    #: :attr:`dataset` rebuilds it on each access.
    content: xr.Dataset | PackedDataset
    #: The files combined into this one step (``merge``/``concat_dims``); empty for one file.
    members: tuple[SourceFile, ...] = ()
    #: Each member's format as scanned (for GRIB, ``grib:<index>`` of its own hypercube).
    member_formats: tuple[str, ...] = ()
    #: Variables in the schema but not in ``dataset``: read natively (GRIB messages the codec
    #: cannot decode correctly), with the reason.
    fallback: Mapping[str, str] = field(default_factory=dict)

    @property
    def sources(self) -> tuple[SourceFile, ...]:
        """Every source file whose data this holds."""
        return self.members or (self.source,)

    @property
    def dataset(self) -> xr.Dataset:
        """The virtual dataset (rebuilt from its columns when packed: a new one per access)."""
        c = self.content
        return c if isinstance(c, xr.Dataset) else c.to_dataset()

    @property
    def variable_names(self) -> tuple[str, ...]:
        """The dataset's variable names, without rebuilding a packed dataset."""
        c = self.content
        return c.names if isinstance(c, PackedDataset) else tuple(str(n) for n in c.variables)


@dataclass(frozen=True)
class ScannedCubes:
    """A GRIB file scanned with ``grib_cubes``: one :class:`ScannedFile` per hypercube name."""

    source: SourceFile
    cubes: Mapping[str, ScannedFile]


def scan_file(source: SourceFile, options: ScanOptions) -> ScannedFile | ScannedCubes:
    """Open one file as a virtual dataset (data variables as references, coordinates loaded).

    Times are kept undecoded (raw numbers plus ``units``/``calendar`` attributes): that
    round-trips every CF calendar and unit exactly, and readers decode them as usual.

    Returns
    -------
    ScannedFile | ScannedCubes
        ``ScannedCubes`` for GRIB files scanned with ``options.grib_cubes``.

    Raises
    ------
    SourceError
        The file is missing, truncated, corrupt, of another format, or lacks ``concat_dim``.
    ConfigError
        Access to an object store was denied (``storage`` names how to reach it).
    """
    url = source.url
    o = options
    fmt = detect_format(url, o.storage) if o.format == "auto" else o.format
    reader = reader_for(fmt)
    quick: Any = None  # a finished scan from a template, Pending, or None
    if fmt in ("netcdf4", "netcdf3"):
        quick = scan_quick(source, o, fmt)
    elif fmt == "grib":
        quick = grib_quick.scan_quick(source, o)
    if isinstance(quick, tuple):  # laid out like a file scanned before: no dataset built
        return ScannedFile(source=source, schema=quick[0], content=quick[1])
    if isinstance(quick, dict):  # the same, per GRIB hypercube
        cubes = {n: ScannedFile(source=source, schema=r[0], content=r[1]) for n, r in quick.items()}
        return ScannedCubes(source=source, cubes=cubes)
    opened: list[Opened]
    try:
        with warnings.catch_warnings():
            # netCDF char arrays map to Zarr dtypes without a v3 spec yet: zarr warns per
            # variable per file, which buries real messages. The data round-trips exactly.
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            opened = reader.scan_virtual(source, o)
    except (KeyboardInterrupt, SystemExit):
        raise
    except IcepipeError:
        raise
    except BaseException as exc:  # parsers written in Rust raise PanicException (BaseException)
        if scheme_of(url) != "file" and _is_access_error(exc):
            raise access_error(exc, url) from exc
        plain = reader.open_plain(url, o) if o.mode == "native" else None
        if plain is not None:
            return _finish_plain(source, Opened("", plain, fmt), o, reader)
        raise _unreadable(url, fmt, reader, o, exc) from exc
    if o.grib_cubes is not None:
        scanned = _finish_cubes(source, opened, o, reader)
        if isinstance(quick, Pending):
            native = any(c.fallback for c in scanned.values())
            parts = {n: (c.schema, c.content) for n, c in scanned.items()}
            grib_quick.remember(quick, source, o, None if native else parts)
        return ScannedCubes(source=source, cubes=scanned)
    (only,) = opened  # one dataset unless grib_cubes
    result = _finish(source, only, o, reader)
    if isinstance(quick, Pending) and fmt == "grib":
        # Variables read natively are not rebuilt from templates: no template for the layout.
        grib_quick.remember(
            quick, source, o, None if result.fallback else (result.schema, result.content)
        )
    elif isinstance(quick, Pending):
        remember(quick, source, o, result.schema, result.content)
    return result


def _unreadable(
    url: str, fmt: str, reader: Reader, o: ScanOptions, exc: BaseException
) -> SourceError:
    """The error for a file the parser failed on, with the fixes that may apply."""
    if _is_codec_problem(exc):
        return SourceError(
            f"{url}: holds data compressed with a filter that has no Zarr codec here "
            f"({type(exc).__name__}: {short_message(exc)}), so it cannot be stored as virtual "
            "references: use mode: native (the data is rewritten with the pipeline's "
            "compression), or rewrite the file with zlib or zstd compression",
            url=url,
        )
    return SourceError(
        f"{url}: cannot be read as {fmt} ({type(exc).__name__}: {short_message(exc)}); "
        "the file may be truncated or corrupt: replace it, or remove it from source.urls"
        + ("" if o.format == "auto" else f"; if it is not {fmt}, set source.format: auto")
        + (
            "; if xarray opens it, it holds something virtual references cannot express: "
            "use mode: native"
            if o.mode == "virtual" and reader.plain_fallback
            else ""
        ),
        url=url,
    )


def _finish_plain(
    source: SourceFile, opened: Opened, o: ScanOptions, reader: Reader
) -> ScannedFile:
    """:func:`_finish` for a file opened plainly (native mode), whose values it reads: a read
    failing there names the file (a missing HDF5 filter plugin, a bad block), never escapes
    as an unexpected error that would be retried."""
    with opened.dataset:  # closed here, in this thread
        try:
            return _finish(source, opened, o, reader)
        except IcepipeError:
            raise
        except Exception as exc:
            url = source.url
            missing = "plugin" in str(exc).lower() or "filter" in str(exc).lower()
            raise SourceError(
                f"{url}: its values cannot be read ({type(exc).__name__}: "
                f"{short_message(exc)}); "
                + (
                    "it is compressed with an HDF5 filter this installation cannot decode: "
                    "install its plugin (hdf5plugin covers zstd, blosc, bzip2, lz4, ...) on "
                    "every machine that reads it, or rewrite the file with zlib"
                    if missing
                    else "the file may be truncated or corrupt: replace it, or remove it "
                    "from source.urls"
                ),
                url=url,
            ) from exc


def _is_codec_problem(exc: BaseException) -> bool:
    """Whether the parser failed on a compression filter it cannot map to a Zarr codec (an
    HDF5 filter plugin such as bzip2, whose numcodecs name zarr has no implementation for),
    rather than on the file's bytes."""
    text = f"{type(exc).__name__}: {exc}"
    return "UnknownCodecError" in text or "get_filters" in text or "codec '" in text


def _finish_cubes(
    source: SourceFile, cubes: list[Opened], o: ScanOptions, reader: Reader
) -> dict[str, ScannedFile]:
    """:func:`_finish` for each hypercube of a file, ``variables``/``drop_variables`` applying
    to the file as a whole: a name must be in one of its cubes, and a cube holding none of the
    ``variables`` is left out."""
    url = source.url

    def names(c: Opened) -> set[str]:
        return {str(v) for v in c.dataset.variables} | c.elsewhere

    present = set().union(*(names(c) for c in cubes))
    missing = [v for v in (*(o.variables or ()), *o.drop_variables) if v not in present]
    if missing:
        raise SourceError(
            f"{url}: has no variable(s) {', '.join(missing)} named in source.variables / "
            f"source.drop_variables, in any of its GRIB hypercubes; variables: "
            f"{', '.join(sorted(present))}",
            url=url,
        )
    out = {}
    for cube in cubes:
        mine = names(cube)
        # Refused variables count: the cube is refused naming them, not skipped.
        data = {str(v) for v in cube.dataset.data_vars} | cube.elsewhere
        if not any(o.selects(v) for v in data):
            continue  # nothing of this cube is wanted
        options = dataclasses.replace(
            o,
            variables=None if o.variables is None else tuple(v for v in o.variables if v in mine),
            drop_variables=tuple(v for v in o.drop_variables if v in mine),
        )
        out[cube.name] = _finish(source, cube, options, reader)
    if not out:
        raise SourceError(
            f"{url}: source.variables / source.drop_variables leave no variable of any of its "
            "GRIB hypercubes; fix them, or remove the file",
            url=url,
        )
    return out


def _finish(source: SourceFile, opened: Opened, o: ScanOptions, reader: Reader) -> ScannedFile:
    """Select, preprocess and check one opened dataset; summarise it into its schema.

    Variables read natively (GRIB fallback) are not in the dataset, but are part of the schema
    all the same.
    """
    url = source.url
    ds = opened.dataset
    where = f"{url} (GRIB hypercube {opened.name!r})" if opened.name else url
    _check_refs_inside(ds, source)
    refused = {n: r for n, r in opened.refused.items() if o.selects(n)}
    if refused:
        reasons = "; ".join(f"{n}: {r}" for n, r in refused.items())
        raise SourceError(
            f"{where}: variable(s) {', '.join(refused)} cannot be ingested correctly ({reasons}); "
            "list them in source.drop_variables, or split the file so that each variable's "
            "messages share one grid",
            url=url,
        )
    # Selection applies to the variables read natively (or refused and dropped) as to the
    # virtual ones; _select sees only the latter.
    # Variables the parser leaves out without a word (netCDF4 variables without values).
    vanished = set(reader.refused_variables(url, o)) - {str(v) for v in ds.variables}
    elsewhere = opened.elsewhere | vanished
    # drop_variables may name a variable some files lack; variables must exist.
    if any(v not in ds.variables and v not in elsewhere for v in o.variables or ()):
        _select(ds, where, o.variables, o.drop_variables, keep=())  # raises, naming them
    variables = None if o.variables is None else tuple(v for v in o.variables if v not in elsewhere)
    drop = tuple(v for v in o.drop_variables if v not in elsewhere)
    native = {n: v for n, v in opened.native.items() if o.selects(n)}
    ds = _select(ds, where, variables, drop, keep=(o.order_by,) if o.order_by else ())
    ds = apply_preprocess(ds, o.preprocess, o.search_path, url)
    ds = sanitize_attrs(ds)
    dropped = (
        [n for n in sorted(vanished) if n not in ds.variables and o.selects(n)]
        if ds.sizes.get(o.concat_dim) != 0
        else []
    )
    if o.concat_dim not in ds.dims and o.concat_dim in dropped:
        raise SourceError(
            f"{where}: has no steps along {o.concat_dim!r} (empty, or still being written?); "
            "remove it from source.urls, or run again once it holds data",
            url=url,
        )
    if o.concat_dim not in ds.dims:
        raise SourceError(
            f"{where}: has no dimension {o.concat_dim!r} (dimensions: "
            f"{', '.join(map(str, ds.dims))}); set source.concat_dim to one of these, or remove "
            "the file",
            url=url,
        )
    empty = [str(d) for d, n in ds.sizes.items() if n == 0 and d != o.concat_dim]
    users = [str(k) for k, v in ds.variables.items() if set(v.dims) & set(empty)]
    if empty or dropped:
        raise SourceError(
            f"{where}: variable(s) {', '.join(sorted({*users, *dropped}))} hold no values (a "
            f"dimension of length 0{', ' + ', '.join(map(repr, empty)) if empty else ''}) and "
            "would be left out; list them in source.drop_variables, or remove the file",
            url=url,
        )
    if o.order_by is not None and (
        o.order_by not in ds.variables or ds.variables[o.order_by].dims != (o.concat_dim,)
    ):
        candidates = [str(k) for k, v in ds.variables.items() if v.dims == (o.concat_dim,)]
        raise SourceError(
            f"{where}: has no 1-D variable {o.order_by!r} along {o.concat_dim!r} to order files "
            f"by; set source.order_by to one of: {', '.join(candidates) or '(none)'}",
            url=url,
        )
    schema = schema_of(ds, url, opened.format, o.concat_dim, order_by=o.order_by)
    if opened.dataset.encoding.get("grid") is not None:  # GeoTIFF: CRS and transform
        schema = dataclasses.replace(schema, grid=str(opened.dataset.encoding["grid"]))
    if o.mode == "native":
        schema = _joined_characters(schema)
    if native:
        schema = dataclasses.replace(schema, variables={**schema.variables, **native})
    # In native mode every variable is read natively anyway: nothing falls back.
    fallback = {n: opened.fallback.get(n, "") for n in native} if o.mode == "virtual" else {}
    if fallback and scheme_of(url) != "file":
        raise SourceError(
            f"{where}: variable(s) {', '.join(fallback)} cannot be decoded correctly from "
            f"virtual references ({next(iter(fallback.values()))}), and GRIB on object storage "
            "cannot be read natively; list them in source.drop_variables, or copy the files to "
            "a file system every worker mounts",
            url=url,
        )
    return ScannedFile(source=source, schema=schema, content=ds, fallback=fallback)


def scan_files(
    sources: list[SourceFile], options: ScanOptions
) -> list[ScannedFile | ScannedCubes | SourceError]:
    """:func:`scan_file` for a batch of files in one task: per file, the result or its error.

    One task per batch instead of per file keeps scheduler round trips and result transfers
    few when there are thousands of small files. The results are packed
    (:func:`pack_results`): files laid out alike share one skeleton and one schema's parts, so
    the batch pickles and is held on the client in a few hundred bytes a file.
    """
    out: list[ScannedFile | ScannedCubes | SourceError] = []
    for source in sources:
        try:
            out.append(scan_file(source, options))
        except SourceError as exc:
            out.append(exc)
    return pack_results(out, options.concat_dim)


@dataclass(frozen=True)
class ScanBatch:
    """:func:`scan_files`'s results as one object: Dask's serialisation pickles the items of a
    returned list one by one, which would write each file's shared skeleton again."""

    results: list[ScannedFile | ScannedCubes | SourceError]


def scan_batch(sources: list[SourceFile], options: ScanOptions) -> ScanBatch:
    """:func:`scan_files` as a Dask task returns it (see :class:`ScanBatch`)."""
    return ScanBatch(scan_files(sources, options))


#: Whether :func:`scan_files` packs its results (tests switch it off to compare).
PACK_RESULTS = True


def pack_results[T](results: list[T], concat_dim: str) -> list[T]:
    """The scans among ``results`` with their datasets packed (:mod:`icepipe.sources.packed`)
    and the parts of their schemas that are equal shared, so that pickling writes them once.
    A dataset that does not pack exactly stays as it is."""
    if not PACK_RESULTS:
        return results
    # Scans built packed (sources/quick.py) bring their skeletons: the others join them.
    skeletons: list[Skeleton] = list(
        {
            id(r.content.skeleton): r.content.skeleton
            for r in results
            if isinstance(r, ScannedFile) and isinstance(r.content, PackedDataset)
        }.values()
    )
    interned: dict[Any, Any] = {}
    out: list[Any] = []
    for r in results:
        if isinstance(r, ScannedFile) and not r.members:
            content = r.content
            if isinstance(content, xr.Dataset):
                # Anything packing misreads travels as the dataset it was.
                with contextlib.suppress(Exception):
                    content = pack(content, concat_dim, skeletons) or content
            r = dataclasses.replace(r, schema=_interned(r.schema, interned), content=content)
        out.append(r)
    # The files' own columns into a few arrays per batch.
    at = [i for i, r in enumerate(out) if isinstance(r, ScannedFile) and _packed_alone(r)]
    for i, content in zip(at, in_columns([out[i].content for i in at]), strict=True):
        out[i] = dataclasses.replace(out[i], content=content)
    return out


def _packed_alone(r: ScannedFile) -> bool:
    return isinstance(r.content, PackedDataset) and r.content.columns is None


def _interned(schema: FileSchema, cache: dict[Any, Any]) -> FileSchema:
    """``schema`` with its variables and dimensions the same objects as those of an equal
    schema seen before (schemas are never changed in place)."""
    variables = {name: cache.setdefault(("v", var), var) for name, var in schema.variables.items()}
    vkey = ("vs", tuple(variables.items()))
    dkey = ("d", tuple(schema.dims.items()))
    return dataclasses.replace(
        schema,
        variables=cache.setdefault(vkey, variables),
        dims=cache.setdefault(dkey, dict(schema.dims)),
        format=cache.setdefault(("s", schema.format), schema.format),
        concat_units=cache.setdefault(("s", schema.concat_units), schema.concat_units),
        concat_calendar=cache.setdefault(("s", schema.concat_calendar), schema.concat_calendar),
    )


def _is_access_error(exc: BaseException) -> bool:
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    seen: BaseException | None = exc
    while seen is not None:  # parsers wrap the store's error
        if isinstance(seen, PermissionDeniedError | UnauthenticatedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _select(
    ds: xr.Dataset,
    url: str,
    variables: tuple[str, ...] | None,
    drop_variables: tuple[str, ...],
    *,
    keep: tuple[str, ...],
) -> xr.Dataset:
    """Apply ``source.variables`` / ``source.drop_variables``.

    A name of ``drop_variables`` the file lacks is fine: dropping a variable only some files
    have is how such series are ingested.
    """
    missing = [v for v in variables or () if v not in ds.variables]
    if missing:
        raise SourceError(
            f"{url}: has no variable(s) {', '.join(missing)} named in source.variables; "
            f"variables: {', '.join(map(str, ds.variables))}",
            url=url,
        )
    if variables is not None:
        names = [v for v in (*variables, *keep) if v in ds.variables]
        ds = ds[list(dict.fromkeys(names))]
    if drop_variables:
        ds = ds.drop_vars([v for v in drop_variables if v in ds.variables])
    return ds


def _check_refs_inside(ds: xr.Dataset, source: SourceFile) -> None:
    """Raise when a chunk reference points past the end of the file.

    Parsers trust the header: a netCDF3 file cut inside its last data record still opens (its
    loaded coordinates come first), and only readers would fail, long after the commit.
    """
    end = 0
    ref_url = reference_url(source.url)
    for var in ds.variables.values():
        if is_virtual(var):
            manifest = var.data.manifest
            mine = manifest._paths == ref_url  # the references into this very file
            if mine.any():
                ends = manifest._offsets[mine] + manifest._lengths[mine]
                end = max(end, int(ends.max()))
    if end > source.size:
        raise SourceError(
            f"{source.url}: is truncated: its header places data up to byte {end} but the file "
            f"has {source.size} bytes; replace it, or remove it from source.urls",
            url=source.url,
        )


def _stored_dtype(var: xr.Variable) -> np.dtype[Any]:
    """The dtype ``var`` has in its file, as the repository summary reports stored arrays.

    Loaded (not virtual) variables come decoded: integers with a ``_FillValue`` or packing
    become floats. Their file dtype (``encoding["dtype"]``) is what a first ingest stores, so
    that is what a later file is compared with: otherwise every append of an int32 time
    coordinate with a ``_FillValue`` is refused as "float64 but the repository has int32".
    """
    raw = var.encoding.get("dtype")
    if raw is not None and var.dtype.kind == "f" and np.dtype(raw).kind in "iu":
        file_dtype: np.dtype[Any] = np.dtype(raw)
        return file_dtype
    dtype: np.dtype[Any] = var.dtype
    return dtype


def schema_of(
    ds: xr.Dataset, url: str, fmt: str, concat_dim: str, *, order_by: str | None = None
) -> FileSchema:
    """Summarise a (virtual) dataset into the picklable schema that planning compares."""
    variables: dict[str, VariableSchema] = {}
    # CF bounds usually have no units of their own: compare them in their parent's encoding,
    # by the rule the repository side applies too (they are stored as the file has them).
    encodings = effective_time_encoding({str(k): v.attrs for k, v in ds.variables.items()})
    for name, var in ds.variables.items():
        units, calendar = encodings[str(name)]
        chunks = tuple(int(c) for c in var.data.metadata.chunks) if is_virtual(var) else None
        variables[str(name)] = VariableSchema(
            dims=tuple(str(d) for d in var.dims),
            shape=tuple(int(s) for s in var.shape),
            dtype=str(_stored_dtype(var)),
            chunks=chunks,
            attrs_units=units,
            attrs_calendar=calendar,
            packing=packing_of(var.attrs, str(var.dtype)),
        )
    concat: tuple[Any, Any, Any] = (None, None, None)
    order_var = order_by or concat_dim
    if order_var in ds.variables and ds.variables[order_var].dims == (concat_dim,):
        coord = ds.variables[order_var]
        concat = concat_summary(np.asarray(coord.values), coord.attrs)
    return FileSchema(
        url=url,
        format=fmt,
        dims={str(k): int(v) for k, v in ds.sizes.items()},
        variables=variables,
        concat_values=concat[0],
        concat_units=concat[1],
        concat_calendar=concat[2],
    )


def concat_summary(
    values: np.ndarray[Any, Any], attrs: Mapping[Any, Any]
) -> tuple[tuple[float, ...] | None, str | None, str | None]:
    """The schema's ``concat_values``, ``concat_units`` and ``concat_calendar`` of a file from
    the values and attributes of its variable ordering files (the concat dimension's)."""
    concat_values: tuple[float, ...] | None = None
    if values.dtype.kind in "iuf":
        concat_values = tuple(float(v) for v in values)
    elif values.dtype.kind in "mM":
        concat_values = tuple(float(v) for v in values.astype("int64"))
    return concat_values, _str_attr(attrs, "units"), _str_attr(attrs, "calendar")


def _joined_characters(schema: FileSchema) -> FileSchema:
    """The schema as native ingests store the file: netCDF char arrays ``(..., strlen)`` of
    ``S1`` joined into fixed-length strings ``(...)`` of ``S<strlen>``, as xarray decodes them
    (its Zarr writer stores them so, and compares appends with them so)."""
    variables = {}
    for name, v in schema.variables.items():
        if v.dtype == "|S1" and v.dims:
            v = dataclasses.replace(
                v,
                dims=v.dims[:-1],
                shape=v.shape[:-1],
                dtype=f"|S{v.shape[-1]}",
                chunks=None if v.chunks is None else v.chunks[:-1],
            )
        variables[name] = v
    used = {d for v in variables.values() for d in v.dims}
    dims = {d: n for d, n in schema.dims.items() if d in used}
    return dataclasses.replace(schema, variables=variables, dims=dims)


def _str_attr(attrs: Mapping[Any, Any], key: str) -> str | None:
    value = attrs.get(key)
    return str(value) if value is not None else None


def _clean_value(value: Any) -> tuple[bool, Any]:
    """Return (keep, value): Icechunk stores attributes as strict JSON, without NaN or Inf."""
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return False, None
        return True, value
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        return False, None
    return True, value


def sanitize_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Drop attributes holding NaN or Inf: Icechunk stores attributes as strict JSON."""

    def clean(attrs: dict[Any, Any]) -> dict[Any, Any]:
        out = {}
        for k, v in attrs.items():
            keep, value = _clean_value(v)
            if keep:
                out[k] = value
        return out

    ds = ds.copy()
    ds.attrs = clean(ds.attrs)
    for var in ds.variables.values():
        var.attrs = clean(var.attrs)
    return ds
