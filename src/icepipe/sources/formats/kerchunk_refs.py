"""Kerchunk reference sets read into one plain mapping of references, every URL in it absolute.

A reference set is a kerchunk JSON file (plain or gzip-compressed), or a Parquet reference
directory (``.zmetadata`` plus ``<variable>/refs.<n>.parq`` files, as
``kerchunk.df.refs_to_dataframe`` writes it); on a local disk or in an object store. Which of
them a URL is comes from its content, never its name: a folder (an object-store prefix with a
``.zmetadata`` object) is a Parquet set, a file starting with gzip's magic bytes is
decompressed, and anything else must be JSON; an empty file, an HTML page, a single Parquet
file or a truncated gzip stream is refused naming the set. What VirtualiZarr's kerchunk
translator needs, and what it does not do itself, is done here:

- ``templates`` (``{{u}}`` in URLs) and ``gen`` keys are expanded
  (:mod:`~icepipe.sources.formats.kerchunk_gen`); version-0 sets (no ``refs`` key) are read;
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

__all__ = [
    "ReferenceSet",
    "is_kerchunk_parquet",
    "is_parquet_set",
    "looks_like_reference_set",
    "read_reference_set",
]

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
    """Whether ``url`` is a folder (an object-store prefix) with a ``.zmetadata`` object, as
    Parquet reference sets are, whatever its name."""
    if is_local(url):
        return os.path.isfile(os.path.join(url.removeprefix("file://"), ".zmetadata"))
    try:
        obstore.head(store_for(url, storage), ".zmetadata")
        return True
    except Exception:
        return False


#: Keys near the start of a JSON object that make it a kerchunk reference set (version 1, or
#: version 0: the Zarr keys themselves).
_SET_KEYS = (b'"refs"', b'"version"', b'"templates"', b'"gen"', b'".zgroup"', b'".zattrs"',
             b'"zarr.json"', b'/.zarray"', b'/zarr.json"')  # fmt: skip


def looks_like_reference_set(head: bytes) -> bool:
    """Whether a file's first bytes are those of a kerchunk JSON set (gzip-compressed or not):
    a JSON object naming kerchunk's or Zarr's keys (``format: auto``)."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, 65536)
        except zlib.error:
            return False
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text[:1] == b"{" and any(key in text for key in _SET_KEYS)


def is_kerchunk_parquet(url: str, storage: StorageOptions | None = None) -> bool:
    """Whether the folder (prefix) ``url``, which has a ``.zmetadata``, is a kerchunk Parquet
    reference set (its ``.zmetadata`` has a ``record_size``) rather than a Zarr v2 store."""
    import ujson

    try:
        if is_local(url):
            with open(os.path.join(url.removeprefix("file://"), ".zmetadata"), "rb") as fh:
                data = fh.read()
        else:
            data = bytes(obstore.get(store_for(url, storage), ".zmetadata").bytes())
        meta = ujson.loads(data)
    except Exception:
        return False
    return isinstance(meta, dict) and "record_size" in meta


def read_reference_set(
    url: str, storage: StorageOptions | None = None, group: str | None = None
) -> ReferenceSet:
    """The references of the set at ``url`` (JSON, gzip JSON or a Parquet directory, told
    apart by their content), with absolute URLs, every data file checked. ``group``: only
    ``gen`` entries whose keys may lie in it are expanded (the rest of the set is read).

    Raises
    ------
    SourceError
        The set is missing, empty, not valid JSON (truncated?), not a kerchunk reference set
        (an HTML page, a lone Parquet file), has ``gen`` keys that do not expand, or points to
        a file that is missing or shorter than its references say.
    ConfigError
        Access to an object store was denied.
    """
    import ujson

    data = _object(url, storage)
    raw = _parquet_refs(url, storage) if data is None else _json_refs(url, data, group)
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


def _object(url: str, storage: StorageOptions | None) -> bytes | None:
    """The bytes of the set at ``url``, or ``None`` when it is a Parquet reference folder."""
    if is_local(url):
        folder = url.removeprefix("file://")
        if os.path.isdir(folder):
            if not os.path.isfile(os.path.join(folder, ".zmetadata")):
                raise SourceError(
                    f"{url}: is a folder without .zmetadata, so not a kerchunk Parquet "
                    "reference set (kerchunk.df.refs_to_dataframe writes .zmetadata and "
                    "<variable>/refs.<n>.parq); name a reference set in source.urls",
                    url=url,
                )
            return None
        return _get(url, storage)
    store, path = store_and_path(url, storage)
    try:
        data = bytes(obstore.get(store, path).bytes())
    except Exception as exc:
        if not is_not_found(exc):
            raise access_error(exc, url) from exc
        if is_parquet_set(url, storage):  # an object store has no folders: a prefix
            return None
        raise SourceError(
            f"{url}: not found (neither an object nor a prefix with .zmetadata); fix or "
            "remove it in source.urls",
            url=url,
        ) from exc
    # An empty object named like a prefix: a "folder" marker some tools write.
    return None if not data and is_parquet_set(url, storage) else data


#: First bytes of what is sometimes saved in place of a reference set: what it is, the fix.
_NOT_JSON = (
    (b"PAR1", "a single Parquet file", "Parquet reference sets are folders (.zmetadata and "
     "<variable>/refs.<n>.parq): name the folder in source.urls"),
    (b"(\xb5/\xfd", "zstd-compressed", "decompress it (or gzip it)"),
    (b"BZh", "bzip2-compressed", "decompress it (or gzip it)"),
    (b"\xfd7zXZ", "xz-compressed", "decompress it (or gzip it)"),
    (b"<", "HTML or XML (an error page saved in place of the set?)", "download it again"),
)  # fmt: skip


def _decoded(url: str, data: bytes) -> Any:
    """The JSON document of a set's bytes (gunzipped when they start with gzip's magic)."""
    import ujson

    if not data:
        raise SourceError(
            f"{url}: is empty (0 bytes), not a kerchunk reference set; regenerate it, or "
            "remove it from source.urls",
            url=url,
        )
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(
                f"{url}: is gzip-compressed but does not decompress ({type(exc).__name__}: "
                f"{short_message(exc)}): truncated or corrupt; regenerate it, or remove it "
                "from source.urls",
                url=url,
            ) from exc
    text = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    found = next(((k, f) for magic, k, f in _NOT_JSON if text.startswith(magic)), None)
    if not text:
        found = ("blank (only white space)", "regenerate it")
    if found is not None:
        kind, fix = found
        raise SourceError(
            f"{url}: is {kind}, not a kerchunk reference set (first bytes {data[:16]!r}); "
            f"{fix}, or remove it from source.urls",
            url=url,
        )
    try:
        return ujson.loads(text)
    except ValueError as exc:
        raise SourceError(
            f"{url}: is not valid kerchunk JSON ({type(exc).__name__}: {short_message(exc)}); "
            "the file may be truncated or corrupt: regenerate it, or remove it from source.urls",
            url=url,
        ) from exc


def _json_refs(url: str, data: bytes, group: str | None) -> dict[str, Any]:
    """The ``refs`` of a kerchunk JSON document, templates and ``gen`` keys expanded."""
    from icepipe.sources.formats.kerchunk_gen import (
        expand_url,
        generated_refs,
        template_context,
    )

    doc = _decoded(url, data)
    if not isinstance(doc, dict) or not isinstance(doc.get("refs", doc), dict):
        raise SourceError(
            f"{url}: is JSON but not a kerchunk reference set (expected an object with "
            "'refs'); check source.urls and source.format",
            url=url,
        )
    version = doc.get("version")
    if "refs" in doc and version not in (None, 1):
        raise SourceError(
            f"{url}: is a kerchunk reference set of version {version!r}, which icepipe does "
            "not read (versions 0 and 1); regenerate it, or remove it from source.urls",
            url=url,
        )
    refs: dict[str, Any] = doc.get("refs", doc)
    # Version 0 (the refs themselves, no "refs" key) has neither templates nor gen keys.
    templates = (doc.get("templates") or {}) if "refs" in doc else {}
    gens = doc.get("gen") if "refs" in doc else None
    if not templates and not gens:
        return refs
    if not isinstance(templates, dict):
        raise SourceError(f"{url}: its 'templates' is not an object; fix the set", url=url)
    context = template_context(url, templates)
    out = {
        k: [expand_url(url, v[0], context), *v[1:]] if _templated(v) else v for k, v in refs.items()
    }
    if gens:
        out.update(generated_refs(url, gens, context, group))
    return out


def _templated(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and isinstance(value[0], str) and "{{" in value[0]
    )


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


def _check_parquet_framing(data: bytes) -> None:
    """Refuse bytes that are not framed as a Parquet file: ``PAR1`` at both ends, a footer
    length that fits. fastparquet does not check the framing by default and hands whatever
    the footer length points at to its compiled metadata parser, which crashed the process
    (a segfault, not an exception) on a truncated or corrupt record file.

    Raises
    ------
    ValueError
        The framing is wrong, saying how.
    """
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise ValueError("no PAR1 magic at both ends: truncated or not Parquet")
    footer = int.from_bytes(data[-8:-4], "little")
    if footer > len(data) - 12:
        raise ValueError(f"its footer claims {footer} bytes of a {len(data)}-byte file")


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
            _check_parquet_framing(data)
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
