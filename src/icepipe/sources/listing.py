"""WHICH files to ingest: expand globs and explicit lists into :class:`SourceFile` records.

Listing goes through obstore, so local disks and object stores (S3 and S3-compatible, GCS,
Azure) are listed the same way; HTTP(S) servers cannot be listed, so they take explicit lists
only. No file is opened here (only listed or ``HEAD``-ed). Objects in object stores are
identified by ETag and size, local files by size and modification time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import obstore

from icepipe.errors import ConfigError, SourceError, short_message
from icepipe.faults import storage_failure
from icepipe.model import SourceFile
from icepipe.sources.stores import access_error, is_not_found, store_and_path, store_for
from icepipe.storage import StorageOptions, scheme_of, split_url

__all__ = ["ZARR_METADATA", "glob_to_regex", "list_sources", "split_glob"]

_MAGIC_CHARS = frozenset("*?[")


def list_sources(
    urls: Sequence[str], *, is_glob: bool, storage: StorageOptions | None = None
) -> list[SourceFile]:
    """List the source files a pipeline names, sorted by URL.

    Parameters
    ----------
    urls
        Canonical URLs (``file://``, ``s3://``, ``gs://``, ``az://``, ``http(s)://``): one glob
        pattern (``is_glob=True``) or explicit files.
    is_glob
        Whether ``urls`` holds a single glob pattern.
    storage
        How to reach object stores (``source.storage``); credentials are read from this
        process's environment.

    Raises
    ------
    SourceError
        A glob matched nothing, or a listed file does not exist.
    ConfigError
        Access was denied, or a glob names an HTTP(S) location (which cannot be listed).
    StorageError
        The storage could not be listed.
    """
    if is_glob and scheme_of(urls[0]).startswith("http") and not _MAGIC_CHARS & set(urls[0]):
        is_glob = False  # one https:// URL: a file, not a pattern (servers cannot be listed)
    if is_glob:
        (pattern,) = urls
        files = _list_glob(pattern, storage)
        if not files:
            raise SourceError(
                f"the glob {pattern!r} matched no files; check the path in source.urls "
                "(relative paths resolve against the pipeline file's folder)",
                url=pattern,
            )
        return files
    out: list[SourceFile] = []
    errors: list[SourceError] = []
    for url in urls:
        try:
            out.append(_head(url, storage))
        except SourceError as exc:
            errors.append(exc)  # name every missing file at once, not one per run
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SourceError(
            f"{len(errors)} files in source.urls cannot be read:\n  - "
            + "\n  - ".join(str(e) for e in errors),
            urls=[u for e in errors for u in e.urls],
        )
    seen: set[str] = set()
    for f in out:
        if f.url in seen:
            raise ConfigError(f"{f.url!r} is listed twice", field="source.urls")
        seen.add(f.url)
    return sorted(out)


def split_glob(path: str) -> tuple[str, str]:
    """Split ``/a/b/*/c*.nc`` into the literal directory ``/a/b`` and the pattern ``*/c*.nc``."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(c in _MAGIC_CHARS for c in part):
            return "/".join(parts[:i]) or "/", "/".join(parts[i:])
    return "/".join(parts[:-1]) or "/", parts[-1]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob (``*``, ``?``, ``[...]``, ``**``) to a regex; ``*`` never crosses ``/``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _join(base_url: str, rel: str) -> str:
    return (base_url if base_url.endswith("/") else base_url + "/") + rel if rel else base_url


def _split_url_glob(url: str) -> tuple[str, str]:
    """``s3://b/a/*/c*.nc`` -> ``("s3://b/a", "*/c*.nc")``; the first part is listed."""
    scheme, bucket, key = split_url(url)
    if scheme == "file":
        root, pattern = split_glob(key)
        return "file://" + root, pattern
    if scheme in ("http", "https"):
        raise ConfigError(
            f"{url!r}: {scheme}:// locations cannot be listed, so globs do not work there; give "
            "an explicit list of URLs in source.urls",
            field="source.urls",
        )
    root, pattern = split_glob("/" + key)
    return f"{scheme}://{bucket}{root.rstrip('/')}", pattern


def _record(base_url: str, meta: Mapping[str, Any]) -> SourceFile:
    modified: datetime = meta["last_modified"]
    remote = scheme_of(base_url) != "file"
    etag = meta.get("e_tag") if remote else None
    return SourceFile(
        url=_join(base_url, str(meta["path"])),
        size=int(meta["size"]),
        mtime=modified.isoformat(),
        # Local "etags" encode the inode: size + mtime identify a local file. Object stores'
        # ETags change with every rewrite, even one of the same size within the same second.
        etag=str(etag).strip('"') if etag else None,
    )


def _list_glob(pattern_url: str, storage: StorageOptions | None) -> list[SourceFile]:
    base_url, pattern = _split_url_glob(pattern_url)
    regex = glob_to_regex(pattern)
    remote = scheme_of(base_url) != "file"
    try:
        store = store_for(base_url, storage)
    except ConfigError:
        raise
    except Exception as exc:
        raise SourceError(
            f"the folder {base_url!r} of the glob {pattern_url!r} does not exist or cannot be "
            f"read ({short_message(exc)}); check source.urls",
            url=pattern_url,
        ) from exc
    recursive = "/" in pattern or "**" in pattern
    try:
        metas: list[Mapping[str, Any]]
        dirs: set[str]
        if recursive:
            metas = [m for batch in obstore.list(store, chunk_size=1000) for m in batch]
            dirs = {
                "/".join(parts[:d])
                for m in metas
                for parts in [str(m["path"]).split("/")]
                for d in range(1, len(parts))
            }
        else:
            listing = obstore.list_with_delimiter(store)
            metas = list(listing["objects"])
            dirs = {p.rstrip("/") for p in listing["common_prefixes"]}
        stores = [
            r
            for d in sorted(x for x in dirs if regex.match(x))
            if (r := _zarr_store_record(_join(base_url, d), storage)) is not None
        ]
        inside = tuple(f.url + "/" for f in stores)
        files = [
            f
            for f in (_record(base_url, m) for m in metas if regex.match(str(m["path"])))
            if not f.url.startswith(inside)
        ]
        files += stores
    except FileNotFoundError as exc:
        raise SourceError(
            f"the folder {base_url!r} of the glob {pattern_url!r} does not exist; check "
            "source.urls",
            url=pattern_url,
        ) from exc
    except OSError as exc:
        raise storage_failure(exc, f"listing {base_url!r} failed", where="source.urls") from exc
    except Exception as exc:
        if not remote:
            raise
        if is_not_found(exc):
            raise SourceError(
                f"the bucket of the glob {pattern_url!r} does not exist "
                f"({short_message(exc).splitlines()[0]}); check source.urls",
                url=pattern_url,
            ) from exc
        raise access_error(exc, base_url, "list") from exc
    return sorted(files)


#: Objects at the root of a Zarr store (v3, v2 group, v2 array, v2 consolidated).
ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def _zarr_store_record(url: str, storage: StorageOptions | None) -> SourceFile | None:
    """A Zarr store (a folder with Zarr metadata at its root) as one source, or None.

    Its identity is the total size and the newest modification time of its objects, so that
    any chunk or metadata rewritten inside it counts as a change.
    """
    try:
        store = store_for(url, storage)
        metas = [m for batch in obstore.list(store, chunk_size=1000) for m in batch]
    except Exception:
        return None
    if not any(str(m["path"]) in ZARR_METADATA for m in metas):
        return None
    newest = max(m["last_modified"] for m in metas)
    return SourceFile(
        url=url,
        size=sum(int(m["size"]) for m in metas),
        mtime=newest.isoformat(),
        etag=None,
    )


def _head(url: str, storage: StorageOptions | None) -> SourceFile:
    scheme = scheme_of(url)
    if scheme == "file":
        return _head_local(url)
    try:
        store, name = store_and_path(url, storage)
        meta = obstore.head(store, name)
    except ConfigError:
        raise
    except Exception as exc:
        if not is_not_found(exc):
            raise access_error(exc, url, "read") from exc
        record = _zarr_store_record(url, storage) if scheme in ("s3", "gs", "az") else None
        if record is None:
            raise SourceError(
                f"{url}: not found; fix or remove it in source.urls", url=url
            ) from exc
        return record
    return _record(url.rpartition("/")[0], meta)


def _head_local(url: str) -> SourceFile:
    path = url[len("file://") :]
    if os.path.isdir(path):
        record = _zarr_store_record(url, None)
        if record is None:
            raise SourceError(
                f"{url}: is a folder, not a file or a Zarr store (no {' or '.join(ZARR_METADATA)} "
                "in it); list files, or use a glob like 'folder/*.nc' in source.urls",
                url=url,
            )
        return record
    root, name = path.rsplit("/", 1)
    try:
        store = store_for("file://" + (root or "/"))
    except Exception as exc:
        raise SourceError(
            f"{url}: file not found (its folder {root!r} does not exist or cannot be read); "
            "fix or remove it in source.urls",
            url=url,
        ) from exc
    try:
        meta = obstore.head(store, name)
    except FileNotFoundError as exc:
        raise SourceError(
            f"{url}: file not found; fix or remove it in source.urls", url=url
        ) from exc
    except Exception as exc:
        raise SourceError(
            f"{url}: cannot be read ({short_message(exc)}); check the path and permissions",
            url=url,
        ) from exc
    return _record("file://" + (root or "/"), meta)
