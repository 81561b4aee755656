"""Kerchunk reference sets (JSON, gzip JSON, Parquet directories) as sources: each set is one
source "file" for the ledger; its references, which point into other files, are ingested as
they are (virtual) or read through them (native), via VirtualiZarr's kerchunk translator.

Reading the set itself (templates, ``gen`` keys, relative URLs, Parquet records, checking the
data files) is :mod:`icepipe.sources.formats.kerchunk_refs`. ``format: auto`` recognises a JSON
set (gzip-compressed or not) by its first bytes, and a Parquet set by its ``.zmetadata``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import xarray as xr
from obspec_utils.registry import ObjectStoreRegistry
from zarr.storage import WrapperStore

from icepipe.errors import SourceError, short_message
from icepipe.model import SourceFile
from icepipe.sources.formats.base import Opened, ScanOptions
from icepipe.sources.formats.common import open_virtual, open_xarray
from icepipe.sources.formats.kerchunk_refs import (
    ReferenceSet,
    looks_like_reference_set,
    read_reference_set,
)
from icepipe.sources.stores import registry_for
from icepipe.storage import StorageOptions, split_url

__all__ = ["KerchunkReader", "manifest_group", "manifest_store"]


class KerchunkReader:
    """Kerchunk reference sets; ``source.group`` picks a group of the set."""

    name: ClassVar[str] = "kerchunk"
    has_groups: ClassVar[bool] = True
    plain_fallback: ClassVar[bool] = False

    def detect(self, head: bytes, url: str) -> bool:
        # Parquet sets are folders: detect_format asks is_kerchunk_parquet.
        return looks_like_reference_set(head)

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        from icepipe.sources.formats.zarr import _slash_chunk_keys

        store = manifest_store(source.url, options.storage, options.group)
        ds = open_virtual(source.url, lambda **_: store, None, options.order_by)
        return [Opened("", _slash_chunk_keys(ds), self.name)]

    def open_native(
        self, url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
    ) -> xr.Dataset:
        store = _KerchunkStore(url, options.storage, options.group)
        kwargs: dict[str, Any] = {"consolidated": False, "zarr_format": 3}
        if options.group:
            kwargs["group"] = None  # the store is rooted at the group already
        return open_xarray(url, "kerchunk", store, "zarr", chunks=chunks, **kwargs)

    def open_plain(self, url: str, options: ScanOptions) -> xr.Dataset | None:
        return None

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        return []


def manifest_store(url: str, storage: StorageOptions | None, group: str | None) -> Any:
    """VirtualiZarr's ``ManifestStore`` of the reference set at ``url`` (its ``group``), reading
    the data files it points to through obstore.

    Raises
    ------
    SourceError
        The set cannot be read, or is not a valid kerchunk reference set.
    """
    from virtualizarr.manifests import ManifestStore

    refset = read_reference_set(url, storage, group)
    try:
        # Every URL is absolute already (read_reference_set): no fs_root.
        manifests = manifest_group(_fill_values_as_attributes(refset.refs), group)
    except Exception as exc:
        raise SourceError(
            f"{url}: is not a kerchunk reference set icepipe can read ({type(exc).__name__}: "
            f"{short_message(exc)})"
            + ("; check source.group" if group else "")
            + "; regenerate it, or remove it from source.urls",
            url=url,
        ) from exc
    return ManifestStore(group=manifests, registry=_registry(refset, storage))


def manifest_group(refs: dict[str, Any], group: str | None) -> Any:
    """VirtualiZarr's ``ManifestGroup`` of ``refs`` (a kerchunk ``refs`` mapping).

    VirtualiZarr's translator looks at every reference of the set once per variable (seconds
    for a netCDF3 file of 60 000 record chunks): the root group of Zarr v2 references is
    split by variable first, and each variable translated from its own references. Groups and
    Zarr v3 references go through the translator as they are.
    """
    from virtualizarr.manifests import ManifestGroup
    from virtualizarr.parsers.kerchunk.translator import (
        fully_decode_arr_refs,
        manifestarray_from_kerchunk_refs,
        manifestgroup_from_kerchunk_refs,
    )

    if group or any(k == "zarr.json" or k.endswith("/zarr.json") for k in refs):
        whole: Any = {"version": 1, "refs": refs}
        return manifestgroup_from_kerchunk_refs(whole, group)
    by_variable: dict[str, dict[str, Any]] = {}
    for key, value in refs.items():
        name, slash, rest = key.partition("/")
        if slash and "/" not in rest:  # "<name>/.zarray", "<name>/0.0": not in a subgroup
            by_variable.setdefault(name, {})[key] = value
    arrays = {
        name: manifestarray_from_kerchunk_refs({"version": 1, "refs": mine}, name)  # type: ignore[arg-type]
        for name, mine in by_variable.items()
        if f"{name}/.zarray" in mine
    }
    root = {k: v for k, v in refs.items() if k in (".zattrs", ".zgroup")}
    attributes = fully_decode_arr_refs(root).get(".zattrs", {})
    return ManifestGroup(arrays=arrays, attributes=attributes)


def _fill_values_as_attributes(refs: dict[str, Any]) -> dict[str, Any]:
    """``refs`` with each Zarr v2 array's ``fill_value`` also as its ``_FillValue`` attribute,
    and a ``null`` fill value as the 0 Zarr v2 readers use.

    xarray reads a Zarr v2 array's ``fill_value`` as ``_FillValue`` (fsspec readers of the set
    see those values masked), but VirtualiZarr turns the set into Zarr v3 arrays, whose
    ``fill_value`` xarray ignores: without the attribute, the stored data would show the fill
    values where the set's readers see NaN.
    """
    import numpy as np
    import ujson
    from xarray.backends.zarr import FillValueCoder

    out = dict(refs)
    for key, value in refs.items():
        if not key.endswith(".zarray") or not isinstance(value, str | bytes):
            continue
        zarray = ujson.loads(value)
        fill, dtype = zarray.get("fill_value"), zarray.get("dtype")
        if not isinstance(dtype, str) or np.dtype(dtype).kind not in "biuf":
            continue
        if fill is None:
            # Zarr v2 reads the chunks a set lacks as 0 then (VirtualiZarr would make NaN).
            out[key] = ujson.dumps({**zarray, "fill_value": 0})
            continue
        attrs_key = key.removesuffix(".zarray") + ".zattrs"
        attrs = ujson.loads(refs.get(attrs_key, "{}"))
        if "_FillValue" not in attrs:
            attrs["_FillValue"] = FillValueCoder.encode(
                float(fill) if isinstance(fill, str) else fill, np.dtype(dtype)
            )
            out[attrs_key] = ujson.dumps(attrs)
    return out


def _registry(refset: ReferenceSet, storage: StorageOptions | None) -> Any:
    return _TargetsRegistry(refset.targets, storage)


class _TargetsRegistry(ObjectStoreRegistry):  # type: ignore[type-arg]
    """Resolves the reference URLs of a set, which may point into several buckets and local
    folders: one icepipe registry (:func:`~icepipe.sources.stores.registry_for`) per root."""

    def __init__(self, targets: Iterable[str], storage: StorageOptions | None) -> None:
        self._roots: dict[str, Any] = {}
        for target in targets:
            root = _root(target)
            if root not in self._roots:
                self._roots[root] = registry_for(target, storage)
        super().__init__({root: reg for root, reg in self._roots.items()})

    def resolve(self, url: str) -> tuple[Any, str]:
        registry = self._roots.get(_root(url))
        if registry is None:
            raise ValueError(f"{url!r} is outside the files this reference set points to")
        store, path = registry.resolve(url)
        return store, path


def _root(url: str) -> str:
    scheme, bucket, _ = split_url(url)
    return "file:///" if scheme == "file" else f"{scheme}://{bucket}/"


@functools.lru_cache(maxsize=32)
def _cached_store(url: str, storage: StorageOptions | None, group: str | None) -> Any:
    # One read of the set per process, however many tasks unpickle the view.
    return manifest_store(url, storage, group)


class _KerchunkStore(WrapperStore):  # type: ignore[type-arg]
    """A read-only Zarr view of a reference set (its values read through the references) that
    pickles as ``(url, storage, group)``: task graphs carry no references nor credentials."""

    def __init__(self, url: str, storage: StorageOptions | None, group: str | None) -> None:
        super().__init__(_cached_store(url, storage, group))
        self._icepipe_location = (url, storage, group)

    def __reduce__(self) -> Any:
        return (_KerchunkStore, self._icepipe_location)
