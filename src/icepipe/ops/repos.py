"""Repositories by name: ``icepipe repo create|list|info|delete`` over the catalog, and the
resolution of every command's ``REPO`` argument (a path, a URL or ``catalog:org/name``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from icepipe import repository
from icepipe.catalog import CATALOG_PREFIX, CatalogEntry, check_name, edit_catalog, load_catalog
from icepipe.errors import ConfigError, IcepipeError
from icepipe.storage import (
    StorageOptions,
    is_local,
    parse_repo_config,
    parse_storage_options,
    refuse_credentials_in_url,
)

__all__ = [
    "RepoSummary",
    "create_repo",
    "delete_repo",
    "list_repos",
    "open_location",
    "repo_info",
    "resolve_location",
]


def resolve_location(arg: str) -> CatalogEntry:
    """What a command's ``REPO`` argument names: ``catalog:org/name`` is looked up in the
    catalog; anything else is a location (a local path, ``s3://...``) with default storage
    options (credentials from the environment's standard chain).

    Raises
    ------
    ConfigError
        The catalog has no such entry.
    """
    if arg.startswith(CATALOG_PREFIX):
        return load_catalog().get(arg.removeprefix(CATALOG_PREFIX))
    return CatalogEntry(name="", url=arg)


def open_location(arg: str, *, create: bool = False) -> tuple[Any, CatalogEntry]:
    """Open the repository a ``REPO`` argument names (see :func:`resolve_location`).

    Raises
    ------
    RepoNotFoundError
        No repository there (and ``create`` is false).
    ConfigError, StorageError
        As for :func:`icepipe.repository.open_repo`.
    """
    entry = resolve_location(arg)
    repo = repository.open_repo(
        entry.url, create=create, storage=entry.storage, config=entry.config
    )
    return repo, entry


@dataclass(frozen=True)
class RepoSummary:
    """A catalog entry and what its repository holds (``exists`` is ``None`` when it could
    not be checked, e.g. without credentials; ``problem`` says why)."""

    name: str
    url: str
    description: str = ""
    exists: bool | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)
    storage: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


def _summary(entry: CatalogEntry, *, refs: bool) -> RepoSummary:
    # The names in *_env keys are not shown: they could be secrets pasted by mistake.
    storage = {
        k: "(set; not shown)" if k.endswith("_env") else v
        for k, v in asdict(entry.storage).items()
        if v not in (None, False)
    }
    base = RepoSummary(
        name=entry.name,
        url=entry.url,
        description=entry.description,
        storage=storage,
        config=dict(entry.config),
    )
    try:
        repo = repository.open_repo(entry.url, storage=entry.storage, config=entry.config)
    except repository.RepoNotFoundError:
        return RepoSummary(**{**asdict(base), "exists": False})
    except IcepipeError as exc:
        return RepoSummary(**{**asdict(base), "problem": str(exc)})
    if not refs:
        return RepoSummary(**{**asdict(base), "exists": True})
    all_refs = repository.list_refs(repo)
    return RepoSummary(
        **{
            **asdict(base),
            "exists": True,
            "branches": {r.name: r.snapshot_id for r in all_refs if r.kind == "branch"},
            "tags": {r.name: r.snapshot_id for r in all_refs if r.kind == "tag"},
            "containers": repository.container_urls(repo),
        }
    )


def list_repos(*, check: bool = True) -> list[RepoSummary]:
    """Every catalog entry, sorted by name (``check``: whether each repository exists)."""
    catalog = load_catalog()
    out = []
    for name in sorted(catalog.entries):
        entry = catalog.entries[name]
        out.append(_summary(entry, refs=False) if check else RepoSummary(name, entry.url))
    return out


def repo_info(arg: str) -> RepoSummary:
    """A catalog entry (or a plain location) with its branches, tags and containers."""
    if not arg.startswith(CATALOG_PREFIX) and "://" not in arg and arg.count("/") == 1:
        # `icepipe repo info org/name`: the catalog is what repo commands are about.
        catalog = load_catalog()
        if arg in catalog.entries:
            return _summary(catalog.entries[arg], refs=True)
    return _summary(resolve_location(arg), refs=True)


def create_repo(
    name: str,
    url: str,
    *,
    description: str = "",
    storage: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    exists_ok: bool = False,
) -> tuple[CatalogEntry, bool]:
    """Register ``name`` in the catalog and create its repository; return the entry and
    whether a repository was created (``False``: an existing one was registered).

    Raises
    ------
    ConfigError
        The name is taken, or a repository already exists at ``url`` and ``exists_ok`` is
        false, or the options are invalid.
    """
    check_name(name)
    refuse_credentials_in_url(url, "URL")
    options = parse_storage_options(storage or {}, "storage.") if storage else StorageOptions()
    settings = parse_repo_config(config, "config") if config else {}
    location = url
    if is_local(url):
        from pathlib import Path

        location = str(Path(url.removeprefix("file://")).expanduser().absolute())
    entry = CatalogEntry(
        name=name, url=location, description=description, storage=options, config=settings
    )
    with edit_catalog() as entries:
        if name in entries:
            raise ConfigError(
                f"{name!r} is already in the catalog (at {entries[name].url!r}); choose another "
                f"name, or `icepipe repo delete {name} --forget` first"
            )
        try:
            repository.open_repo(location, storage=options, config=settings)
            existed = True
        except repository.RepoNotFoundError:
            existed = False
        if existed and not exists_ok:
            raise ConfigError(
                f"a repository already exists at {location!r}; add --exists-ok to register it "
                f"as {name!r}"
            )
        if not existed:
            repository.open_repo(location, create=True, storage=options, config=settings)
        entries[name] = entry
    return entry, not existed


def delete_repo(name: str, *, confirm: str | None, forget: bool = False) -> CatalogEntry:
    """Remove ``name`` from the catalog and (unless ``forget``) delete all of its data.

    ``confirm`` must repeat ``name``: deleting a repository deletes every branch, tag and
    snapshot, and every native chunk, with no way back. Virtual references' source files are
    not touched.

    Raises
    ------
    ConfigError
        No such entry, the confirmation does not repeat the name, or the repository is in an
        object store (delete its prefix with the storage's own tools, then ``--forget``).
    """
    check_name(name)
    entry = load_catalog().get(name)
    if not forget and confirm != name:
        raise ConfigError(
            f"deleting {name!r} deletes all of its data ({entry.url}), with no way back; "
            f"repeat its name to confirm: --yes-delete-all-data {name} (or --forget to only "
            "remove it from the catalog)",
            field="--yes-delete-all-data",
        )
    with edit_catalog() as entries:
        if name not in entries:
            raise ConfigError(f"{name!r} was removed from the catalog meanwhile")
        if not forget:
            repository.delete_local_repo(entry.url)
        del entries[name]
    return entry
