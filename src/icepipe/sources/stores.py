"""Object stores for source files: local folders, S3 (and S3-compatible), HTTP(S), GCS, Azure.

Stores are built by the scheme serving the URL (:func:`icepipe.storage.scheme_for`), in the
process that reads (the client for listing, Dask workers for scanning and native reads), from a
URL and :class:`~icepipe.storage.StorageOptions`, with credentials
resolved from *that* process's environment. Nothing that holds a store is ever pickled:
:class:`RemoteFile` and :func:`zarr_store` pickle as ``(url, options)`` and reopen on arrival,
so task graphs never carry secrets.
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import obstore
from obspec_utils.registry import ObjectStoreRegistry
from obstore.store import LocalStore
from zarr.storage import ObjectStore, WrapperStore

from icepipe.errors import ConfigError, IcepipeError, SourceError, short_message
from icepipe.faults import storage_failure
from icepipe.storage import (
    S3Secrets,
    StorageOptions,
    is_local,
    reference_url,
    scheme_for,
    split_url,
)

if TYPE_CHECKING:
    from obstore import GetOptions

__all__ = [
    "RemoteFile",
    "access_error",
    "check_readable",
    "is_not_found",
    "is_remote_zarr",
    "netcdf3_store",
    "registry_for",
    "store_and_path",
    "store_for",
    "zarr_store",
]

# Reads of up to a block through RemoteFile come from blocks of this size, the last
# _CACHED_BLOCKS of them kept per process (64 MiB): every write task that reads a netCDF4 file on
# object storage opens it again (xarray's PickleableFileManager opens a file object when
# unpickled), and HDF5 reads its metadata in dozens of small reads, fetched once per process.
_BLOCK = 1 << 20
_CACHED_BLOCKS = 64
# Other reads (larger ones; objects without an ETag) go through a reader reading ahead this much.
_READ_BUFFER = 1 << 20


def store_for(root_url: str, storage: StorageOptions | None = None) -> Any:
    """An obstore store rooted at ``root_url`` (a folder, bucket prefix or HTTP base URL),
    built by the scheme serving it (:func:`icepipe.storage.scheme_for`).

    Raises
    ------
    ConfigError
        The scheme is not supported, ``http://`` without ``allow_http``, or credentials named
        in ``storage`` are missing from the environment.
    """
    options = storage or StorageOptions()
    scheme = scheme_for(root_url)
    secrets = scheme.credentials(options)
    return _cached_store(root_url.rstrip("/") if scheme.remote else root_url, options, secrets)


@functools.lru_cache(maxsize=64)
def _cached_store(root_url: str, options: StorageOptions, secrets: S3Secrets | None) -> Any:
    # Keyed on the resolved secrets too, so rotated credentials make a new store. The cache
    # lives in this process only and is never pickled.
    return scheme_for(root_url).obstore_store(root_url, options, secrets)


def store_and_path(url: str, storage: StorageOptions | None = None) -> tuple[Any, str]:
    """The store of ``url``'s folder and the object's name in it."""
    root, _, name = url.rstrip("/").rpartition("/")
    if is_local(url):
        root = root or "file:///"
    return store_for(root, storage), name


def registry_for(url: str, storage: StorageOptions | None = None, *, root: bool = False) -> Any:
    """An ``ObjectStoreRegistry`` resolving ``reference_url(url)`` for VirtualiZarr's parsers.

    The store is rooted at the bucket (or host, or ``/``), so the references the parsers write
    carry the full URL of each file, as :func:`~icepipe.storage.reference_url` writes it
    (``%``, ``#``, ``?`` ... escaped), and every URL resolves back to the literal object name.
    ``root=True`` roots the store at ``url`` itself (a Zarr store, whose chunk references are
    ``url`` + key).
    """
    scheme, bucket, _ = split_url(url)
    if scheme in ("http", "https"):
        base = f"{scheme}://{bucket}"
        return ObjectStoreRegistry({base + "/": store_for(base, storage)})
    if root:
        base = url.rstrip("/")
        return _LiteralRegistry(reference_url(base), store_for(base, storage))
    if is_local(url):
        return _LiteralRegistry("file:///", LocalStore("/"))
    base = f"{scheme}://{bucket}"
    return _LiteralRegistry(base + "/", store_for(base, storage))


class _LiteralRegistry(ObjectStoreRegistry):  # type: ignore[type-arg]
    """Resolves the reference URLs under one root to the objects they name, escapes decoded.

    VirtualiZarr's own registry uses URL paths as object names (``a%2520b.nc`` stays so) and
    cuts them at ``#`` and ``?``, while Icechunk decodes them when it reads the references.
    The root itself resolves to the plain store (a Zarr store's root, which zarr-python reads
    through obstore's functions); URLs under it to a view that decodes the names it is given.
    """

    def __init__(self, root_url: str, store: Any) -> None:
        super().__init__({root_url: store})
        self._root_url = root_url.rstrip("/")
        self._store = store
        root_path = urlparse(self._root_url).path
        self._view = _DecodingStore(store, prefix=root_path if root_path.strip("/") else "")

    def resolve(self, url: str) -> tuple[Any, str]:
        if url.rstrip("/") == self._root_url:
            return self._store, ""
        if not url.startswith(self._root_url + "/"):
            raise ValueError(f"{url!r} is outside {self._root_url!r}")
        return self._view, url[len(self._root_url) :].lstrip("/")


class _DecodingStore:
    """The reads of an obstore store (the methods VirtualiZarr's readers call), taking
    percent-encoded object names. ``prefix`` is the encoded path of the store's root: VirtualiZarr
    strips it from the URL paths it reads."""

    def __init__(self, store: Any, *, prefix: str) -> None:
        self._store = store
        self.prefix = prefix

    def head(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._store.head(unquote(path), *args, **kwargs)

    async def head_async(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return await self._store.head_async(unquote(path), *args, **kwargs)

    def get(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._store.get(unquote(path), *args, **kwargs)

    async def get_async(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return await self._store.get_async(unquote(path), *args, **kwargs)

    def get_range(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._store.get_range(unquote(path), *args, **kwargs)

    async def get_range_async(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return await self._store.get_range_async(unquote(path), *args, **kwargs)

    def get_ranges(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._store.get_ranges(unquote(path), *args, **kwargs)

    async def get_ranges_async(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return await self._store.get_ranges_async(unquote(path), *args, **kwargs)


def is_not_found(exc: BaseException) -> bool:
    """Whether an obstore error means "no such object"."""
    from obstore.exceptions import NotFoundError

    return isinstance(exc, FileNotFoundError | NotFoundError)


def access_error(exc: BaseException, url: str, what: str = "read") -> IcepipeError:
    """The icepipe error for an obstore failure on ``url``: what failed, and the fix."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    if isinstance(exc, IcepipeError):
        return exc
    if is_not_found(exc):
        return SourceError(f"{url}: not found; fix or remove it in source.urls", url=url)
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return ConfigError(
            f"{url}: access denied when trying to {what} it ({short_message(exc).splitlines()[0]})"
            "; check the credentials this process uses (source.storage: access_key_id_env / "
            "secret_access_key_env, or the standard AWS_* variables and profiles), or set "
            "source.storage.anonymous: true for a public bucket",
            field="source.storage",
        )
    return storage_failure(exc, f"{url}: cannot {what} it", where="source.urls")


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file on object storage, for xarray engines that take file objects.

    It pickles as ``(url, storage)`` and reconnects lazily wherever it is unpickled, with that
    process's credentials: xarray's file managers pickle their file objects into task graphs.
    Reads of up to a block go through the process's cached blocks (:func:`_block`), keyed by
    the object's size and ETag (read once per instance); larger reads, and objects without an
    ETag, go through a reader.
    """

    def __init__(self, url: str, storage: StorageOptions | None = None) -> None:
        super().__init__()
        self.url = url
        self.storage = storage
        self._reader: Any = None
        self._pos = 0
        self._meta: tuple[int, str | None] | None = None

    def __reduce__(self) -> Any:
        return (RemoteFile, (self.url, self.storage))

    def _open(self) -> Any:
        if self._reader is None:
            store, path = store_and_path(self.url, self.storage)
            try:
                self._reader = obstore.open_reader(store, path, buffer_size=_READ_BUFFER)
            except Exception as exc:
                raise access_error(exc, self.url) from exc
        return self._reader

    def _size_and_etag(self) -> tuple[int, str | None]:
        if self._meta is None:
            store, path = store_and_path(self.url, self.storage)
            try:
                meta = obstore.head(store, path)
            except Exception as exc:
                raise access_error(exc, self.url) from exc
            self._meta = (int(meta["size"]), meta.get("e_tag"))
        return self._meta

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size_and_etag()[0] + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(f"{self.url}: negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        size, etag = self._size_and_etag()
        n = min(len(view), size - self._pos)
        if n <= 0:
            return 0
        if n <= _BLOCK and etag is not None:
            data: Any = self._cached(self._pos, n, (size, etag))
        else:
            reader = self._open()
            reader.seek(self._pos)
            data = reader.read(n)
        got = len(data)
        view[:got] = memoryview(data)
        self._pos += got
        return got

    def _cached(self, pos: int, n: int, version: tuple[int, str]) -> bytes:
        """``n`` bytes at ``pos`` from the blocks they fall in (fetched when not cached)."""
        first, last = pos // _BLOCK, (pos + n - 1) // _BLOCK
        parts = [_block(self.url, self.storage, version, i, _BLOCK) for i in range(first, last + 1)]
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        offset = pos - first * _BLOCK
        return joined[offset : offset + n]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        super().close()


@functools.lru_cache(maxsize=_CACHED_BLOCKS)
def _block(
    url: str, storage: StorageOptions | None, version: tuple[int, str], number: int, size: int
) -> bytes:
    """Block ``number`` (of ``size`` bytes) of the object at ``url`` in its version ``version``
    (size, ETag): fetched only from that version (``If-Match``), so a block of an object
    rewritten meanwhile is never kept under the old one's key.

    Raises
    ------
    SourceError
        The object changed since its ETag was read.
    """
    store, path = store_and_path(url, storage)
    start = number * size
    end = min(version[0], start + size)
    options: GetOptions = {"range": (start, end), "if_match": version[1]}
    try:
        block = bytes(obstore.get(store, path, options=options).bytes())
    except obstore.exceptions.PreconditionError as exc:
        raise SourceError(
            f"{url}: changed while being read; run again once it is written", url=url
        ) from exc
    except Exception as exc:
        raise access_error(exc, url) from exc
    if len(block) != end - start:
        raise SourceError(
            f"{url}: changed while being read (bytes {start}-{end} came back {len(block)} "
            "long); run again once it is written",
            url=url,
        )
    return block


def zarr_store(url: str, storage: StorageOptions | None = None) -> Any:
    """A read-only Zarr store for the Zarr store at ``url`` that pickles as ``(url, storage)``."""
    return _PicklableObjectStore(url, storage)


class _PicklableObjectStore(ObjectStore):  # type: ignore[type-arg]
    """``zarr.storage.ObjectStore`` that rebuilds its obstore store from ``(url, storage)``."""

    def __init__(self, url: str, storage: StorageOptions | None = None) -> None:
        super().__init__(store_for(url, storage), read_only=True)
        self._icepipe_location = (url, storage)

    def __reduce__(self) -> Any:
        return (_PicklableObjectStore, self._icepipe_location)


def netcdf3_store(url: str, storage: StorageOptions | None = None) -> Any:
    """A read-only Zarr view of a remote netCDF3 file (VirtualiZarr's ``NetCDF3Parser``) that
    pickles as ``(url, storage)``.

    netCDF4-python reads paths only, and xarray's scipy backend cannot send an open file to
    another process; this view reads byte ranges through obstore, on whichever worker reads.
    """
    return _NetCDF3Store(url, storage)


@functools.lru_cache(maxsize=32)
def _parsed_netcdf3(url: str, storage: StorageOptions | None) -> Any:
    # One header parse per file and process, however many tasks unpickle the view.
    from virtualizarr.parsers import NetCDF3Parser

    return NetCDF3Parser()(url=reference_url(url), registry=registry_for(url, storage))


class _NetCDF3Store(WrapperStore):  # type: ignore[type-arg]
    def __init__(self, url: str, storage: StorageOptions | None = None) -> None:
        super().__init__(_parsed_netcdf3(url, storage))
        self._icepipe_location = (url, storage)

    def __reduce__(self) -> Any:
        return (_NetCDF3Store, self._icepipe_location)


#: Objects at the root of a Zarr store (v3, v2 group, v2 array, v2 consolidated).
_ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def is_remote_zarr(url: str, storage: StorageOptions | None = None) -> bool:
    """Whether the object-store prefix ``url`` is a Zarr store (has Zarr metadata at its root)."""
    store = store_for(url, storage)
    for name in _ZARR_METADATA:
        try:
            obstore.head(store, name)
            return True
        except Exception:
            continue
    return False


def check_readable(url: str, storage: StorageOptions | None = None) -> None:
    """``HEAD`` a source (a file, or a Zarr store's metadata) with this process's credentials.

    Raises
    ------
    SourceError
        It does not exist.
    ConfigError
        Access is denied.
    StorageError
        Anything else.
    """
    store, name = store_and_path(url, storage)
    try:
        obstore.head(store, name)
    except Exception as exc:
        if is_not_found(exc) and scheme_for(url).object_store:
            try:
                if is_remote_zarr(url, storage):
                    return
            except Exception as inner:
                raise access_error(inner, url) from inner
        raise access_error(exc, url) from exc
