"""WHICH files to ingest: expand globs and explicit lists into :class:`SourceFile` records.

Listing goes through obstore, so local disks and object stores (S3 and S3-compatible, GCS,
Azure) are listed the same way; HTTP(S) servers cannot be listed, so they take explicit lists
only. No file is opened here (only listed or ``HEAD``-ed). Objects in object stores are
identified by ETag and size, local files by size and modification time.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import obstore

from icepipe.errors import ConfigError, SourceError, short_message
from icepipe.faults import storage_failure
from icepipe.globs import MAGIC_CHARS as _MAGIC_CHARS
from icepipe.globs import glob_to_regex, split_glob
from icepipe.model import SourceFile
from icepipe.sources.stores import access_error, is_not_found, store_and_path, store_for
from icepipe.storage import StorageOptions, find_scheme, is_local, scheme_for, split_url

__all__ = [
    "ZARR_METADATA",
    "changed_since_listing",
    "glob_to_regex",
    "list_sources",
    "missing_since_ingest",
    "split_glob",
]


def list_sources(
    urls: Sequence[str],
    *,
    is_glob: bool,
    storage: StorageOptions | None = None,
    unreadable: dict[str, str] | None = None,
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
    unreadable
        When given, files a glob matches that cannot be ingested at all (a symbolic link that
        cannot be followed, a name with a control character) are recorded here (URL ->
        reason) instead of raising (``on_error: skip``).

    Raises
    ------
    SourceError
        A glob matched nothing, a listed file does not exist, or (without ``unreadable``) a
        file the glob matches cannot be ingested.
    ConfigError
        Access was denied, or a glob names an HTTP(S) location (which cannot be listed).
    StorageError
        The storage could not be listed.
    """
    scheme = find_scheme(urls[0])
    if is_glob and scheme and not scheme.listable and not _MAGIC_CHARS & set(urls[0]):
        is_glob = False  # one https:// URL: a file, not a pattern (servers cannot be listed)
    if is_glob:
        (pattern,) = urls
        problems: dict[str, str] = {}
        files = _list_glob(pattern, storage, problems)
        if problems and unreadable is None:
            raise SourceError(
                f"{len(problems)} file(s) matched by {pattern!r} cannot be ingested:\n  - "
                + "\n  - ".join(f"{_shown(u)}: {r}" for u, r in sorted(problems.items()))
                + "\nfix or remove them, narrow source.urls, or set on_error: skip",
                urls=sorted(problems),
            )
        if unreadable is not None:
            unreadable.update(problems)
        if not files and not problems:
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


def changed_since_listing(
    files: Sequence[SourceFile], storage: StorageOptions | None = None
) -> dict[str, str]:
    """The files of ``files`` that no longer exist, or are no longer the version listed
    (URL -> what happened): checked just before a commit, so that a file deleted, truncated or
    replaced while a run read it is never recorded as ingested.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(f: SourceFile) -> str | None:
        try:
            now = _head(f.url, storage)
        except SourceError:
            return "disappeared"
        except Exception as exc:  # access or storage trouble: the version is unknown
            return f"cannot be checked ({short_message(exc)})"
        if f.same_version(now.identity()):
            return None
        return (
            f"changed (listed: size {f.size}, mtime {f.mtime}; now: size {now.size}, "
            f"mtime {now.mtime})"
        )

    out: dict[str, str] = {}
    if all(is_local(f.url) for f in files):
        for f in files:  # a stat each: no threads, nothing held per file
            if (why := check(f)) is not None:
                out[f.url] = why
        return out
    with ThreadPoolExecutor(max_workers=16) as pool:
        # A slice at a time: Executor.map submits every call at once, a future (~1.3 KB)
        # per file (12.8 MiB at 10,000 files, on top of the commit's peak).
        for k in range(0, len(files), _CHECK_SLICE):
            part = files[k : k + _CHECK_SLICE]
            for f, why in zip(part, pool.map(check, part), strict=True):
                if why is not None:
                    out[f.url] = why
    return out


#: Files whose versions :func:`changed_since_listing` checks at once on object stores.
_CHECK_SLICE = 1_000


def missing_since_ingest(
    pattern: str, listed: Sequence[SourceFile], ingested: Sequence[str]
) -> list[str]:
    """Ingested URLs the glob ``pattern`` would match but did not list: deleted or moved
    since they were ingested (virtual references to them fail on read)."""
    if not ingested:  # a first run: no set of every listed URL
        return []
    regex = glob_to_regex(pattern)
    present = {f.url for f in listed}
    return sorted(u for u in ingested if u not in present and regex.match(u))


def _join(base_url: str, rel: str) -> str:
    return (base_url if base_url.endswith("/") else base_url + "/") + rel if rel else base_url


def _split_url_glob(url: str) -> tuple[str, str]:
    """``s3://b/a/*/c*.nc`` -> ``("s3://b/a", "*/c*.nc")``; the first part is listed."""
    scheme, bucket, key = split_url(url)
    if scheme == "file":
        root, pattern = split_glob(key)
        return "file://" + root, pattern
    if not scheme_for(url).listable:
        raise ConfigError(
            f"{url!r}: {scheme}:// locations cannot be listed, so globs do not work there; give "
            "an explicit list of URLs in source.urls",
            field="source.urls",
        )
    root, pattern = split_glob("/" + key)
    return f"{scheme}://{bucket}{root.rstrip('/')}", pattern


def _record(base_url: str, meta: Mapping[str, Any]) -> SourceFile:
    modified: datetime = meta["last_modified"]
    remote = not is_local(base_url)
    etag = meta.get("e_tag") if remote else None
    return SourceFile(
        url=_join(base_url, str(meta["path"])),
        size=int(meta["size"]),
        mtime=modified.isoformat(),
        # Local "etags" encode the inode: size + mtime identify a local file. Object stores'
        # ETags change with every rewrite, even one of the same size within the same second.
        etag=str(etag).strip('"') if etag else None,
    )


def _list_glob(
    pattern_url: str, storage: StorageOptions | None, problems: dict[str, str]
) -> list[SourceFile]:
    base_url, pattern = _split_url_glob(pattern_url)
    if is_local(base_url):
        return _list_local_glob(pattern_url, base_url, pattern, problems)
    return _list_store_glob(pattern_url, base_url, pattern, storage)


def _list_store_glob(
    pattern_url: str, base_url: str, pattern: str, storage: StorageOptions | None
) -> list[SourceFile]:
    """:func:`_list_glob` through obstore (object stores; local folders use
    :func:`_list_local_glob`). Each listed object becomes its :class:`SourceFile` as its batch
    arrives: obstore's entries (a dict and a datetime each) are not kept."""
    regex = glob_to_regex(pattern)
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
        files: list[SourceFile] = []
        dirs: set[str] = set()
        if recursive:
            for batch in obstore.list(store, chunk_size=1000):
                for m in batch:
                    path = str(m["path"])
                    folder = path.rpartition("/")[0]
                    while folder and folder not in dirs:  # and its parents
                        dirs.add(folder)
                        folder = folder.rpartition("/")[0]
                    if regex.match(path):
                        files.append(_record(base_url, m))
        else:
            listing = obstore.list_with_delimiter(store)
            files = [
                _record(base_url, m) for m in listing["objects"] if regex.match(str(m["path"]))
            ]
            dirs = {p.rstrip("/") for p in listing["common_prefixes"]}
        stores = [
            r
            for d in sorted(x for x in dirs if regex.match(x))
            if (r := _zarr_store_record(_join(base_url, d), storage)) is not None
        ]
        if stores:
            inside = tuple(f.url + "/" for f in stores)
            files = [f for f in files if not f.url.startswith(inside)] + stores
    except FileNotFoundError as exc:
        raise SourceError(
            f"the folder {base_url!r} of the glob {pattern_url!r} does not exist; check "
            "source.urls",
            url=pattern_url,
        ) from exc
    except OSError as exc:
        raise storage_failure(exc, f"listing {base_url!r} failed", where="source.urls") from exc
    except Exception as exc:
        if is_not_found(exc):
            raise SourceError(
                f"the bucket of the glob {pattern_url!r} does not exist "
                f"({short_message(exc).splitlines()[0]}); check source.urls",
                url=pattern_url,
            ) from exc
        from obstore.exceptions import InvalidPathError

        if isinstance(exc, InvalidPathError):  # a key obstore cannot express (a newline)
            raise SourceError(
                f"an object under {base_url!r} has a name the object-store layer icepipe "
                f"reads through cannot express ({short_message(exc).splitlines()[0]}); rename "
                "it, or narrow source.urls",
                url=pattern_url,
            ) from exc
        raise access_error(exc, base_url, "list") from exc
    files.sort(key=_url_of)  # URLs are unique: the records' own order
    return files


#: Objects at the root of a Zarr store (v3, v2 group, v2 array, v2 consolidated).
ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def _zarr_store_record(url: str, storage: StorageOptions | None) -> SourceFile | None:
    """A Zarr store (a folder with Zarr metadata at its root) as one source, or None.

    Its identity is the total size and the newest modification time of its objects, so that
    any chunk or metadata rewritten inside it counts as a change.
    """
    if is_local(url):
        folder = url[len("file://") :]
        if not any(os.path.isfile(os.path.join(folder, m)) for m in ZARR_METADATA):
            return None
        size, newest_ns = 0, None
        for _, st in _walk_local(folder, recursive=True, problems={}, base_url=url):
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
                ns = st.st_mtime_ns
                newest_ns = ns if newest_ns is None or ns > newest_ns else newest_ns
        mtime = _local_mtime(0 if newest_ns is None else newest_ns)
        return SourceFile(url=url, size=size, mtime=mtime, etag=None)
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


# Listed local files are read through obstore (scans) and named in URLs: names obstore cannot
# express are refused by name at listing time instead of failing deep inside a scan.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _local_mtime(ns: int) -> str:
    """A local file's modification time as obstore reports it (UTC, microseconds): ledgers
    written from obstore listings compare equal."""
    return (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: Files made records at a time by a local listing.
_BATCH = 4096


def _local_mtimes(ns: list[int], *, batch: int = _BATCH) -> list[str]:
    """:func:`_local_mtime` of each of ``ns``, formatted by NumPy a batch at a time (a
    listing formats one per file: a quarter of the time of one ``datetime`` each)."""
    import numpy as np

    out: list[str] = []
    for i in range(0, len(ns), batch):
        try:
            us = np.array(ns[i : i + batch], dtype=np.int64) // 1000
        except OverflowError:  # beyond the year 2262: datetime's own range (or its error)
            out += [_local_mtime(n) for n in ns[i : i + batch]]
            continue
        text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
        # datetime.isoformat() leaves out a fraction of zero microseconds.
        for j in np.flatnonzero(us % 1_000_000 == 0).tolist():
            text[j] = text[j][:-7]
        out += [t + "+00:00" for t in text]
    return out


def _walk_local(
    root: str, *, recursive: bool, problems: dict[str, str], base_url: str, regex: Any = None
) -> Iterator[tuple[str, os.stat_result]]:
    """``(relative path, stat)`` of the entries under ``root`` that ``regex`` matches (all when
    None), folders too, following symbolic links but never into a folder twice (links to an
    ancestor make loops). Streams: no stat result is kept once yielded.

    Only the entries a caller can use are stat-ed: matching files, and folders (to recurse and
    to recognise a folder seen already); a file the glob does not match costs no system call.
    Folders are visited in name order, so which of two links to one folder is listed does not
    depend on the order the operating system returns entries in.

    Entries matching ``regex`` that cannot be listed or followed go into ``problems`` (URL ->
    reason) instead.
    """
    seen: set[tuple[int, int]] = set()
    top = os.stat(root)
    seen.add((top.st_dev, top.st_ino))
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        folders: list[tuple[str, str, bool]] = []  # (name, path, wanted)
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    rel = prefix + entry.name
                    wanted = regex is None or regex.match(rel) is not None
                    if _is_folder(entry):
                        folders.append((entry.name, entry.path, wanted))
                        continue
                    if not wanted:
                        continue
                    st: os.stat_result | None
                    try:  # inline: once per file
                        st = os.stat(entry.path)
                    except OSError:
                        st = _stat_entry(entry.path, rel, base_url, problems)
                        if st is None:
                            continue
                    if stat.S_ISDIR(st.st_mode):  # replaced by a folder since the listing
                        folders.append((entry.name, entry.path, wanted))
                        continue
                    yield rel, st
        except FileNotFoundError:
            if prefix:
                continue  # deleted since its parent was listed
            raise
        except OSError as exc:
            if prefix:
                problems[_join(base_url, prefix.rstrip("/"))] = (
                    f"the folder cannot be listed ({exc.strerror})"
                )
                continue
            raise
        for name, path, wanted in sorted(folders):
            rel = prefix + name
            st = _stat_entry(path, rel, base_url, problems if wanted else None)
            if st is None:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue  # a link back to a folder listed already
            seen.add(key)
            if recursive:
                stack.append((path, rel + "/"))
            if wanted:
                yield rel, st


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry is a folder: from the listing itself (no system call), except
    for a symbolic link, which is followed. False when it cannot be (a dangling link, a loop):
    then it is stat-ed as a file, and reported as one that cannot be read."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _stat_entry(
    path: str, rel: str, base_url: str, problems: dict[str, str] | None
) -> os.stat_result | None:
    """``os.stat`` of a listed entry (following symbolic links), or None when it cannot be
    read (recorded in ``problems`` when given: the entry is one the glob matches) or is gone
    (deleted since the folder was listed: not there, so not listed, as if listed a moment
    later; a dangling symbolic link is still there, and reported)."""
    try:
        return os.stat(path)
    except FileNotFoundError as exc:
        if problems is not None and os.path.lexists(path):
            problems[_join(base_url, rel)] = (
                f"cannot be read (a symbolic link that cannot be followed): {exc.strerror}"
            )
        return None
    except OSError as exc:
        if problems is not None:
            link = " (a symbolic link that cannot be followed)" if os.path.islink(path) else ""
            problems[_join(base_url, rel)] = f"cannot be read{link}: {exc.strerror}"
        return None


def _list_local_glob(
    pattern_url: str, base_url: str, pattern: str, problems: dict[str, str]
) -> list[SourceFile]:
    """:func:`_list_glob` on a local folder, with the operating system's own listing: one
    odd entry (a symbolic link loop, a name obstore cannot express) must not hide the rest.

    Each entry becomes its :class:`SourceFile` as it is listed (no stat result or directory
    entry is held for the whole listing)."""
    root = base_url[len("file://") :] or "/"
    if not os.path.isdir(root):
        raise SourceError(
            f"the folder {base_url!r} of the glob {pattern_url!r} does not exist; check "
            "source.urls",
            url=pattern_url,
        )
    regex = glob_to_regex(pattern)
    recursive = "/" in pattern or "**" in pattern
    files: list[SourceFile] = []
    # The files listed but not made records yet: a batch at a time, so that the times are
    # formatted together (see _local_mtimes) without holding every file's stat numbers.
    urls: list[str] = []
    sizes: list[int] = []
    mtimes_ns: list[int] = []
    stores: list[SourceFile] = []
    base = base_url if base_url.endswith("/") else base_url + "/"
    walk = _walk_local(root, recursive=recursive, problems=problems, base_url=base_url, regex=regex)
    try:
        for rel, st in walk:
            mode = st.st_mode
            url = base + rel
            if stat.S_ISREG(mode):
                if _CONTROL.search(rel):
                    problems[url] = _control_reason(rel)
                elif not _is_utf8(url):
                    problems[_escaped(url)] = _NOT_UTF8
                else:
                    urls.append(url)
                    sizes.append(st.st_size)
                    mtimes_ns.append(st.st_mtime_ns)
                    if len(urls) == _BATCH:
                        files += _source_files(urls, sizes, _local_mtimes(mtimes_ns))
                        urls, sizes, mtimes_ns = [], [], []
            elif stat.S_ISDIR(mode):
                record = _zarr_store_record(url, None)
                if record is not None and not _is_utf8(url):
                    problems[_escaped(url)] = _NOT_UTF8
                elif record is not None:
                    stores.append(record)
            else:
                problems[url] = "is not a regular file"
    except OSError as exc:
        raise SourceError(
            f"the folder {base_url!r} of the glob {pattern_url!r} cannot be listed "
            f"({exc.strerror}); check source.urls and its permissions",
            url=pattern_url,
        ) from exc
    files += _source_files(urls, sizes, _local_mtimes(mtimes_ns))
    if stores:
        inside = tuple(f.url + "/" for f in stores)
        for url in [u for u in problems if u.startswith(inside)]:
            del problems[url]
        files = [f for f in files if not f.url.startswith(inside)]
        files += stores
    # URLs are unique: ordering by URL is the records' own order, without comparing records.
    files.sort(key=_url_of)
    return files


# A listing builds one SourceFile per file (10,000s at a time): the frozen dataclass's
# __init__ sets each field through object.__setattr__, several times slower than setting its
# slots directly, which is what this does (the same frozen record afterwards).
_SET_URL, _SET_SIZE, _SET_MTIME, _SET_ETAG = (
    SourceFile.__dict__[name].__set__ for name in ("url", "size", "mtime", "etag")
)


def _source_files(urls: list[str], sizes: list[int], mtimes: list[str]) -> list[SourceFile]:
    """``SourceFile(url, size, mtime)`` for each row, built without ``__init__``."""
    out: list[SourceFile] = []
    append = out.append
    new = object.__new__
    for url, size, mtime in zip(urls, sizes, mtimes, strict=True):
        f = new(SourceFile)
        _SET_URL(f, url)
        _SET_SIZE(f, size)
        _SET_MTIME(f, mtime)
        _SET_ETAG(f, None)
        append(f)
    return out


def _url_of(f: SourceFile) -> str:
    return f.url


#: Why a name that is not UTF-8 (a Latin-1 ``caf\\xe9.nc``: Python lists it with surrogates)
#: cannot be ingested: URLs, references and the ledger hold text.
_NOT_UTF8 = (
    "its name is not valid UTF-8 (shown with \\x escapes), which URLs, virtual references and "
    "the ingest ledger cannot hold; rename the file (e.g. convmv -f latin1 -t utf8)"
)


def _is_utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _escaped(url: str) -> str:
    """``url`` with the bytes of a name that is not UTF-8 as ``\\xNN`` text."""
    return url.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _shown(url: str) -> str:
    """``url`` for a message: quoted when it holds control characters (a newline)."""
    return repr(url) if _CONTROL.search(url) else url


def _control_reason(name: str) -> str:
    char = _CONTROL.search(name)
    return (
        f"its name holds the control character {char.group() if char else ''!r}, which the "
        "object-store layer icepipe reads files through cannot express; rename the file"
    )


def _head(url: str, storage: StorageOptions | None) -> SourceFile:
    scheme = scheme_for(url)
    if not scheme.remote:
        return _head_local(url)
    try:
        store, name = store_and_path(url, storage)
        meta = obstore.head(store, name)
    except ConfigError:
        raise
    except Exception as exc:
        if not is_not_found(exc):
            raise access_error(exc, url, "read") from exc
        record = _zarr_store_record(url, storage) if scheme.object_store else None
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
    root = path.rsplit("/", 1)[0]
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        missing = "" if os.path.isdir(root or "/") else f" (its folder {root!r} does not exist)"
        raise SourceError(
            f"{url}: file not found{missing}; fix or remove it in source.urls", url=url
        ) from exc
    except OSError as exc:
        link = " (a symbolic link that cannot be followed)" if os.path.islink(path) else ""
        raise SourceError(
            f"{url}: cannot be read{link}: {exc.strerror}; check the path and permissions",
            url=url,
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{url}: is not a regular file; fix source.urls", url=url)
    if _CONTROL.search(path):
        raise SourceError(f"{_shown(url)}: {_control_reason(path)}", url=url)
    if not _is_utf8(url):
        raise SourceError(f"{_escaped(url)}: {_NOT_UTF8}", url=_escaped(url))
    return SourceFile(url=url, size=st.st_size, mtime=_local_mtime(st.st_mtime_ns))
