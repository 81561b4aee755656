"""Source formats: one module per format, each holding one :class:`Reader`, and the registry.

A reader recognises its files (:meth:`Reader.detect`), scans them into virtual references
(:meth:`Reader.scan_virtual`), opens them lazily with xarray for native ingests and validation
(:meth:`Reader.open_native`), opens plainly a file its parser refuses, for native scans
(:meth:`Reader.open_plain`), and names the variables its parser would leave out
(:meth:`Reader.refused_variables`). The built-in readers register through :func:`register`, as
a new format would: adding a format is adding one module and one ``register`` call (and its
name to ``spec.FORMATS``).
"""

from __future__ import annotations

import os

import obstore

from icepipe.errors import ConfigError, SourceError, short_message
from icepipe.sources.formats.base import Opened, Reader, ScanOptions
from icepipe.sources.formats.geotiff import GeoTiffReader
from icepipe.sources.formats.grib import GribReader
from icepipe.sources.formats.kerchunk import KerchunkReader
from icepipe.sources.formats.netcdf3 import NetCDF3Reader
from icepipe.sources.formats.netcdf4 import NetCDF4Reader
from icepipe.sources.formats.zarr import ZarrReader
from icepipe.sources.listing import ZARR_METADATA
from icepipe.sources.stores import access_error, is_not_found, is_remote_zarr, store_and_path
from icepipe.storage import StorageOptions, scheme_of

__all__ = [
    "HEAD_BYTES",
    "READERS",
    "Opened",
    "Reader",
    "ScanOptions",
    "detect_format",
    "detect_head",
    "reader_for",
    "register",
]

#: How many leading bytes detection reads: enough for an HDF5 superblock after a user block
#: of up to 4096 bytes.
HEAD_BYTES = 4096 + 8

#: The readers by ``source.format`` name, in detection order.
READERS: dict[str, Reader] = {}


def register(reader: Reader) -> None:
    """Add ``reader`` to :data:`READERS` under ``reader.name`` (last in detection order)."""
    READERS[reader.name] = reader


for _reader in (NetCDF3Reader(), NetCDF4Reader(), GribReader(), ZarrReader()):
    register(_reader)
register(GeoTiffReader())
register(KerchunkReader())


def reader_for(fmt: str) -> Reader:
    """The reader of ``fmt``: a ``source.format`` name, or a format a scan recorded
    (``grib:<index>`` is GRIB).

    Raises
    ------
    ConfigError
        No reader has that name.
    """
    reader = READERS.get(fmt.split(":", 1)[0])
    if reader is None:
        raise ConfigError(f"unsupported format {fmt!r}", field="source.format")
    return reader


def detect_head(head: bytes, url: str) -> str | None:
    """The name of the first reader recognising ``head`` (a file's first bytes), or ``None``."""
    return next((r.name for r in READERS.values() if r.detect(head, url)), None)


def detect_format(url: str, storage: StorageOptions | None = None) -> str:
    """Detect a file's format from its magic bytes (a Zarr store, or a kerchunk Parquet set,
    from its metadata objects).

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
            return _store_format(url, storage)
        raise SourceError(f"{url}: is a folder but not a Zarr store", url=url)
    store, path = store_and_path(url, storage)
    try:
        size = int(obstore.head(store, path)["size"])
        # A range past the end of a file is an error in obstore: empty files need a guard.
        length = min(HEAD_BYTES, size)
        head = bytes(obstore.get_range(store, path, start=0, length=length)) if size else b""
    except Exception as exc:
        # An object store has no folders: a Zarr store is a prefix with metadata objects.
        if remote and is_not_found(exc) and is_remote_zarr(url, storage):
            return _store_format(url, storage)
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
    fmt = detect_head(head, url)
    if fmt is None:
        raise SourceError(
            f"{url}: not a netCDF3, netCDF4/HDF5 or GRIB file (first bytes {head[:8]!r}); "
            "remove it from source.urls or fix the glob",
            url=url,
        )
    return fmt


def _store_format(url: str, storage: StorageOptions | None) -> str:
    """A folder with Zarr metadata: a kerchunk Parquet reference set, or a Zarr store."""
    from icepipe.sources.formats.kerchunk_refs import is_kerchunk_parquet

    return "kerchunk" if is_kerchunk_parquet(url, storage) else "zarr"
