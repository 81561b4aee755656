"""Repositories by name: ``icepipe repo create|list|info|delete`` over the catalog, and the
resolution of every command's ``REPO`` argument (a path, a URL or ``catalog:org/name``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from icepipe import repository
from icepipe.catalog import (
    CATALOG_PREFIX,
    CatalogEntry,
    check_name,
    check_prefix,
    edit_catalog,
    load_catalog,
    resolve_repo,
)
from icepipe.errors import ConfigError, IcepipeError
from icepipe.storage import (
    StorageOptions,
    coerce_storage_options,
    is_local,
    parse_repo_config,
    refuse_credentials_in_url,
)

if TYPE_CHECKING:
    import icechunk

__all__ = [
    "RepoSummary",
    "create_repo",
    "delete_repo",
    "get_or_create_repo",
    "open_repo",
    "list_repos",
    "open_location",
    "repo_info",
    "resolve_location",
    "shown_storage",
]


def resolve_location(arg: str) -> CatalogEntry:
    """What a command's ``REPO`` argument names: ``catalog:org/name``, or a bare ``org/name``
    the catalog holds, is looked up in the catalog; anything else is a location (a local
    path, ``s3://...``) with default storage options (credentials from the environment's
    standard chain). See :func:`icepipe.catalog.resolve_repo`.

    Raises
    ------
    UnknownSchemeError
        ``arg`` starts with an unknown ``xxx:`` prefix.
    ConfigError
        The catalog has no such entry.
    """
    return resolve_repo(arg, where="REPO")


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


def shown_storage(entry: CatalogEntry) -> dict[str, Any]:
    """A repository's storage options as commands and pages show them: ``*_env`` options
    (credential variables) as ``"(set; not shown)"``, never their names nor values (a name
    could be a secret pasted by mistake)."""
    return {
        k: "(set; not shown)" if k.endswith("_env") else v
        for k, v in asdict(entry.storage).items()
        if v not in (None, False)
    }


def _summary(entry: CatalogEntry, *, refs: bool) -> RepoSummary:
    base = RepoSummary(
        name=entry.name,
        url=entry.url,
        description=entry.description,
        storage=shown_storage(entry),
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
    storage: StorageOptions | Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    exists_ok: bool = False,
) -> tuple[CatalogEntry, bool]:
    """Register ``name`` in the catalog and create its repository; return the entry and
    whether a repository was created (``False``: an existing one was registered).

    ``storage`` holds the object store's endpoint, region, addressing and the *names* of the
    environment variables with the credentials (the keys of a pipeline's ``target``); the
    catalog records exactly that, never a secret.

    Raises
    ------
    ConfigError
        The name is taken, or a repository already exists at ``url`` and ``exists_ok`` is
        false, or the options are invalid (storage options for a local path among them).
    """
    check_name(name)
    refuse_credentials_in_url(url, "URL")
    check_prefix(url, "URL")
    options = coerce_storage_options(storage, "storage")
    settings = parse_repo_config(dict(config), "config") if config else {}
    location = url
    if is_local(url) and not options.is_default:
        raise ConfigError(
            f"storage options apply to object-store repositories (s3://BUCKET/PREFIX), and "
            f"{url!r} is a local path; remove them",
            field="storage",
        )
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


def open_repo(
    name: str,
    *,
    storage: StorageOptions | Mapping[str, Any] | None = None,
    source_storage: StorageOptions | Mapping[str, Any] | None = None,
) -> icechunk.Repository:
    """Open a repository by name, like Arraylake's ``client.get_repo``: ``"org/name"`` or
    ``"catalog:org/name"`` from the catalog (its location, storage options and settings), or
    a location (a local path, ``s3://bucket/prefix``, ... reached with ``storage``).

    Every virtual chunk container the repository's config lists is authorized, with
    ``source_storage``'s credentials for object stores (as :func:`icepipe.open_dataset`).

    Parameters
    ----------
    name
        The catalog name or the location.
    storage
        How to reach a repository given as a location (ignored for catalog names: not
        allowed with them).
    source_storage
        Credentials for the sources that virtual references point into.

    Returns
    -------
    icechunk.Repository

    Raises
    ------
    RepoNotFoundError
        No repository there.
    UnknownSchemeError
        ``name`` starts with an unknown ``xxx:`` prefix.
    ConfigError
        No such catalog entry (the message lists the known ones), or bad options.

    Examples
    --------
    >>> repo = icepipe.open_repo("acme/era5")  # doctest: +SKIP
    >>> session = repo.readonly_session(branch="main")  # doctest: +SKIP
    """
    entry = resolve_repo(name, storage=coerce_storage_options(storage, "storage"), where="name")
    return repository.open_repo(
        entry.url,
        storage=entry.storage,
        config=entry.config,
        source_storage=coerce_storage_options(source_storage, "source_storage"),
    )


def get_or_create_repo(
    name: str,
    *,
    url: str | None = None,
    storage: StorageOptions | Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    description: str = "",
    source_storage: StorageOptions | Mapping[str, Any] | None = None,
) -> icechunk.Repository:
    """The catalog's repository ``name`` (``"org/name"``), created and registered at ``url``
    when the catalog does not hold it yet; like Arraylake's ``client.get_or_create_repo``.

    Parameters
    ----------
    name
        ``org/name`` (``catalog:org/name`` too).
    url
        Where to create the repository when ``name`` is new: a local path or
        ``s3://bucket/prefix`` (``gs://``, ``az://``). For a known name, it must be the
        entry's location (or ``None``).
    storage
        How to reach ``url``: ``endpoint``, ``region``, ``force_path_style``, ``allow_http``,
        ``anonymous``, ``access_key_id_env``, ``secret_access_key_env``,
        ``session_token_env`` (credential variable *names*; the catalog records them, never
        values). For a known name, must be ``None`` or the entry's.
    config
        Repository settings (``target.config`` keys) recorded with a new entry.
    description
        Recorded with a new entry.
    source_storage
        Credentials for the sources that virtual references point into.

    Returns
    -------
    icechunk.Repository

    Raises
    ------
    ConfigError
        ``name`` is new and ``url`` is missing; ``url`` or ``storage`` disagree with the
        existing entry; bad name or options.
    StorageError
        The storage could not be reached.

    Examples
    --------
    >>> repo = icepipe.get_or_create_repo(  # doctest: +SKIP
    ...     "acme/era5", url="s3://bucket/era5", storage={"region": "eu-west-1"}
    ... )
    """
    short = check_name(name.removeprefix(CATALOG_PREFIX))
    options = coerce_storage_options(storage, "storage")
    sources = coerce_storage_options(source_storage, "source_storage")
    entry = load_catalog().entries.get(short)
    if entry is None:
        if url is None:
            raise ConfigError(
                f"{short!r} is not in the catalog: pass url= (a local path or s3://BUCKET/"
                "PREFIX) to create it there",
                field="url",
            )
        entry, _ = create_repo(
            short, url, description=description, storage=options, config=config, exists_ok=True
        )
    else:
        _check_same(entry, url, options, storage is not None)
    return repository.open_repo(
        entry.url, create=True, storage=entry.storage, config=entry.config, source_storage=sources
    )


def _check_same(entry: CatalogEntry, url: str | None, options: StorageOptions, given: bool) -> None:
    """Refuse ``url``/``storage`` arguments that disagree with an existing catalog entry."""
    if url is not None:
        location = url
        if is_local(url):
            import os

            location = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
        if location.rstrip("/") != entry.url.rstrip("/"):
            raise ConfigError(
                f"{entry.name!r} is in the catalog at {entry.url!r}, not {url!r}; leave url= "
                f"out to open it, or choose another name",
                field="url",
            )
    if given and options != entry.storage:
        raise ConfigError(
            f"{entry.name!r} is in the catalog with other storage options; leave storage= out "
            "to use the entry's, or edit the catalog",
            field="storage",
        )
