"""Open and create Icechunk repositories; configure and authorize virtual chunk containers."""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import icechunk

from icepipe.errors import ConfigError, StorageError

__all__ = [
    "RepoNotFoundError",
    "commit_lock",
    "container_prefixes",
    "open_repo",
    "storage_for",
]

os.environ.setdefault("ICECHUNK_LOG", "error")
# Local storage logs a "not safe for concurrent commits" warning per open: icepipe serialises
# local commits itself (see commit_lock), so the warning is noise for our users.
icechunk.set_logs_filter("error")


class RepoNotFoundError(ConfigError):
    """No Icechunk repository exists at the given location."""


def storage_for(repo: str) -> icechunk.Storage:
    """Icechunk storage for a repository location (a local path for now).

    Raises
    ------
    ConfigError
        The location is not supported.
    """
    if "://" in repo and not repo.startswith("file://"):
        raise ConfigError(f"only local repositories are supported for now; got {repo!r}")
    return icechunk.local_filesystem_storage(str(_local_path(repo)))


def _local_path(repo: str) -> Path:
    # The storage and its lock must agree on the folder, wherever the process runs from.
    path = repo[len("file://") :] if repo.startswith("file://") else repo
    return Path(path).expanduser().absolute()


@contextmanager
def commit_lock(repo: str) -> Iterator[None]:
    """Hold an exclusive OS lock for ``repo`` (local repositories only).

    Icechunk's local-filesystem storage silently loses commits that race each other (see
    ``shared/ICECHUNK_NOTES.md``), and creating a repository twice at one location is unsafe,
    so icepipe takes this lock around every create and commit of a local repository. The lock is
    a sibling file ``.<name>.icepipe.lock``: Icechunk refuses to create a repository in a
    folder that already holds files.
    """
    path = _local_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.icepipe.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def container_prefixes(urls: Iterable[str]) -> list[str]:
    """The minimal set of virtual chunk container prefixes covering ``urls`` (their folders)."""
    folders = sorted({u.rsplit("/", 1)[0] + "/" for u in urls})
    out: list[str] = []
    for folder in folders:
        if not any(folder.startswith(p) for p in out):
            out.append(folder)
    return out


def _container(prefix: str) -> icechunk.VirtualChunkContainer:
    if prefix.startswith("file://"):
        return icechunk.VirtualChunkContainer(
            prefix, icechunk.local_filesystem_store(prefix[len("file://") :])
        )
    raise ConfigError(f"virtual references to {prefix!r} are not supported yet")


def _credentials(prefixes: Iterable[str]) -> dict[str, Any]:
    creds: dict[str, Any] = {}
    for prefix in prefixes:
        if prefix.startswith("file://"):
            creds[prefix] = icechunk.credentials.LocalFileSystemAccess
    return icechunk.containers_credentials(creds) if creds else {}


def _existing_prefixes(config: icechunk.RepositoryConfig | None) -> list[str]:
    if config is None or not config.virtual_chunk_containers:
        return []
    return [c.url_prefix for c in config.virtual_chunk_containers.values()]


def _create_in_place(
    repo: str, config: icechunk.RepositoryConfig, containers: Sequence[str]
) -> None:
    """Create the repository beside ``repo``, then rename it into place (hold ``commit_lock``).

    Icechunk writes the root snapshot before the ``repo`` file that makes a repository exist,
    and never creates one where files already are: a process killed in between would leave a
    folder that no later run can open or create. A rename is atomic, so the repository appears
    whole or not at all. Leftovers of killed creations are removed first: under the lock, no
    one else is creating this repository.
    """
    path = _local_path(repo)
    for stale in path.parent.glob(f".{path.name}.icepipe-creating-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = path.parent / f".{path.name}.icepipe-creating-{uuid.uuid4().hex}"
    icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(staging)),
        config=config,
        authorize_virtual_chunk_access=_credentials(containers),
    )
    try:
        os.rename(staging, path)  # replaces an empty folder, never a non-empty one
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(
            f"cannot create a repository at {repo!r}: the folder holds files but no Icechunk "
            f"repository ({exc.strerror}); remove it, or point target.repo elsewhere"
        ) from exc


def open_repo(
    repo: str, *, create: bool = False, containers: Sequence[str] = ()
) -> icechunk.Repository:
    """Open (or create) the repository at ``repo`` with every virtual chunk container authorized.

    Parameters
    ----------
    repo
        The repository location.
    create
        Create the repository when it does not exist.
    containers
        ``file://`` folder prefixes that virtual references will point into. Missing ones are
        added to the repository's persisted config.

    Raises
    ------
    RepoNotFoundError
        No repository at ``repo`` and ``create`` is false.
    StorageError
        The storage could not be read or written.
    """
    storage = storage_for(repo)
    try:
        if not icechunk.Repository.exists(storage):
            if not create:
                raise RepoNotFoundError(
                    f"no Icechunk repository at {repo!r}; check the path, or run a pipeline "
                    "that targets it to create it"
                )
            with commit_lock(repo):
                if not icechunk.Repository.exists(storage):
                    config = icechunk.RepositoryConfig.default()
                    for prefix in containers:
                        config.set_virtual_chunk_container(_container(prefix))
                    _create_in_place(repo, config, containers)
        existing = _existing_prefixes(icechunk.Repository.fetch_config(storage))
        missing = [p for p in containers if not any(p.startswith(e) for e in existing)]
        if missing:
            with commit_lock(repo):
                config = (
                    icechunk.Repository.fetch_config(storage) or icechunk.RepositoryConfig.default()
                )
                for prefix in missing:
                    config.set_virtual_chunk_container(_container(prefix))
                icechunk.Repository.open(storage, config=config).save_config()
            existing = _existing_prefixes(icechunk.Repository.fetch_config(storage))
        return icechunk.Repository.open(
            storage, authorize_virtual_chunk_access=_credentials(existing)
        )
    except ConfigError:
        raise
    except icechunk.IcechunkError as exc:
        raise StorageError(f"cannot open the repository at {repo!r}: {exc}") from exc
