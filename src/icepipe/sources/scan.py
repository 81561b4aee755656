"""HOW to read a source: detect its format and turn it into virtual references.

:func:`scan_file` runs on Dask workers. It takes and returns only picklable values, and converts
every failure of the underlying parsers into a :class:`SourceError` that names the file and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import obstore
import xarray as xr

from icepipe.cf import effective_time_encoding, is_time_units, packing_of
from icepipe.errors import ConfigError, IcepipeError, SourceError, short_message
from icepipe.model import FileSchema, SourceFile, VariableSchema
from icepipe.sources.hooks import apply_preprocess
from icepipe.sources.listing import ZARR_METADATA
from icepipe.sources.stores import (
    access_error,
    is_not_found,
    is_remote_zarr,
    registry_for,
    store_and_path,
)
from icepipe.storage import StorageOptions, reference_url, scheme_of

__all__ = [
    "ScanOptions",
    "ScannedCubes",
    "ScannedFile",
    "detect_format",
    "sanitize_attrs",
    "scan_file",
    "scan_files",
    "schema_of",
]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# An HDF5 superblock may follow a user block of 512, 1024, 2048, ... bytes.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class ScannedFile:
    """A source file turned into a virtual dataset, plus the schema that planning checks."""

    source: SourceFile
    schema: FileSchema
    dataset: xr.Dataset
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


def _store_and_path(url: str, storage: StorageOptions | None = None) -> tuple[Any, str]:
    return store_and_path(url, storage)


def detect_format(url: str, storage: StorageOptions | None = None) -> str:
    """Detect a file's format from its magic bytes: ``netcdf3`` or ``netcdf4`` (HDF5).

    File extensions are not trusted (HDF5 files named ``.cdf`` exist in real archives).
    ``storage`` reaches object stores (credentials are read from this process's environment).

    Raises
    ------
    SourceError
        The file cannot be read or is not a format icepipe knows.
    ConfigError
        Access to the object was denied.
    """
    remote = scheme_of(url) != "file"
    local = url.removeprefix("file://")
    if not remote and os.path.isdir(local):
        if any(os.path.exists(os.path.join(local, m)) for m in ZARR_METADATA):
            return "zarr"
        raise SourceError(f"{url}: is a folder but not a Zarr store", url=url)
    store, path = _store_and_path(url, storage)
    try:
        size = int(obstore.head(store, path)["size"])
        # A range past the end of a file is an error in obstore: empty files need a guard.
        head = bytes(obstore.get_range(store, path, start=0, length=min(8, size))) if size else b""
    except Exception as exc:
        # An object store has no folders: a Zarr store is a prefix with metadata objects.
        if remote and is_not_found(exc) and is_remote_zarr(url, storage):
            return "zarr"
        if is_not_found(exc):
            raise SourceError(f"{url}: file not found (deleted after listing?)", url=url) from exc
        if remote:
            raise access_error(exc, url) from exc
        raise SourceError(
            f"{url}: cannot be read ({short_message(exc)}); check the file and its permissions",
            url=url,
        ) from exc
    if not head:
        raise SourceError(
            f"{url}: is empty (0 bytes); replace it, or remove it from source.urls", url=url
        )
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05"):
        return "netcdf3"
    if head == _HDF5_MAGIC:
        return "netcdf4"
    for offset in _HDF5_OFFSETS[1:]:
        if offset + 8 > size:
            break
        if bytes(obstore.get_range(store, path, start=offset, length=8)) == _HDF5_MAGIC:
            return "netcdf4"
    if head[:4] == b"GRIB":
        return "grib"
    raise SourceError(
        f"{url}: not a netCDF3, netCDF4/HDF5 or GRIB file (first bytes {head!r}); "
        "remove it from source.urls or fix the glob",
        url=url,
    )


def _parser(fmt: str, group: str | None = None) -> Any:
    from virtualizarr.parsers import HDFParser, NetCDF3Parser, ZarrParser

    if fmt == "netcdf3":
        return NetCDF3Parser()
    if fmt == "netcdf4":
        return HDFParser(group=group)
    if fmt == "zarr":
        return ZarrParser(group=group)
    raise ConfigError(f"unsupported format {fmt!r}", field="source.format")


@dataclass(frozen=True)
class ScanOptions:
    """How to scan the files of one pipeline (``source.*`` fields); pickles, sent to workers.

    Attributes
    ----------
    format
        ``auto`` (magic bytes) or one of ``netcdf3``, ``netcdf4``, ``zarr``, ``grib``.
    concat_dim, order_by, variables, drop_variables, preprocess
        As in the pipeline's ``source`` section.
    search_path
        Folder searched first for the ``preprocess`` module.
    storage
        How to reach object stores: names of credential variables, never values.
    grib_cube
        The one GRIB hypercube to ingest (files holding several need it, or ``grib_cubes``).
    grib_cubes
        Ingest several hypercubes, each into its own group: these names, or every cube when
        empty. ``None``: one cube per pipeline.
    mode
        ``virtual`` or ``native``.
    group
        The netCDF4/HDF5 (or Zarr) group of each file to read; the root group when None.
    """

    format: str = "auto"
    concat_dim: str = "time"
    order_by: str | None = None
    variables: tuple[str, ...] | None = None
    drop_variables: tuple[str, ...] = ()
    preprocess: str | None = None
    search_path: str | None = None
    storage: StorageOptions | None = None
    grib_cube: str | None = None
    grib_cubes: tuple[str, ...] | None = None
    mode: str = "virtual"
    group: str | None = None

    def selects(self, name: str) -> bool:
        """Whether ``variables``/``drop_variables`` keep the variable ``name``."""
        return (self.variables is None or name in self.variables) and (
            name not in self.drop_variables
        )


@dataclass(frozen=True)
class _Opened:
    """One dataset of a file before selection: the whole file, or one GRIB hypercube.

    Attributes
    ----------
    name
        The hypercube's name (empty for other formats).
    dataset
        The virtual dataset.
    format
        The format native reads use (``grib:<cube index>`` for GRIB).
    native
        Schemas of the variables not in ``dataset`` because they must be read natively
        (GRIB fallback), with ``fallback`` giving the reasons.
    refused
        Variables no route reads correctly, with the reasons.
    """

    name: str
    dataset: xr.Dataset
    format: str
    native: Mapping[str, VariableSchema] = field(default_factory=dict)
    fallback: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def elsewhere(self) -> set[str]:
        """Variables of the file that are not in ``dataset``."""
        return set(self.native) | set(self.refused)


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
    registry = registry_for(url, o.storage, root=fmt == "zarr")
    opened: list[_Opened]
    try:
        with warnings.catch_warnings():
            # netCDF char arrays map to Zarr dtypes without a v3 spec yet: zarr warns per
            # variable per file, which buries real messages. The data round-trips exactly.
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            if fmt == "grib":
                opened = _open_grib(source, o)
            else:
                ds = _open_virtual(url, fmt, registry, o.order_by, o.group)
                opened = [_Opened("", ds, fmt)]
    except (KeyboardInterrupt, SystemExit):
        raise
    except IcepipeError:
        raise
    except BaseException as exc:  # parsers written in Rust raise PanicException (BaseException)
        if scheme_of(url) != "file" and _is_access_error(exc):
            raise access_error(exc, url) from exc
        plain = _open_plain(url, fmt, o) if o.mode == "native" else None
        if plain is not None:
            return _finish(source, _Opened("", plain, fmt), o)
        if fmt == "zarr" and "without dimension names" in str(exc):
            raise SourceError(
                f"{url}: has arrays without dimension names (Zarr v2 '_ARRAY_DIMENSIONS' or "
                "v3 'dimension_names'), so they cannot become xarray variables; write the store "
                "with xarray, or add the dimension names to its metadata",
                url=url,
            ) from exc
        raise SourceError(
            f"{url}: cannot be read as {fmt} ({type(exc).__name__}: {short_message(exc)}); "
            "the file may be truncated or corrupt: replace it, or remove it from source.urls"
            + ("" if o.format == "auto" else f"; if it is not {fmt}, set source.format: auto")
            + (
                "; if xarray opens it, it holds something virtual references cannot express: "
                "use mode: native"
                if o.mode == "virtual" and fmt in ("netcdf3", "netcdf4")
                else ""
            ),
            url=url,
        ) from exc
    if o.grib_cubes is not None:
        return ScannedCubes(source=source, cubes=_finish_cubes(source, opened, o))
    (only,) = opened  # one dataset unless grib_cubes
    return _finish(source, only, o)


def _finish_cubes(
    source: SourceFile, cubes: list[_Opened], o: ScanOptions
) -> dict[str, ScannedFile]:
    """:func:`_finish` for each hypercube of a file, ``variables``/``drop_variables`` applying
    to the file as a whole: a name must be in one of its cubes, and a cube holding none of the
    ``variables`` is left out."""
    url = source.url

    def names(c: _Opened) -> set[str]:
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
        out[cube.name] = _finish(source, cube, options)
    if not out:
        raise SourceError(
            f"{url}: source.variables / source.drop_variables leave no variable of any of its "
            "GRIB hypercubes; fix them, or remove the file",
            url=url,
        )
    return out


def _finish(source: SourceFile, opened: _Opened, o: ScanOptions) -> ScannedFile:
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
    # netCDF4 variables without values are not in the dataset: VirtualiZarr leaves them out.
    vanished = (
        set(_empty_datasets(url, o.storage)) - {str(v) for v in ds.variables}
        if opened.format == "netcdf4"
        else set()
    )
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
    return ScannedFile(source=source, schema=schema, dataset=ds, fallback=fallback)


def _empty_datasets(url: str, storage: StorageOptions | None) -> list[str]:
    """The netCDF4 variables of ``url`` with no values (a dimension of length 0): VirtualiZarr
    leaves them out of the virtual dataset without a word, with the dimension if no other
    variable uses it."""
    import h5py

    from icepipe.sources.stores import RemoteFile

    source: Any = url.removeprefix("file://") if scheme_of(url) == "file" else None
    out = []
    try:
        with h5py.File(source or RemoteFile(url, storage), "r") as f:
            for name, node in f.items():
                if not isinstance(node, h5py.Dataset) or node.size:
                    continue
                label = node.attrs.get("NAME", b"")
                if isinstance(label, bytes) and label.startswith(b"This is a netCDF dimension"):
                    continue  # a dimension without a variable, not a variable
                out.append(str(name))
    except Exception:  # the parser read it; only a better message is at stake
        return []
    return out


def scan_files(
    sources: list[SourceFile], options: ScanOptions
) -> list[ScannedFile | ScannedCubes | SourceError]:
    """:func:`scan_file` for a batch of files in one task: per file, the result or its error.

    One task per batch instead of per file keeps scheduler round trips and result transfers
    few when there are thousands of small files.
    """
    out: list[ScannedFile | ScannedCubes | SourceError] = []
    for source in sources:
        try:
            out.append(scan_file(source, options))
        except SourceError as exc:
            out.append(exc)
    return out


def _is_access_error(exc: BaseException) -> bool:
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    seen: BaseException | None = exc
    while seen is not None:  # parsers wrap the store's error
        if isinstance(seen, PermissionDeniedError | UnauthenticatedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _open_grib(source: SourceFile, o: ScanOptions) -> list[_Opened]:
    """The selected hypercubes of a GRIB file.

    A variable the codec cannot decode correctly is left out of the virtual dataset; in
    virtual mode it is read natively (through cfgrib) and written as ordinary chunks, with
    the same chunk grid.
    """
    from icepipe.sources.grib import encode_times, scan_grib

    url = source.url
    if o.mode == "native" and scheme_of(url) != "file":
        raise SourceError(
            f"{url}: GRIB on object storage can be ingested virtually only (cfgrib reads local "
            "files, which Dask workers on other machines would not see); set mode: virtual, "
            "or copy the files to a file system every worker mounts",
            url=url,
        )
    # Length-1 time/step/level dimensions stay, so that files concatenate along them.
    cubes = scan_grib(url, size=source.size, squeeze=False, storage=o.storage)
    names = [c.name for c in cubes]
    if o.grib_cubes is not None:
        chosen = [c for c in cubes if not o.grib_cubes or c.name in o.grib_cubes]
        if not chosen:
            raise SourceError(
                f"{url}: holds none of the GRIB hypercubes {', '.join(o.grib_cubes)} named in "
                f"source.grib_cubes; it holds {', '.join(names)}. Fix source.grib_cubes, or "
                "remove the file",
                url=url,
            )
    elif o.grib_cube is not None:
        chosen = [c for c in cubes if c.name == o.grib_cube]
        if not chosen:
            raise SourceError(
                f"{url}: has no GRIB hypercube {o.grib_cube!r}; it holds {', '.join(names)}. "
                "Fix source.grib_cube",
                url=url,
            )
    elif len(cubes) == 1:
        chosen = cubes
    else:
        raise SourceError(
            f"{url}: holds {len(cubes)} GRIB hypercubes that cannot be combined into one "
            f"dataset ({', '.join(names)}); set source.grib_cubes: all (one group per hypercube, "
            "under target.group), or source.grib_cube to one of them",
            url=url,
        )
    return [
        _Opened(
            name=cube.name,
            dataset=encode_times(cube.dataset),
            format=f"grib:{cube.index}",
            native={
                n: VariableSchema(
                    dims=v.dims,
                    shape=v.shape,
                    dtype="float32",
                    chunks=v.chunks,
                    attrs_units=v.units,
                )
                for n, v in cube.variables.items()
                if not v.decodable and not v.refused
            },
            fallback=cube.fallback,
            refused=cube.refused,
        )
        for cube in chosen
    ]


def _open_plain(url: str, fmt: str, o: ScanOptions) -> xr.Dataset | None:
    """The file opened by xarray instead of VirtualiZarr (native ingests only need its
    schema): for files the parsers cannot describe, e.g. netCDF3 char arrays with a
    ``_FillValue``. ``None`` when xarray cannot open it either."""
    if fmt not in ("netcdf3", "netcdf4"):
        return None
    from icepipe.sources.lazy import open_raw

    try:
        ds = open_raw(url, fmt, storage=o.storage, group=o.group)
    except IcepipeError:
        return None
    for name, var in ds.variables.items():
        if name in ds.indexes or var.ndim == 0 or name == o.order_by:
            var.load()  # what schema_of reads; the data stays in the file
    return ds


def _open_virtual(
    url: str, fmt: str, registry: Any, order_by: str | None, group: str | None = None
) -> xr.Dataset:
    if group is not None and fmt not in ("netcdf4", "zarr"):
        raise SourceError(
            f"{url}: is {fmt}, which has no groups, but source.group is {group!r}; remove "
            "source.group, or remove the file",
            url=url,
        )
    if group is not None:
        _check_group(url, fmt, group, registry)
    # The references carry reference_url(url): the file's own name, whatever its characters.
    manifest_store = _parser(fmt, group)(url=reference_url(url), registry=registry)
    ds = manifest_store.to_virtual_dataset(decode_times=False)
    # Read too: the ordering variable, the bounds of loaded time coordinates (a few
    # numbers per step), so that a time encoding drifting between files is converted in them
    # as in their coordinate instead of refusing the file.
    # Scalars too (a height coordinate): one number, and VirtualiZarr cannot append next to
    # a stored scalar reference (it compares dimension names () with None).
    extra = [order_by] if order_by is not None and order_by in ds.variables else []
    extra += [str(k) for k, v in ds.variables.items() if v.ndim == 0]
    for var in list(ds.variables.values()):
        if not _is_virtual(var) and is_time_units(var.attrs.get("units")):
            extra += [str(var.attrs[k]) for k in ("bounds", "climatology") if k in var.attrs]
    extra = [n for n in dict.fromkeys(extra) if n in ds.variables and _is_virtual(ds[n].variable)]
    if extra:
        # Keep the default (index) coordinates loaded.
        loaded = [str(k) for k, v in ds.variables.items() if not _is_virtual(v)]
        ds = manifest_store.to_virtual_dataset(
            loadable_variables=[*loaded, *extra], decode_times=False
        )
    if fmt == "netcdf4" and scheme_of(url) == "file":
        ds = _with_unwritten_variables(ds, url, group)
    ds.encoding["source"] = url
    # Loaded coordinates are lazily indexed: read them now, on the worker, so that the
    # coordinator never touches the file again.
    for var in ds.variables.values():
        if not _is_virtual(var):
            var.load()
            if "_FillValue" not in var.encoding and "_FillValue" not in var.attrs:
                # Stored as the source has it: xarray would give floats a NaN fill value.
                var.encoding["_FillValue"] = None
    out: xr.Dataset = ds
    return out


def _check_group(url: str, fmt: str, group: str, registry: Any) -> None:
    """Raise naming the groups the file has when it lacks ``group`` (the parsers' own error
    is a bare KeyError)."""
    if fmt != "netcdf4":
        return
    import h5py
    from obspec_utils.readers import BlockStoreReader

    store, path = registry.resolve(reference_url(url))
    with h5py.File(BlockStoreReader(store, path), "r") as f:
        if isinstance(f.get(group), h5py.Group):
            return
        found: list[str] = []
        f.visit(lambda name: found.append(name) if isinstance(f[name], h5py.Group) else None)
    raise SourceError(
        f"{url}: has no group {group!r} (source.group); its groups: "
        f"{', '.join(found) or '(none: everything is in the root group)'}. Fix source.group",
        url=url,
    )


def _with_unwritten_variables(ds: xr.Dataset, url: str, group: str | None) -> xr.Dataset:
    """Add the variables VirtualiZarr's HDF parser leaves out, loaded.

    The parser takes a dimension-scale dataset that holds no data for a dimension without a
    variable, and drops it: but a coordinate variable that was defined and never written (all
    fill values, storage not allocated) is a variable too (gridMET and Daymet samples have
    them). xarray reads them, so they are read here and stored like loaded coordinates.
    """
    import h5py

    path = url.removeprefix("file://")
    with h5py.File(path, "r") as f:
        root = f[group] if group else f
        names = [
            name
            for name, obj in root.items()
            if isinstance(obj, h5py.Dataset)
            and name not in ds.variables
            and not str(obj.attrs.get("NAME", b"")).count("not a netCDF variable")
        ]
    if not names:
        return ds
    with xr.open_dataset(path, engine="h5netcdf", group=group, decode_times=False) as full:
        missing = full[names].load()
    out: xr.Dataset = ds.assign_coords(
        {n: missing[n].variable for n in names if n in missing.coords}
    ).assign({n: missing[n].variable for n in names if n not in missing.coords})
    return out


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
        if _is_virtual(var):
            for _, ref in var.data.manifest.iter_refs():
                if ref["path"] == ref_url:
                    end = max(end, int(ref["offset"]) + int(ref["length"]))
    if end > source.size:
        raise SourceError(
            f"{source.url}: is truncated: its header places data up to byte {end} but the file "
            f"has {source.size} bytes; replace it, or remove it from source.urls",
            url=source.url,
        )


def _is_virtual(var: xr.Variable) -> bool:
    from virtualizarr.manifests import ManifestArray

    return isinstance(var.data, ManifestArray)


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
        chunks = tuple(int(c) for c in var.data.metadata.chunks) if _is_virtual(var) else None
        variables[str(name)] = VariableSchema(
            dims=tuple(str(d) for d in var.dims),
            shape=tuple(int(s) for s in var.shape),
            dtype=str(var.dtype),
            chunks=chunks,
            attrs_units=units,
            attrs_calendar=calendar,
            packing=packing_of(var.attrs, str(var.dtype)),
        )
    concat_values: tuple[float, ...] | None = None
    units = calendar = None
    order_var = order_by or concat_dim
    if order_var in ds.variables and ds.variables[order_var].dims == (concat_dim,):
        coord = ds.variables[order_var]
        units = _str_attr(coord.attrs, "units")
        calendar = _str_attr(coord.attrs, "calendar")
        values = np.asarray(coord.values)
        if values.dtype.kind in "iuf":
            concat_values = tuple(float(v) for v in values)
        elif values.dtype.kind in "mM":
            concat_values = tuple(float(v) for v in values.astype("int64"))
    return FileSchema(
        url=url,
        format=fmt,
        dims={str(k): int(v) for k, v in ds.sizes.items()},
        variables=variables,
        concat_values=concat_values,
        concat_units=units,
        concat_calendar=calendar,
    )


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
