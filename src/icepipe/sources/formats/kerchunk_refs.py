"""Kerchunk reference sets read into one plain mapping of references, every URL in it absolute.

A reference set is a kerchunk JSON file (``.json``, or gzip-compressed), or a Parquet
reference directory (``.zmetadata`` plus ``<variable>/refs.<n>.parq`` files, as
``kerchunk.df.refs_to_dataframe`` writes it); on a local disk or in an object store. What
VirtualiZarr's kerchunk translator needs, and what it does not do itself, is done here:

- ``templates`` (``{{u}}`` in URLs) are expanded; version-0 sets (no ``refs`` key) are read;
- URLs are made absolute: ``/abs/path`` is ``file:///abs/path``, a relative path is relative to
  the reference set's folder; then written as icepipe writes every reference URL
  (:func:`~icepipe.storage.reference_url`), so that the virtual chunk containers match them;
- each data file the set points to is looked up once (``HEAD``): a missing file, or references
  past its end, fail the scan naming the set and the file, not the readers later;
- whole-file references (``[url]``) get the file's size.

Everything here runs where the scan runs (a Dask worker or the client) and raises
:class:`~icepipe.errors.SourceError` naming the reference set.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import posixpath
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import obstore

from icepipe.errors import SourceError, short_message
from icepipe.sources.stores import access_error, is_not_found, store_and_path, store_for
from icepipe.storage import StorageOptions, is_local, reference_url, split_url

__all__ = ["ReferenceSet", "is_parquet_set", "read_reference_set"]

#: A chunk reference after reading: inline bytes, or ``[reference URL, offset, length]``.
Ref = bytes | str | list[Any]


@dataclass(frozen=True)
class ReferenceSet:
    """A reference set's references, with absolute reference URLs.

    Attributes
    ----------
    refs
        Kerchunk's ``refs`` mapping (Zarr metadata as JSON text or dictionaries, chunk
        references as ``[url, offset, length]`` or inline data).
    targets
        Each data file referenced: its literal URL -> its size in bytes.
    """

    refs: dict[str, Any]
    targets: Mapping[str, int]


def is_parquet_set(url: str, storage: StorageOptions | None = None) -> bool:
    """Whether ``url`` is a Parquet reference directory (has a ``.zmetadata`` object) rather
    than a JSON file."""
    if is_local(url):
        return os.path.isdir(url.removeprefix("file://"))
    if url.lower().endswith((".json", ".json.gz", ".gz")):
        return False
    try:
        obstore.head(store_for(url, storage), ".zmetadata")
        return True
    except Exception:
        return False


def read_reference_set(url: str, storage: StorageOptions | None = None) -> ReferenceSet:
    """The references of the set at ``url`` (JSON, gzip JSON or a Parquet directory), with
    absolute URLs, every data file checked.

    Raises
    ------
    SourceError
        The set is missing, not valid JSON (truncated?), not a kerchunk reference set, uses
        ``gen`` keys, or points to a file that is missing or shorter than its references say.
    ConfigError
        Access to an object store was denied.
    """
    import ujson

    raw = _parquet_refs(url, storage) if is_parquet_set(url, storage) else _json_refs(url, storage)
    folder = url.rstrip("/").rsplit("/", 1)[0]
    refs: dict[str, Any] = {}
    literal: dict[str, str] = {}  # reference URL -> literal URL
    urls: dict[str, str] = {}  # path in the set -> reference URL (a set repeats few paths)
    for key, value in raw.items():
        if isinstance(value, list | tuple) and value and isinstance(value[0], str):
            ref = urls.get(value[0])
            if ref is None:
                target = _absolute(value[0], folder)
                ref = urls[value[0]] = reference_url(target)
                literal[ref] = target
            refs[key] = [ref, *value[1:]]
        elif isinstance(value, dict):  # metadata as objects (Parquet sets, some writers)
            refs[key] = ujson.dumps(value)
        else:
            refs[key] = value
    sizes = _sizes(url, sorted(set(literal.values())), storage)
    for key, value in refs.items():
        if isinstance(value, list) and value and isinstance(value[0], str):
            refs[key] = _checked(url, key, value, literal[value[0]], sizes)
    return ReferenceSet(refs=refs, targets=sizes)


def _checked(set_url: str, key: str, ref: list[Any], target: str, sizes: Mapping[str, int]) -> Ref:
    size = sizes[target]
    if len(ref) == 1:
        return [ref[0], 0, size]
    if len(ref) != 3:
        raise SourceError(
            f"{set_url}: the reference of {key!r} is {ref!r}, not [url], [url, offset, length] "
            "or inline data; regenerate the reference set",
            url=set_url,
        )
    offset, length = int(ref[1]), int(ref[2])
    if offset + length > size:
        raise SourceError(
            f"{set_url}: the reference of {key!r} reads bytes {offset}-{offset + length} of "
            f"{target}, which has {size} bytes (truncated, or rewritten since the references "
            "were made); restore the file, or regenerate the reference set",
            url=set_url,
        )
    return [ref[0], offset, length]


def _absolute(path: str, folder: str) -> str:
    """The literal absolute URL of a reference's path: URLs stay, ``/abs`` is ``file:///abs``,
    and a relative path is relative to the reference set's ``folder``."""
    if "://" in path:
        return path
    if path.startswith("/"):
        return "file://" + posixpath.normpath(path)
    scheme, bucket, key = split_url(folder + "/" + path)
    if scheme == "file":
        return "file://" + posixpath.normpath(key)
    return f"{scheme}://{bucket}/{posixpath.normpath(key)}"


def _sizes(set_url: str, targets: list[str], storage: StorageOptions | None) -> dict[str, int]:
    """``HEAD`` every data file the set references (a few at a time): their sizes."""
    from concurrent.futures import ThreadPoolExecutor

    if len(targets) <= 1:
        return {t: _size(set_url, t, storage) for t in targets}
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        sizes = pool.map(lambda t: _size(set_url, t, storage), targets)
        return dict(zip(targets, sizes, strict=True))


def _size(set_url: str, target: str, storage: StorageOptions | None) -> int:
    store, path = store_and_path(target, storage)
    try:
        return int(obstore.head(store, path)["size"])
    except Exception as exc:
        if is_not_found(exc):
            raise SourceError(
                f"{set_url}: references {target}, which does not exist; restore the file "
                "(or regenerate the reference set where the files are now), or remove the "
                "set from source.urls",
                url=set_url,
            ) from exc
        raise access_error(exc, target) from exc


def _get(url: str, storage: StorageOptions | None, what: str = "") -> bytes:
    store, path = store_and_path(url, storage)
    try:
        return bytes(obstore.get(store, path).bytes())
    except Exception as exc:
        if is_not_found(exc):
            raise SourceError(
                f"{url}: not found{what}; fix or remove it in source.urls", url=url
            ) from exc
        raise access_error(exc, url) from exc


def _record(root: str, name: str, storage: StorageOptions | None) -> bytes | None:
    """The object ``name`` of the Parquet set at ``root``; ``None`` when there is none."""
    try:
        return bytes(obstore.get(store_for(root, storage), name).bytes())
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise access_error(exc, f"{root}/{name}") from exc


def _json_refs(url: str, storage: StorageOptions | None) -> dict[str, Any]:
    """The ``refs`` of a kerchunk JSON file (gzip-compressed or not), templates expanded."""
    import ujson

    data = _get(url, storage)
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        doc = ujson.loads(data)
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise SourceError(
            f"{url}: is not valid kerchunk JSON ({type(exc).__name__}: {short_message(exc)}); "
            "the file may be truncated or corrupt: regenerate it, or remove it from source.urls",
            url=url,
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("refs", doc), dict):
        raise SourceError(
            f"{url}: is JSON but not a kerchunk reference set (expected an object with "
            "'refs'); check source.urls and source.format",
            url=url,
        )
    if doc.get("gen"):
        raise SourceError(
            f"{url}: uses kerchunk 'gen' keys, which icepipe does not expand; expand them "
            "with fsspec (ReferenceFileSystem(fo=...).references) and write the set again",
            url=url,
        )
    refs: dict[str, Any] = doc.get("refs", doc)
    templates = {str(k): str(v) for k, v in (doc.get("templates") or {}).items()}
    if templates:
        refs = {k: _expand(v, templates) for k, v in refs.items()}
    return refs


def _expand(value: Any, templates: Mapping[str, str]) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], str) and "{{" in value[0]:
        path = value[0]
        for name, text in templates.items():
            path = path.replace("{{" + name + "}}", text).replace("{{ " + name + " }}", text)
        return [path, *value[1:]]
    return value


def _parquet_refs(url: str, storage: StorageOptions | None) -> dict[str, Any]:
    """The references of a Parquet reference directory (fsspec's ``LazyReferenceMapper``
    layout: ``.zmetadata`` holds the metadata and ``record_size``; each variable's chunk
    references are rows of ``<variable>/refs.<n>.parq``, in C order of the chunk grid)."""
    import ujson

    root = url.rstrip("/")
    try:
        meta = ujson.loads(_get(root + "/.zmetadata", storage, " (a Parquet reference set)"))
        metadata: dict[str, Any] = meta["metadata"]
        record_size = int(meta["record_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(
            f"{url}: its .zmetadata is not that of a kerchunk Parquet reference set "
            f"({type(exc).__name__}: {short_message(exc)}); regenerate it, or remove it from "
            "source.urls",
            url=url,
        ) from exc
    refs: dict[str, Any] = dict(metadata)
    for key, zarray in metadata.items():
        if key.endswith("/.zarray"):
            field = key.removesuffix("/.zarray")
            refs.update(_field_refs(root, field, zarray, record_size, storage))
    return refs


def _field_refs(
    root: str, field: str, zarray: Any, record_size: int, storage: StorageOptions | None
) -> Iterator[tuple[str, Ref]]:
    """One variable's chunk references from its Parquet records."""
    import numpy as np
    import pandas as pd
    import ujson

    zarray = ujson.loads(zarray) if isinstance(zarray, str | bytes) else zarray
    grid = [math.ceil(s / c) for s, c in zip(zarray["shape"], zarray["chunks"], strict=True)]
    total = math.prod(grid) if grid else 1
    if total == 0:
        return
    for record in range(math.ceil(total / record_size)):
        name = f"{root}/{field}/refs.{record}.parq"
        data = _record(root, f"{field}/refs.{record}.parq", storage)
        if data is None:
            continue  # no record file: chunks never written (fsspec reads them as missing)
        try:
            with warnings.catch_warnings():
                # fastparquet: the engine kerchunk and fsspec write and read these sets with
                # (pandas 3 calls it deprecated).
                warnings.simplefilter("ignore")
                frame = pd.read_parquet(io.BytesIO(data), engine="fastparquet")
            table = {str(c): _column(frame[c]) for c in frame.columns}
        except Exception as exc:
            raise SourceError(
                f"{name}: is not a readable Parquet file ({short_message(exc)}); the reference "
                "set may be truncated: regenerate it, or remove it from source.urls",
                url=name,
            ) from exc
        paths = table.get("path", [])
        n = len(paths)
        raws = table.get("raw", [None] * n)
        offsets, sizes = table.get("offset", [0] * n), table.get("size", [0] * n)
        for i in range(n):
            flat = record * record_size + i
            if flat >= total:
                break
            index = np.unravel_index(flat, grid) if grid else (0,)
            key = f"{field}/{'.'.join(str(int(j)) for j in index)}"
            if raws[i] is not None:
                yield key, bytes(raws[i])
            elif paths[i] is not None:
                whole = not offsets[i] and not sizes[i]
                yield key, [paths[i]] if whole else [paths[i], int(offsets[i]), int(sizes[i])]


def _column(series: Any) -> list[Any]:
    """A Parquet column as Python values, missing values (NaN, None) as ``None``."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in series]
