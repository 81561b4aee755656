"""Open and create Icechunk repositories; configure, record and authorize virtual chunk containers.

Repositories live on a local disk or in an object store (``s3://``, ``gs://``, ``az://``); each
scheme's Icechunk objects come from :mod:`icepipe.repository.schemes`. For every virtual chunk
container it configures, icepipe records in the repository's metadata how it chose to reach
the container's store (:func:`container_options` reads it back); containers configured before
that record existed are read through Icechunk's typed store configuration instead.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import stat
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import icechunk

from icepipe.errors import ConfigError, StorageError
from icepipe.faults import storage_failure
from icepipe.locks import lock, unlock
from icepipe.repository.grids import enable_rectilinear
from icepipe.repository.schemes import EnvS3Credentials, bucket_and_prefix, icechunk_scheme
from icepipe.storage import StorageOptions, find_scheme, is_local

__all__ = [
    "CONTAINER_RECORD",
    "EnvS3Credentials",
    "RepoNotFoundError",
    "commit_lock",
    "container_credentials",
    "container_options",
    "container_prefixes",
    "in_memory",
    "local_path",
    "location_of",
    "open_repo",
    "repo_config",
    "storage_for",
]

os.environ.setdefault("ICECHUNK_LOG", "error")
# Local storage logs a "not safe for concurrent commits" warning per open: icepipe serialises
# local commits itself (see commit_lock), so the warning is noise for our users.
icechunk.set_logs_filter("error")


class RepoNotFoundError(ConfigError):
    """No Icechunk repository exists at the given location."""


# Where open_repo opened each repository from: Icechunk's Storage does not tell its location.
_LOCATIONS: weakref.WeakKeyDictionary[icechunk.Repository, str] = weakref.WeakKeyDictionary()


def location_of(repo: icechunk.Repository) -> str | None:
    """The location :func:`open_repo` opened ``repo`` from (as it was given: a path, ``file://``,
    ``s3://``, ... URL), or ``None`` for a repository icepipe did not open (built with
    ``icechunk.Repository.create``/``open``, or reopened since)."""
    return _LOCATIONS.get(repo)


def local_path(repo: icechunk.Repository) -> str | None:
    """The folder of a repository on local-filesystem storage, ``None`` for any other storage.

    For a repository :func:`open_repo` opened, the location icepipe
    opened it from. Icechunk's ``Storage`` offers no accessor for its kind or location, so a
    repository the caller built (``icechunk.Repository.create(icechunk.local_filesystem_storage(
    path))``) is told by the description Icechunk prints for its storage.

    Raises
    ------
    StorageError
        The repository was built outside icepipe and its storage's description does not say
        whether it is local, or where.
    """
    location = location_of(repo)
    if location is not None:
        return str(_local_path(location)) if is_local(location) else None
    kind, path = _described_storage(repo)
    if kind is not None and kind != "local filesystem":
        return None
    if kind is None or path is None:
        # Committing a local repository without the lock would silently lose racing commits.
        raise StorageError(
            f"cannot tell the kind and location of this repository's storage from "
            f"{repr(repo.storage)!r} (did icechunk change its Storage repr?); pass the repository "
            "as a path instead"
        )
    return path


def in_memory(repo: icechunk.Repository) -> bool:
    """Whether ``repo`` lives in this process's memory (icepipe itself never opens such)."""
    return location_of(repo) is None and _described_storage(repo)[0] == "in-memory"


_STORAGE_TYPE = re.compile(r"^\s*type:\s*(.+?)\s*$", re.MULTILINE)
_LOCAL_PATH = re.compile(r"^\s*path:\s*(.+?)\s*$", re.MULTILINE)


def _described_storage(repo: icechunk.Repository) -> tuple[str | None, str | None]:
    """The kind and the path of a repository's storage as its ``repr`` describes them (only for
    repositories icepipe did not open: it knows where it opened the others)."""
    text = repr(repo.storage)
    kind, path = _STORAGE_TYPE.search(text), _LOCAL_PATH.search(text)
    return (kind.group(1) if kind else None, path.group(1) if path else None)


def storage_for(repo: str, storage: StorageOptions | None = None) -> icechunk.Storage:
    """Icechunk storage for a repository location.

    ``repo`` is a local path or ``file://`` URL, ``s3://bucket/prefix`` (reached as
    ``storage`` says), or ``gs://bucket/prefix`` / ``az://container/prefix`` (passed to
    ``icechunk.gcs_storage`` / ``icechunk.azure_storage`` with credentials from the
    environment; ``AZURE_STORAGE_ACCOUNT_NAME`` names the Azure account).

    Raises
    ------
    ConfigError
        The location is not supported, has no prefix, or names missing credential variables.
    """
    options = storage or StorageOptions()
    if is_local(repo):
        return icechunk.local_filesystem_storage(str(_local_path(repo)))
    bucket, prefix = bucket_and_prefix(repo)
    scheme = find_scheme(repo)
    if scheme is None or not scheme.holds_repositories:
        raise ConfigError(
            f"unsupported repository location {repo!r}; use a local path, s3://, gs:// or az://",
            field="target.repo",
        )
    return icechunk_scheme(scheme).storage(bucket, prefix, options)


def repo_config(
    settings: Mapping[str, Any] | None, *, split: bool = True, level: bool = True
) -> icechunk.RepositoryConfig:
    """An ``icechunk.RepositoryConfig`` from validated ``target.config`` settings.

    Unset settings stay ``None``, so Icechunk's defaults (and what a repository persisted)
    apply, except icepipe's manifest settings (:data:`MANIFEST_SPLIT_CHUNKS` unless
    ``split`` is false or the settings split otherwise, :data:`LOCATION_COMPRESSION_MIN_CHUNKS`)
    and its metadata compression level (:data:`METADATA_COMPRESSION_LEVEL` unless ``level`` is
    false or the settings give ``compression``).
    The storage's conditional-write settings are never touched.

    Raises
    ------
    ConfigError
        Icechunk refuses a value.
    """
    s = dict(settings or {})
    cfg = icechunk.RepositoryConfig.default()
    try:
        for key in (
            "inline_chunk_threshold_bytes",
            "get_partial_values_concurrency",
            "max_concurrent_requests",
        ):
            if key in s:
                setattr(cfg, key, s[key])
        if "compression" in s:
            cfg.compression = icechunk.CompressionConfig(level=s["compression"].get("level"))
        elif level:
            cfg.compression = icechunk.CompressionConfig(level=METADATA_COMPRESSION_LEVEL)
        if "caching" in s:
            cfg.caching = icechunk.CachingConfig(**s["caching"])
        if "storage" in s:
            st = dict(s["storage"])
            cfg.storage = icechunk.StorageSettings(
                concurrency=icechunk.StorageConcurrencySettings(**st.pop("concurrency"))
                if "concurrency" in st
                else None,
                retries=icechunk.StorageRetriesSettings(**st.pop("retries"))
                if "retries" in st
                else None,
                timeouts=icechunk.StorageTimeoutSettings(**st.pop("timeouts"))
                if "timeouts" in st
                else None,
                **st,
            )
        cfg.manifest = _manifest_config(s.get("manifest", {}), split=split)
    except (TypeError, ValueError, icechunk.IcechunkError) as exc:
        raise ConfigError(f"Icechunk refuses these settings: {exc}", field="target.config") from exc
    return cfg


def _manifest_config(m: Mapping[str, Any], *, split: bool) -> icechunk.ManifestConfig:
    preload = None
    if m.get("preload") is False:
        preload = icechunk.ManifestPreloadConfig(
            preload_if=icechunk.ManifestPreloadCondition.false()
        )
    elif "preload" in m:
        p = m["preload"]
        preload = icechunk.ManifestPreloadConfig(
            max_total_refs=p.get("max_total_refs"),
            max_arrays_to_scan=p.get("max_arrays_to_scan"),
            preload_if=icechunk.ManifestPreloadCondition.name_matches(p["names"])
            if "names" in p
            else None,
        )
    splitting = (
        icechunk.ManifestSplittingConfig.from_dict(
            {
                icechunk.ManifestSplitCondition.AnyArray(): {
                    icechunk.ManifestSplitDimCondition.Any(): MANIFEST_SPLIT_CHUNKS
                }
            }
        )
        if split
        else None
    )
    if "splitting" in m:
        sizes: dict[Any, Any] = {}
        for rule in m["splitting"]:
            cond = (
                icechunk.ManifestSplitCondition.name_matches(rule["arrays"])
                if "arrays" in rule
                else icechunk.ManifestSplitCondition.AnyArray()
            )
            sizes[cond] = {
                (
                    icechunk.ManifestSplitDimCondition.Any()
                    if dim == "*"
                    else icechunk.ManifestSplitDimCondition.DimensionName(dim)
                ): n
                for dim, n in rule["dims"].items()
            }
        splitting = icechunk.ManifestSplittingConfig.from_dict(sizes)
    return icechunk.ManifestConfig(
        preload=preload,
        splitting=splitting,
        virtual_chunk_location_compression=icechunk.ManifestVirtualChunkLocationCompressionConfig(
            min_num_chunks=LOCATION_COMPRESSION_MIN_CHUNKS
        ),
    )


#: Manifests hold at most this many chunks along any dimension, unless
#: ``target.config.manifest.splitting`` says otherwise. Icechunk's commit peaks in the
#: committing process at ~570-600 B a reference of an unsplit manifest, at ~200-300 B with
#: manifests split so (measured alone: 20,000 virtual references 566 against 295 B,
#: 100,000: 606 against 203 B); and an append rewrites only the array's last manifest, not all
#: of it. Repositories written before get it on their next writes (Icechunk reads manifests
#: of any split).
MANIFEST_SPLIT_CHUNKS = 5_000


#: Icechunk compresses the virtual chunk locations of a manifest of at least ``min_num_chunks``
#: references (default 1,000) with a zstd dictionary trained at each commit, which costs the
#: committing process a 4-7 MiB transient, whatever the number of references, for no smaller
#: a manifest (the manifest file is compressed whole anyway: 10.0 against 10.4 bytes a reference
#: at 2,000 references of 1,000 files, 9.7 against 9.5 at 20,000). icepipe sets the threshold
#: to its maximum (a 16-bit number): benchmarks/memory.py's commit of 1,000 files.
LOCATION_COMPRESSION_MIN_CHUNKS = 65535


#: The zstd level Icechunk compresses its metadata files with (manifests, snapshots,
#: transaction logs; Icechunk's default is 3), unless ``target.config.compression`` says
#: otherwise or the repository persisted a level of its own. Level 3's compressor tables take
#: the committing process ~0.9 MiB at each commit, whatever its size, against some 50 KiB at
#: level 1 (``benchmarks/memory.py``, 1,000 files: the commit's growth 1.4-1.5 MiB against
#: 0.5-0.6 MiB), for metadata a few percent larger (2,000 references of 1,000 files: manifest
#: 17.4 against 18.4 KB, snapshot 8.7 against 8.9 KB, transaction log 11.6 against 10.1 KB).
#: Decompression, what readers pay, costs the same at any level.
METADATA_COMPRESSION_LEVEL = 1


def _local_path(repo: str) -> Path:
    # The storage and its lock must agree on the folder, wherever the process runs from.
    path = repo[len("file://") :] if repo.startswith("file://") else repo
    return Path(path).expanduser().absolute()


@contextmanager
def commit_lock(repo: str) -> Iterator[None]:
    """Hold an exclusive OS lock for ``repo`` (local repositories only; a no-op otherwise).

    Icechunk's local-filesystem storage silently loses commits that race each other (see
    ``shared/ICECHUNK_NOTES.md``), and creating a repository twice at one location is unsafe,
    so icepipe takes this lock around every create and commit of a local repository. The lock is
    a sibling file ``.<name>.icepipe.lock``: Icechunk refuses to create a repository in a
    folder that already holds files. Object stores need no lock: Icechunk commits there with
    conditional writes (``If-Match``/``If-None-Match``), so of racing commits exactly one wins
    and the others fail with a conflict (tested against a real S3 server).

    A lock file deleted while held (``rm .*.icepipe.lock``) lets no second holder in: after
    locking, the file must still be the one at the path, and the parent folder is locked too.

    Raises
    ------
    ConfigError
        The lock cannot be taken for good (permissions, a read-only file system, a file where
        the folder should be): see :func:`icepipe.faults.storage_failure`.
    StorageError
        It cannot be taken for now (e.g. a full disk).
    """
    if not is_local(repo):
        yield
        return
    path = _local_path(repo)
    lock_path = path.parent / f".{path.name}.icepipe.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = _locked(lock_path)
    except OSError as exc:
        raise storage_failure(
            exc, f"cannot take the commit lock {str(lock_path)!r}", where="target.repo"
        ) from exc
    folder: int | None = None
    try:
        folder = _lock_folder(path.parent)
        yield
    finally:
        if folder is not None:
            os.close(folder)  # releases its flock
        unlock(fh.fileno())
        fh.close()


def _lock_folder(folder: Path) -> int | None:
    """Also hold an exclusive ``flock`` on the repository's parent folder, taken after the
    lock file's: a run that finds the lock file deleted while another run holds it (e.g. by
    ``rm .*.icepipe.lock``) creates a new one and locks it, but still waits here. Best effort:
    file systems that cannot lock folders (some network mounts) keep the lock file alone."""
    directory = getattr(os, "O_DIRECTORY", None)
    if directory is None:
        return None  # Windows opens no folders: the lock file alone
    try:
        fd = os.open(folder, os.O_RDONLY | directory)
    except OSError:
        return None
    try:
        lock(fd)
    except OSError:
        os.close(fd)
        return None
    return fd


def _locked(lock_path: Path) -> IO[str]:
    """Open ``lock_path`` and hold an exclusive ``flock`` on the file that is at that path.

    A lock held on a file someone deleted (or replaced) meanwhile protects nothing: the next
    run opens a new file at the path and locks that one. So after locking, check that the
    path still names the locked file, and start again if not.
    """
    while True:
        fh = open(lock_path, "a+")  # noqa: SIM115 - held until the caller's block ends
        try:
            lock(fh.fileno())
            held = os.fstat(fh.fileno())
            try:
                now = os.stat(lock_path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fh
        except BaseException:
            fh.close()
            raise
        fh.close()  # releases the lock on the orphaned file


def container_prefixes(urls: Iterable[str]) -> list[str]:
    """The minimal set of virtual chunk container prefixes covering ``urls`` (their folders).

    ``urls`` are reference URLs (:func:`~icepipe.storage.reference_url`). Icechunk matches a
    prefix holding percent-escapes against nothing when it reads (its writes accept it), so a
    folder whose name needed escaping is covered by the nearest folder above it that did not.
    """
    folders = sorted({_plain_folder(u) for u in urls})
    out: list[str] = []
    for folder in folders:
        if not any(folder.startswith(p) for p in out):
            out.append(folder)
    return out


def _plain_folder(url: str) -> str:
    folder = url.rsplit("/", 1)[0] + "/"
    if "%" in folder:
        folder = folder[: folder.rindex("/", 0, folder.index("%")) + 1]
    return folder


#: Repository metadata key (followed by the container's URL prefix) of what icepipe recorded
#: about how it reaches a virtual chunk container (one key per container: concurrent runs
#: adding different containers do not overwrite each other's records).
CONTAINER_RECORD = "icepipe.container:"


def _container(prefix: str, source: StorageOptions | None = None) -> icechunk.VirtualChunkContainer:
    """The virtual chunk container for a source location, reached as ``source`` says.

    Only how to reach the store is persisted (endpoint, region, addressing, anonymous);
    credentials are given by each reader when it opens the repository.
    """
    scheme = find_scheme(prefix)
    if scheme is None:
        raise ConfigError(f"virtual references to {prefix!r} are not supported")
    store = icechunk_scheme(scheme).container_store(prefix, source or StorageOptions())
    return icechunk.VirtualChunkContainer(prefix, store)


def _records(prefixes: Iterable[str], source: StorageOptions | None) -> dict[str, Any]:
    """The repository metadata recording how icepipe reaches the containers of ``prefixes``."""
    options = source or StorageOptions()
    return {
        CONTAINER_RECORD + p: scheme.container_reach(options)
        for p in prefixes
        if (scheme := find_scheme(p)) is not None
    }


def _reach(
    container: icechunk.VirtualChunkContainer, recorded: Mapping[str, Any]
) -> dict[str, Any]:
    """How icepipe reaches ``container``: its record in the repository metadata ``recorded``,
    or (containers configured before icepipe kept records) what its store config says."""
    record = recorded.get(CONTAINER_RECORD + container.url_prefix)
    if isinstance(record, Mapping):
        return dict(record)
    scheme = find_scheme(container.url_prefix)
    return icechunk_scheme(scheme).legacy_reach(container.store) if scheme else {}


def container_options(
    repo: icechunk.Repository,
    container: icechunk.VirtualChunkContainer,
    source: StorageOptions | None = None,
) -> StorageOptions:
    """How a reader with ``source`` options reaches ``container`` of ``repo``: the endpoint
    options icepipe recorded for it, with the reader's credential choice.

    Raises
    ------
    ConfigError
        The container's record is not one icepipe wrote.
    """
    options = source or StorageOptions()
    scheme = find_scheme(container.url_prefix)
    if scheme is None:  # not one icepipe configured: nothing recorded about it
        return options
    return scheme.reader_options(options, _reach(container, _read_records(repo)))


def _keeps_records(repo: icechunk.Repository) -> bool:
    """Whether ``repo`` has repository metadata (Icechunk format 2 on; format 1 repositories,
    written by Icechunk 1, are read and extended without records)."""
    return int(repo.spec_version) >= 2


def _read_records(repo: icechunk.Repository) -> dict[str, Any]:
    if not _keeps_records(repo):
        return {}
    return {k: v for k, v in repo.get_metadata().items() if k.startswith(CONTAINER_RECORD)}


def container_credentials(
    containers: Iterable[icechunk.VirtualChunkContainer],
    source: StorageOptions | None = None,
    recorded: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Authorize every container: local and HTTP need none; object stores get anonymous
    access (when icepipe recorded the container as anonymous, or ``source`` says so),
    credentials from the variables ``source`` names (read where chunks are fetched), or the
    environment's standard chain. ``recorded``: the repository's container records."""
    options = source or StorageOptions()
    creds: dict[str, Any] = {}
    for c in containers:
        scheme = find_scheme(c.url_prefix)
        if scheme is None:
            continue
        reach = _reach(c, recorded or {})
        anonymous = options.anonymous or bool(reach.get("anonymous", False))
        creds[c.url_prefix] = icechunk_scheme(scheme).credentials(
            dataclasses.replace(options, anonymous=anonymous)
        )
    return icechunk.containers_credentials(creds) if creds else {}


def _credentials(prefixes: Iterable[str], source: StorageOptions | None = None) -> dict[str, Any]:
    return container_credentials(
        [_container(p, source) for p in prefixes], source, _records(prefixes, source)
    )


def _splits(config: icechunk.RepositoryConfig | None) -> bool:
    return bool(config and config.manifest and config.manifest.splitting is not None)


def _existing_prefixes(config: icechunk.RepositoryConfig | None) -> list[str]:
    if config is None or not config.virtual_chunk_containers:
        return []
    return [c.url_prefix for c in config.virtual_chunk_containers.values()]


def _existing_containers(config: icechunk.RepositoryConfig | None) -> list[Any]:
    if config is None or not config.virtual_chunk_containers:
        return []
    return list(config.virtual_chunk_containers.values())


def _create_remote(
    storage: icechunk.Storage,
    config: icechunk.RepositoryConfig,
    credentials: dict[str, Any],
    records: dict[str, Any],
) -> None:
    """Create a repository in an object store; losing a creation race to another run is fine."""
    try:
        created = icechunk.Repository.create(
            storage, config=config, authorize_virtual_chunk_access=credentials
        )
    except icechunk.IcechunkError:
        if not icechunk.Repository.exists(storage):
            raise
        return  # the winner records its containers
    if records:
        created.update_metadata(records)


def _create_in_place(
    repo: str,
    config: icechunk.RepositoryConfig,
    containers: Sequence[str],
    source_storage: StorageOptions | None = None,
) -> None:
    """Create the repository beside ``repo``, then rename it into place (hold ``commit_lock``).

    Icechunk writes the root snapshot before the ``repo`` file that makes a repository exist,
    and never creates one where files already are: a process killed in between would leave a
    folder that no later run can open or create. A rename is atomic, so the repository appears
    whole or not at all. Leftovers of killed creations are removed first: under the lock, no
    one else is creating this repository.
    """
    path = _local_path(repo)
    _check_creatable(repo, path)
    _remove_orphan_chunks(path)
    for stale in path.parent.glob(f".{path.name}.icepipe-creating-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = path.parent / f".{path.name}.icepipe-creating-{uuid.uuid4().hex}"
    created = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(staging)),
        config=config,
        authorize_virtual_chunk_access=_credentials(containers, source_storage),
    )
    records = _records(containers, source_storage)
    if records:
        created.update_metadata(records)
    try:
        os.rename(staging, path)  # replaces an empty folder, never a non-empty one
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise storage_failure(
                exc, f"cannot create a repository at {repo!r}", where="target.repo"
            ) from exc
        raise ConfigError(
            f"cannot create a repository at {repo!r}: the folder holds files but no Icechunk "
            f"repository ({exc.strerror}); remove it, or point target.repo elsewhere"
        ) from exc


# Icechunk object names: 20 characters of Crockford's base32 (chunks/0123456789ABCDEFGHJK).
_OBJECT_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}$")


def _remove_orphan_chunks(path: Path) -> None:
    """Remove a folder holding nothing but Icechunk chunk objects (hold ``commit_lock``).

    A write task still running when a first run failed can finish after the run deleted the
    repository it created, and Icechunk's local storage creates ``chunks/`` again for it. No
    snapshot references those chunks (there is no repository), so they are removed rather
    than blocking every later run with "the folder holds files but no Icechunk repository".
    Anything else in the folder (a user's file, an ``.nc``) keeps it untouched.
    """
    try:
        entries = list(path.iterdir())
        chunks = [e for e in entries if e.name == "chunks" and e.is_dir()]
        if len(entries) != 1 or not chunks:
            return
        names = list(chunks[0].iterdir())
    except OSError:
        return  # not a folder, or unreadable: creation reports it
    if all(_OBJECT_ID.match(n.name) and n.is_file() for n in names):
        shutil.rmtree(path, ignore_errors=True)


def _check_creatable(repo: str, path: Path) -> None:
    """Refuse to create a repository where the user said no: a file, or an empty folder
    without write permission (the rename would replace it with a new, writable one; as root,
    permissions do not stop the rename, so the folder's mode is checked too)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(
            f"cannot create a repository at {repo!r}: it is a file, not a folder; point "
            "target.repo at a folder (it is created when absent)",
            field="target.repo",
        )
    if not os.access(path, os.W_OK) or not path.stat().st_mode & stat.S_IWUSR:
        raise ConfigError(
            f"cannot create a repository at {repo!r}: the folder is read-only; make it "
            "writable (chmod u+w) if the repository should go there, or point target.repo "
            "elsewhere",
            field="target.repo",
        )


# Adding containers to a repository's config is read-modify-write: when two runs add theirs
# at once, one may overwrite the other's. Each run re-reads until its own are persisted.
_CONFIG_UPDATE_TRIES = 8


def _create(
    repo: str,
    ic_storage: icechunk.Storage,
    new: icechunk.RepositoryConfig,
    containers: Sequence[str],
    source_storage: StorageOptions | None,
) -> None:
    """Create the repository with ``containers`` configured and recorded (hold the lock)."""
    for prefix in containers:
        new.set_virtual_chunk_container(_container(prefix, source_storage))
    creds = _credentials(containers, source_storage)
    if is_local(repo):
        _create_in_place(repo, new, containers, source_storage)
    else:
        _create_remote(ic_storage, new, creds, _records(containers, source_storage))


def _add_containers(
    repo: str,
    ic_storage: icechunk.Storage,
    containers: Sequence[str],
    source_storage: StorageOptions | None,
) -> icechunk.RepositoryConfig | None:
    """Add the containers of ``containers`` the repository lacks; its persisted config.

    Raises
    ------
    StorageError
        Other writers kept changing the config.
    """
    for _ in range(_CONFIG_UPDATE_TRIES):
        persisted = icechunk.Repository.fetch_config(ic_storage)
        existing = _existing_prefixes(persisted)
        missing = [p for p in containers if not any(p.startswith(e) for e in existing)]
        if not missing:
            return persisted
        with commit_lock(repo):
            updated = (
                icechunk.Repository.fetch_config(ic_storage) or icechunk.RepositoryConfig.default()
            )
            for prefix in missing:
                updated.set_virtual_chunk_container(_container(prefix, source_storage))
            opened = icechunk.Repository.open(ic_storage, config=updated)
            # The record first: a container without one is read as Icechunk configured it.
            if _keeps_records(opened):
                opened.update_metadata(_records(missing, source_storage))
            opened.save_config()
    raise StorageError(
        f"could not add the virtual chunk containers {missing} to the config of "
        f"{repo!r}: other writers kept changing it; retry"
    )


def open_repo(
    repo: str,
    *,
    create: bool = False,
    containers: Sequence[str] = (),
    storage: StorageOptions | None = None,
    source_storage: StorageOptions | None = None,
    config: Mapping[str, Any] | None = None,
) -> icechunk.Repository:
    """Open (or create) the repository at ``repo`` with every virtual chunk container authorized.

    Parameters
    ----------
    repo
        The repository location: a local path, ``s3://bucket/prefix``, ``gs://...``,
        ``az://...``.
    create
        Create the repository when it does not exist.
    containers
        Folder prefixes (``file://``, ``s3://``, ``http(s)://``, ...) that virtual references
        will point into. Missing ones are added to the repository's persisted config.
    storage
        How to reach the repository's object store (``target:`` options).
    source_storage
        How to reach the sources (``source.storage``): the containers of new prefixes are
        configured with it, and S3 containers are authorized with its credentials.
    config
        Validated ``target.config`` settings: persisted when the repository is created, and
        applied (not persisted) when an existing one is opened.

    Raises
    ------
    RepoNotFoundError
        No repository at ``repo`` and ``create`` is false.
    ConfigError
        Bad location, settings or credentials.
    StorageError
        The storage could not be read or written.
    """
    # Arrays on rectilinear grids (files of uneven length) need zarr's flag in every process
    # that opens them: this one, and the Dask workers it starts afterwards (environment).
    enable_rectilinear()
    ic_storage = storage_for(repo, storage)
    # Its storage settings (timeouts, retries) also bound the existence check: an endpoint
    # that accepts connections and never answers must fail, not hang.
    settings = repo_config(config)
    try:
        if not icechunk.Repository.exists(ic_storage, settings.storage):
            if not create:
                raise RepoNotFoundError(
                    f"no Icechunk repository at {repo!r}; check the path, or run a pipeline "
                    "that targets it to create it"
                )
            with commit_lock(repo):
                if not icechunk.Repository.exists(ic_storage, settings.storage):
                    _create(repo, ic_storage, repo_config(config), containers, source_storage)
        persisted = _add_containers(repo, ic_storage, containers, source_storage)
        # The repository's own splitting and compression level, when it persisted them.
        own_split = _splits(persisted) and "splitting" not in (config or {}).get("manifest", {})
        own_level = persisted is not None and persisted.compression is not None
        if own_split or own_level:
            settings = repo_config(config, split=not own_split, level=not own_level)
        opened = icechunk.Repository.open(ic_storage, config=settings)
        configured = _existing_containers(persisted)
        if configured:
            opened = opened.reopen(
                config=settings,
                authorize_virtual_chunk_access=container_credentials(
                    configured, source_storage, _read_records(opened)
                ),
            )
        _LOCATIONS[opened] = repo
        return opened
    except ConfigError:
        raise
    except (icechunk.IcechunkError, OSError) as exc:
        raise storage_failure(
            exc, f"cannot open the repository at {repo!r}", where="target.repo"
        ) from exc
