"""Zarr stores (v2 and v3; a folder, or a prefix on object storage): virtual references
through VirtualiZarr's Zarr parser, lazy opens through xarray's Zarr engine.

A store is not recognised by magic bytes but by its metadata objects
(:func:`icepipe.sources.formats.detect_format`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import xarray as xr

from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources.formats.base import Opened, ScanOptions
from icepipe.sources.formats.common import open_virtual, open_xarray
from icepipe.sources.stores import registry_for, zarr_store
from icepipe.storage import scheme_of

__all__ = ["ZarrReader"]


class ZarrReader:
    """Zarr stores, groups included."""

    name: ClassVar[str] = "zarr"
    has_groups: ClassVar[bool] = True
    plain_fallback: ClassVar[bool] = False

    def detect(self, head: bytes, url: str) -> bool:
        return False  # a folder (or prefix), not a file: see detect_format

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        from virtualizarr.parsers import ZarrParser

        url = source.url
        # Rooted at the store: its chunk references are url + key.
        registry = registry_for(url, options.storage, root=True)
        try:
            ds = open_virtual(url, ZarrParser(group=options.group), registry, options.order_by)
        except Exception as exc:
            if "without dimension names" not in str(exc):
                raise
            raise SourceError(
                f"{url}: has arrays without dimension names (Zarr v2 '_ARRAY_DIMENSIONS' or "
                "v3 'dimension_names'), so they cannot become xarray variables; write the store "
                "with xarray, or add the dimension names to its metadata",
                url=url,
            ) from exc
        return [Opened("", _slash_chunk_keys(ds), self.name)]

    def open_native(
        self, url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
    ) -> xr.Dataset:
        kwargs: dict[str, Any] = {"group": options.group} if options.group else {}
        remote = scheme_of(url) != "file"
        # On object storage: a store that pickles as (url, storage), without credentials.
        source: Any = zarr_store(url, options.storage) if remote else url.removeprefix("file://")
        return open_xarray(url, "zarr", source, "zarr", chunks=chunks, **kwargs)

    def open_plain(self, url: str, options: ScanOptions) -> xr.Dataset | None:
        return None

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        return []


def _slash_chunk_keys(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its references' metadata on Zarr v3's default ``/`` chunk keys.

    VirtualiZarr's Zarr parser keeps the source store's chunk key encoding (``.`` for v2
    stores and ``v2``-style v3 stores) in the references' metadata, but the arrays it creates
    in Icechunk use the default ``/`` encoding (Icechunk addresses chunks by index, so the
    encoding decides nothing about the data). A later append then compares the two and refuses
    every array without the append dimension ("already exists with different
    chunk_key_encoding"): normalised here so that the first ingest and appends agree.
    """
    from virtualizarr.manifests import ManifestArray
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

    slash = DefaultChunkKeyEncoding(separator="/")
    for var in list(ds.variables.values()):
        data = var.data
        if not isinstance(data, ManifestArray) or data.metadata.chunk_key_encoding == slash:
            continue
        metadata = dataclasses.replace(data.metadata, chunk_key_encoding=slash)
        var.data = ManifestArray(metadata=metadata, chunkmanifest=data.manifest)
    return ds
