"""HOW to read a source: detect its format and turn it into virtual references.

:func:`scan_file` runs on Dask workers. It takes and returns only picklable values, and converts
every failure of the underlying parsers into a :class:`SourceError` that names the file and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import obstore
import xarray as xr
from obstore.store import LocalStore

from icepipe.errors import ConfigError, SourceError
from icepipe.model import FileSchema, SourceFile, VariableSchema

__all__ = ["ScannedFile", "detect_format", "scan_file", "schema_of"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# An HDF5 superblock may follow a user block of 512, 1024, 2048, ... bytes.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class ScannedFile:
    """A source file turned into a virtual dataset, plus the schema that planning checks."""

    source: SourceFile
    schema: FileSchema
    dataset: xr.Dataset


def _store_and_path(url: str) -> tuple[LocalStore, str]:
    if not url.startswith("file://"):
        raise ConfigError(f"only file:// URLs are supported for now; got {url!r}")
    root, name = url[len("file://") :].rsplit("/", 1)
    return LocalStore(root or "/"), name


def detect_format(url: str) -> str:
    """Detect a file's format from its magic bytes: ``netcdf3`` or ``netcdf4`` (HDF5).

    File extensions are not trusted (HDF5 files named ``.cdf`` exist in real archives).

    Raises
    ------
    SourceError
        The file cannot be read or is not a format icepipe knows.
    """
    store, path = _store_and_path(url)
    try:
        head = bytes(obstore.get_range(store, path, start=0, length=8))
    except FileNotFoundError as exc:
        raise SourceError(f"{url}: file not found (deleted after listing?)", url=url) from exc
    except Exception as exc:
        raise SourceError(f"{url}: cannot be read: {exc}", url=url) from exc
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05"):
        return "netcdf3"
    if head == _HDF5_MAGIC:
        return "netcdf4"
    size = int(obstore.head(store, path)["size"])
    for offset in _HDF5_OFFSETS[1:]:
        if offset + 8 > size:
            break
        if bytes(obstore.get_range(store, path, start=offset, length=8)) == _HDF5_MAGIC:
            return "netcdf4"
    if head[:4] == b"GRIB":
        raise SourceError(f"{url}: is a GRIB file; GRIB sources are not supported yet", url=url)
    raise SourceError(
        f"{url}: not a netCDF3 or netCDF4/HDF5 file (first bytes {head!r}); "
        "remove it from source.urls or fix the glob",
        url=url,
    )


def _parser(fmt: str) -> Any:
    from virtualizarr.parsers import HDFParser, NetCDF3Parser

    if fmt == "netcdf3":
        return NetCDF3Parser()
    if fmt == "netcdf4":
        return HDFParser()
    raise ConfigError(f"unsupported format {fmt!r}", field="source.format")


def scan_file(source: SourceFile, *, format: str, concat_dim: str) -> ScannedFile:
    """Open one file as a virtual dataset (data variables as references, coordinates loaded).

    Times are kept undecoded (raw numbers plus ``units``/``calendar`` attributes): that
    round-trips every CF calendar and unit exactly, and readers decode them as usual.

    Raises
    ------
    SourceError
        The file is missing, truncated, corrupt, of another format, or lacks ``concat_dim``.
    """
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr import open_virtual_dataset

    url = source.url
    fmt = detect_format(url) if format == "auto" else format
    registry = ObjectStoreRegistry({"file:///": LocalStore("/")})
    try:
        ds = open_virtual_dataset(url, registry=registry, parser=_parser(fmt), decode_times=False)
        # Loaded coordinates are lazily indexed: read them now, on the worker, so that the
        # coordinator never touches the file again.
        for var in ds.variables.values():
            if not _is_virtual(var):
                var.load()
    except (KeyboardInterrupt, SystemExit):
        raise
    except SourceError:
        raise
    except BaseException as exc:  # parsers written in Rust raise PanicException (BaseException)
        raise SourceError(
            f"{url}: cannot be read as {fmt} ({type(exc).__name__}: {exc}); the file may be "
            "truncated or corrupt: replace it, or remove it from source.urls"
            + ("" if format == "auto" else f"; if it is not {fmt}, set source.format: auto"),
            url=url,
        ) from exc
    ds = _sanitize(ds)
    if concat_dim not in ds.dims:
        raise SourceError(
            f"{url}: has no dimension {concat_dim!r} (dimensions: {', '.join(map(str, ds.dims))}); "
            "set source.concat_dim to one of these, or remove the file",
            url=url,
        )
    return ScannedFile(source=source, schema=schema_of(ds, url, fmt, concat_dim), dataset=ds)


def _is_virtual(var: xr.Variable) -> bool:
    from virtualizarr.manifests import ManifestArray

    return isinstance(var.data, ManifestArray)


def schema_of(ds: xr.Dataset, url: str, fmt: str, concat_dim: str) -> FileSchema:
    """Summarise a (virtual) dataset into the picklable schema that planning compares."""
    variables: dict[str, VariableSchema] = {}
    for name, var in ds.variables.items():
        chunks = tuple(int(c) for c in var.data.metadata.chunks) if _is_virtual(var) else None
        variables[str(name)] = VariableSchema(
            dims=tuple(str(d) for d in var.dims),
            shape=tuple(int(s) for s in var.shape),
            dtype=str(var.dtype),
            chunks=chunks,
            attrs_units=_str_attr(var.attrs, "units"),
            attrs_calendar=_str_attr(var.attrs, "calendar"),
        )
    concat_values: tuple[float, ...] | None = None
    units = calendar = None
    if concat_dim in ds.variables and ds[concat_dim].dims == (concat_dim,):
        coord = ds.variables[concat_dim]
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


def _sanitize(ds: xr.Dataset) -> xr.Dataset:
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
