"""Zarr encodings for native ingests: chunk and shard shapes, compression."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr
import zarr.codecs

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

    Source encodings (netCDF chunk sizes, zlib flags, ...) are dropped; dtype, ``_FillValue``,
    ``scale_factor``/``add_offset`` and time ``units``/``calendar`` are kept so values round-trip.
    """
    codec = compressor(compression)
    keep = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")
    out: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        enc: dict[str, Any] = {k: v for k, v in var.encoding.items() if k in keep}
        shape = var.encoding.get("original_shape")
        if "char_dim_name" in var.encoding and shape:
            # A netCDF char array, decoded into strings: stored as fixed-width strings of the
            # file's string length (not the longest value's), so later files append to it.
            enc["dtype"] = f"S{shape[-1]}"
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
