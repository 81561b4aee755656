"""Zarr encodings for native ingests: chunk and shard shapes, compression."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
import zarr.codecs

from icepipe.errors import SourceError

__all__ = ["compressor", "native_encoding"]


def compressor(name: str) -> Any:
    """The Zarr v3 codec for a pipeline's ``compression`` setting (``None`` for ``none``)."""
    if name == "zstd":
        return zarr.codecs.ZstdCodec(level=3)
    if name == "blosc":
        return zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
    if name == "gzip":
        return zarr.codecs.GzipCodec(level=5)
    if name == "none":
        return None
    raise ValueError(f"unknown compression {name!r}")


def native_encoding(
    ds: xr.Dataset,
    chunk_len: Mapping[str, int],
    *,
    shard_len: Mapping[str, int] | None,
    compression: str,
) -> dict[str, dict[str, Any]]:
    """Encoding for every variable of ``ds`` as first written: chunks, shards, compressors.

    Source encodings (netCDF chunk sizes, zlib flags, ...) are dropped; the CF encoding is kept
    as the source has it, so that the stored data decode as the source files do: dtype,
    ``_FillValue`` and ``missing_value`` (each only where the source has it: no fill value is
    added to variables without one), ``scale_factor``/``add_offset`` and time
    ``units``/``calendar``. One normalisation: a ``missing_value`` that differs from the
    ``_FillValue`` is dropped, the values it masked being stored as the ``_FillValue`` (xarray
    encodes only one of them); they decode the same. A NaN ``missing_value`` is dropped (it
    masks nothing, and Zarr metadata is strict JSON). netCDF char arrays are stored as
    fixed-length strings of their length, without ``_FillValue``.

    Raises
    ------
    SourceError
        A byte-string variable that is not a joined char array (``|S1`` values along a
        dimension, as netCDF-3 files written by scipy have) carries a ``_FillValue``: Zarr
        stores it, but xarray cannot read such a fill value back (``Failed to decode
        fill_value``), so the repository would be unreadable. Refused before anything is
        written, naming the variable and the file.
    """
    codec = compressor(compression)
    keep = (
        "dtype",
        "_FillValue",
        "missing_value",
        "scale_factor",
        "add_offset",
        "units",
        "calendar",
    )
    out: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        enc: dict[str, Any] = {k: v for k, v in var.encoding.items() if k in keep}
        if "char_dim_name" in var.encoding and var.encoding.get("original_shape"):
            # A netCDF char array, joined into strings by xarray (object dtype when it had a
            # _FillValue): stored as fixed-length strings of the file's length, so that later
            # files append to the same dtype. Zarr has no string fill values xarray reads back
            # (nor a bytes missing_value: JSON attributes).
            enc["dtype"] = np.dtype(f"S{var.encoding['original_shape'][-1]}")
            enc["_FillValue"] = None
            enc.pop("missing_value", None)
            var.attrs.pop("_FillValue", None)
            var.attrs.pop("missing_value", None)
        elif np.dtype(enc.get("dtype", var.dtype)).kind == "S" and (
            enc.get("_FillValue") is not None or var.attrs.get("_FillValue") is not None
        ):
            url = var.encoding.get("source")
            where = f"{url}: " if url else ""
            raise SourceError(
                f"{where}variable {name!r} holds single characters ({enc.get('dtype')}) with a "
                f"_FillValue ({enc.get('_FillValue', var.attrs.get('_FillValue'))!r}), which "
                "Zarr stores but xarray cannot read back: the repository would be unreadable. "
                f"Leave the variable out (source.drop_variables: [{name}]), or rewrite the file "
                "without that _FillValue",
                url=str(url) if url else None,
            )
        elif "_FillValue" not in enc and "_FillValue" not in var.attrs:
            enc["_FillValue"] = None  # xarray would add NaN to floats the source has unmasked
        elif "missing_value" in enc and not _same(enc["missing_value"], enc.get("_FillValue")):
            # CF allows both with different values, xarray encodes (and appends) only one:
            # values masked by either are stored as the _FillValue, missing_value is dropped.
            del enc["missing_value"]
        if _is_nan(enc.get("missing_value")):
            # A NaN missing_value masks nothing (NaN decodes to NaN) and is no JSON: Icechunk
            # refuses the array's metadata ("bad metadata: expected value").
            del enc["missing_value"]
            var.attrs.pop("missing_value", None)
        if var.ndim:
            enc["chunks"] = tuple(
                chunk_len.get(str(d), n) for d, n in zip(var.dims, var.shape, strict=True)
            )
            if shard_len:
                enc["shards"] = tuple(
                    shard_len.get(str(d), c) for d, c in zip(var.dims, enc["chunks"], strict=True)
                )
        enc["compressors"] = [codec] if codec is not None and var.dtype.kind not in "OSU" else None
        out[str(name)] = enc
    return out


def _is_nan(value: Any) -> bool:
    if value is None:
        return False
    try:
        number = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(number.size == 1 and np.isnan(number).all())


def _same(a: Any, b: Any) -> bool:
    """Whether two fill values are the same (NaN equals NaN)."""
    return (
        bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
        if b is not None
        else False
    )
