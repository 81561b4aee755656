"""xarray-facing API: write Datasets into Icechunk repositories, read ingested data back."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import xarray as xr

from icepipe import __version__, repository
from icepipe.catalog import resolve_repo
from icepipe.errors import ArgumentTypeError, ConfigError, SourceError
from icepipe.repository.grids import rectilinear_enabled
from icepipe.storage import StorageOptions, coerce_storage_options, scheme_of

if TYPE_CHECKING:
    import icechunk

    from icepipe.repository.native import Region, WriteMode

__all__ = ["check_source_access", "open_dataset", "open_session", "to_icechunk"]


def to_icechunk(
    obj: xr.Dataset | xr.DataArray,
    repo: str | os.PathLike[str] | icechunk.Repository | icechunk.Session | None = None,
    *,
    session: icechunk.Session | None = None,
    branch: str = "main",
    group: str | None = None,
    mode: WriteMode | None = None,
    safe_chunks: bool = True,
    align_chunks: bool | None = None,
    append_dim: Hashable | None = None,
    region: Region | None = None,
    encoding: Mapping[Any, Any] | None = None,
    chunkmanager_store_kwargs: MutableMapping[Any, Any] | None = None,
    split_every: int | None = None,
    message: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    max_attempts: int = 5,
    storage: StorageOptions | Mapping[str, Any] | None = None,
    source_storage: StorageOptions | Mapping[str, Any] | None = None,
) -> str | None:
    """Write an xarray Dataset (or DataArray) into an Icechunk repository and commit it.

    A drop-in superset of :func:`icechunk.xarray.to_icechunk` (see ``docs/xarray.md``): into
    a ``session`` it writes and commits nothing, as Icechunk does; into a repository or a path
    it also commits, rebasing over other writers' disjoint changes and redoing appends.

    Parameters
    ----------
    obj
        The data (numpy, Dask or virtual); a DataArray is written as ``DataArray.to_zarr`` does.
    repo, session
        Where to write (one of them): a repository path or catalog name
        (``catalog:org/name``; unknown ``xxx:`` prefixes are refused), created when the write
        creates data (with virtual chunk containers for virtual references), or an
        ``icechunk.Repository``; or, as in Icechunk, a writable ``icechunk.Session`` or fork
        (``repo`` takes one too): then nothing is committed, and ``None`` returned.
    branch, group
        The branch to commit to (new ones start from ``main``); the group (root if ``None``).
    mode, append_dim, encoding
        As :meth:`xarray.Dataset.to_zarr` (``mode``: ``"w-"`` by default, ``"a"`` with
        ``append_dim``, ``"r+"`` with ``region``). ``encoding`` may give ``"shards"``.
    safe_chunks, align_chunks, chunkmanager_store_kwargs, split_every
        As in Icechunk, but ``align_chunks=None`` (default) and ``safe_chunks=False`` align
        Dask chunks onto the target's, so that no two tasks write one chunk.
    region
        Overwrite this part of the existing arrays: ``{"time": slice(0, 24)}``, or ``"auto"``.
        Numpy data may cut through chunks; Dask data may not in mode ``"r+"`` unless
        ``safe_chunks=False`` (as in xarray).
    message, metadata, max_attempts
        The commit message and extra JSON commit metadata (icepipe adds its provenance under
        ``"icepipe"``); how many times to write when the branch keeps moving under appends.
    storage, source_storage
        How to reach a repository given as an object-store URL (a pipeline's ``target`` keys),
        and the object store virtual references point into (``source.storage`` keys).

    Returns
    -------
    str or None
        The snapshot id of the commit; ``None`` for a session.

    Raises
    ------
    ConfigError
        Bad arguments (also a ``ValueError``); its subclasses keep the type xarray raises:
        ``TargetExistsError`` (``FileExistsError``), ``TargetNotFoundError``
        (``FileNotFoundError``), ``WriteKeyError`` (``KeyError``), ``ArgumentTypeError``.
    ConflictError
        Another writer wrote the same chunks, or the branch kept moving: nothing committed.
    StorageError
        Storage failed, or Dask workers died.
    """
    target = _target(repo, session)
    ds = as_dataset(obj)
    write: dict[str, Any] = dict(
        group=group,
        mode=mode,
        append_dim=None if append_dim is None else str(append_dim),
        region=region,
        encoding=encoding,
        safe_chunks=safe_chunks,
        align_chunks=align_chunks,
        split_every=split_every,
        chunkmanager_store_kwargs=chunkmanager_store_kwargs,
    )
    if repository.is_session(target):  # as Icechunk: dask gets (and adds keys to) the mapping
        repository.write_dataset(target, ds, **write)
        return None
    commit_metadata = {**(metadata or {}), repository.METADATA_KEY: _provenance(ds, group)}
    repository.check_write_args(ds, mode=mode, metadata=commit_metadata, max_attempts=max_attempts)
    opened = _repository(target, ds, write, storage=storage, source_storage=source_storage)
    return repository.write_and_commit(
        opened,
        ds,
        branch=branch,
        message=message or _default_message(ds, group, append_dim=append_dim, region=region),
        metadata=commit_metadata,
        max_attempts=max_attempts,
        **write,
    )


_DATAARRAY_NAME = "__xarray_dataarray_name__"
_DATAARRAY_VARIABLE = "__xarray_dataarray_variable__"


def as_dataset(obj: object) -> xr.Dataset:
    """``obj`` as the Dataset :meth:`xarray.DataArray.to_zarr` (and Icechunk) would write.

    A DataArray without a name, or named like one of its coordinates or dimensions, becomes
    the variable ``__xarray_dataarray_variable__`` (the original name, if any, kept in the
    attribute ``__xarray_dataarray_name__``), which :func:`xarray.open_dataarray` undoes.
    Anything else is returned as it is (the write checks it).
    """
    if not isinstance(obj, xr.DataArray):
        return obj  # type: ignore[return-value]
    if obj.name is None:
        return obj.to_dataset(name=_DATAARRAY_VARIABLE)
    if obj.name in obj.coords or obj.name in obj.dims:
        ds = obj.to_dataset(name=_DATAARRAY_VARIABLE)
        ds.attrs[_DATAARRAY_NAME] = obj.name
        return ds
    return obj.to_dataset()


def _target(
    repo: str | os.PathLike[str] | icechunk.Repository | icechunk.Session | None,
    session: icechunk.Session | None,
) -> str | os.PathLike[str] | icechunk.Repository | icechunk.Session:
    """Where to write: ``repo`` (positional, icepipe's name) or ``session`` (Icechunk's)."""
    if session is None:
        if repo is None:
            raise ArgumentTypeError(
                "to_icechunk needs where to write: a repository path or icechunk.Repository "
                "as the second argument, or a writable session as session=",
                field="repo",
            )
        return repo
    if repo is not None:
        raise ConfigError(
            "give either a repository (the second argument) or session=, not both",
            field="session",
        )
    if not repository.is_session(session):
        raise ArgumentTypeError(
            f"expected a writable icechunk.Session; got {type(session).__name__} (pass a "
            "repository path or an icechunk.Repository as the second argument instead)",
            field="session",
        )
    return session


def _provenance(ds: xr.Dataset, group: str | None) -> dict[str, Any]:
    """The commit's record under ``repository.METADATA_KEY``."""
    virtual = repository.is_virtual(ds) if isinstance(ds, xr.Dataset) else False
    record = repository.CommitRecord(
        version=__version__,
        mode="virtual" if virtual else "native",
        api="to_icechunk",
        group=group or "",
    )
    return record.to_metadata()


def _repository(
    repo: str | os.PathLike[str] | icechunk.Repository | icechunk.Session,
    ds: xr.Dataset,
    write: Mapping[str, Any],
    *,
    storage: StorageOptions | Mapping[str, Any] | None,
    source_storage: StorageOptions | Mapping[str, Any] | None,
) -> icechunk.Repository:
    """The repository to write ``ds`` into (with the arguments ``write``): ``repo`` itself, or
    opened from a path: created when missing if the write creates data, with a virtual chunk
    container per location ``ds`` references.

    Raises
    ------
    RepoNotFoundError
        No repository at the path, and the write does not create one.
    ConfigError
        ``repo`` is neither a path nor a repository.
    """
    if repository.is_repository(repo):
        return repo
    if not isinstance(repo, str | os.PathLike):
        raise ConfigError(
            "expected a repository path, an icechunk.Repository or a writable "
            f"icechunk.Session; got {type(repo).__name__}",
            field="repo",
        )
    # catalog:org/name (or a bare org/name the catalog holds) writes where the entry says.
    entry = resolve_repo(repo, storage=coerce_storage_options(storage, "storage"), where="repo")
    path = entry.url
    appending = write["append_dim"] is not None
    # Appends and region writes need existing data: never create an empty repository for them.
    creates = not appending and write["region"] is None and write["mode"] != "r+"
    virtual = repository.is_virtual(ds) if isinstance(ds, xr.Dataset) else False
    try:
        return repository.open_repo(
            path,
            create=creates,
            containers=repository.virtual_locations(ds) if virtual else (),
            storage=entry.storage,
            source_storage=coerce_storage_options(source_storage, "source_storage"),
            config=entry.config,
        )
    except repository.RepoNotFoundError as exc:
        raise repository.RepoNotFoundError(
            f"no Icechunk repository at {path!r} to "
            f"{'append to' if appending else 'write into'}; create it first "
            f"with icepipe.to_icechunk(ds, {path!r}) (mode 'w-')"
        ) from exc


def _default_message(
    ds: xr.Dataset, group: str | None, *, append_dim: Hashable | None, region: Any
) -> str:
    names = sorted(str(n) for n in ds.data_vars) if isinstance(ds, xr.Dataset) else []
    shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    where = group or "/"
    if append_dim is not None:
        return f"icepipe.to_icechunk: append {shown} to {where} along {append_dim}"
    if region is not None:
        return f"icepipe.to_icechunk: write {shown} into a region of {where}"
    return f"icepipe.to_icechunk: write {shown} into {where}"


def open_dataset(
    repo: str,
    *,
    branch: str | None = None,
    group: str | None = None,
    snapshot_id: str | None = None,
    tag: str | None = None,
    chunks: Any = None,
    storage: StorageOptions | Mapping[str, Any] | None = None,
    source_storage: StorageOptions | Mapping[str, Any] | None = None,
    decode_times: bool = True,
    ref: str | None = None,
) -> xr.Dataset:
    """Open an ingested group as an xarray Dataset (lazily, backed by Dask).

    Virtual chunk access is authorized for every container the repository's config lists, so
    virtual references resolve exactly like native chunks: local folders and HTTP need
    nothing; object stores use the endpoint and addressing persisted with the container and
    credentials from this process's environment (``source_storage`` may name the variables, or
    ask for anonymous access). Access to one ingested file per object-store location is
    checked here, so a reader without access gets an error now, not at compute time.

    Parameters
    ----------
    repo
        The repository location, or a catalog name (``catalog:org/name``, or a bare
        ``org/name`` the catalog holds).
    branch, tag, snapshot_id, ref
        What to read: ``snapshot_id``, else ``tag``, else ``branch`` (default ``main``); or
        ``ref`` alone, as commands take it: ``main~1``, ``tag:v1``, ``branch:NAME``
        (``repository.resolve_ref``).
    group
        The group to open; the root group when ``None``.
    chunks
        Passed to :func:`xarray.open_zarr`: ``None`` (default) opens lazily without Dask, like
        :func:`xarray.open_dataset`; ``{}`` gives one Dask chunk per stored chunk.
    storage
        How to reach a repository in an object store (the keys of a pipeline's ``target``
        section: ``endpoint``, ``region``, ``force_path_style``, ``allow_http``,
        ``anonymous``, ``access_key_id_env``, ``secret_access_key_env``, ...).
    source_storage
        Credentials for the sources of virtual references (``anonymous``, or
        ``access_key_id_env``/``secret_access_key_env``); endpoints come from the repository.
    decode_times
        Passed to :func:`xarray.open_zarr`. ``False`` keeps times as stored numbers with
        their ``units`` attribute: for units xarray cannot decode (``months since ...`` in
        a standard calendar, year 0), which icepipe stores as the files hold them.

    Raises
    ------
    RepoNotFoundError
        No repository at ``repo``.
    UnknownSchemeError
        ``repo`` starts with an unknown ``xxx:`` prefix (a :class:`ConfigError`).
    ConfigError
        The branch or group does not exist, no such catalog entry, ``ref`` given with
        ``branch``, ``tag`` or ``snapshot_id``, or this reader may not read the source files
        that virtual references point into (the message names the location and the fix).
    SourceError
        A source file that virtual references point into no longer exists.
    """
    r, session, source_options = open_session(
        repo,
        branch=branch,
        tag=tag,
        snapshot_id=snapshot_id,
        storage=storage,
        source_storage=source_storage,
        ref=ref,
    )
    try:
        # Arrays with rectilinear chunk grids (files of uneven length, one chunk each) need
        # zarr's experimental flag when their metadata is parsed, here; the arrays then read
        # without it, in this process and on Dask workers (they pickle parsed metadata).
        with rectilinear_enabled():
            ds: xr.Dataset = xr.open_zarr(
                session.store,
                group=group,
                consolidated=False,
                chunks=chunks,
                zarr_format=3,
                decode_times=decode_times,
            )
    except (FileNotFoundError, KeyError) as exc:
        raise ConfigError(
            f"no group {group or '/'!r} on {_version(branch, tag, snapshot_id, ref)} of {repo!r}; "
            "check target.group"
        ) from exc
    check_source_access(r, session.snapshot_id, group, source_options)
    return ds


def _check_one_version(
    ref: str | None, *, branch: str | None, tag: str | None, snapshot_id: str | None
) -> None:
    """Refuse ``ref`` beside ``branch``, ``tag`` or ``snapshot_id``: a ref names any of them.

    Raises
    ------
    ConfigError
        ``ref`` and another of them are both given (``field`` is ``"ref"``).
    """
    others = {"branch": branch, "tag": tag, "snapshot_id": snapshot_id}
    given = [f"{k}={v!r}" for k, v in others.items() if v is not None]
    if ref is not None and given:
        raise ConfigError(
            f"give either ref= or {'/'.join(k + '=' for k in others)}, not both; got ref={ref!r} "
            f"and {' and '.join(given)}: a ref names any of them ('branch:NAME', 'tag:NAME', a "
            "snapshot id, each optionally followed by ~N for an ancestor)",
            field="ref",
        )


def _version(
    branch: str | None, tag: str | None, snapshot_id: str | None, ref: str | None = None
) -> str:
    """What a read names, for messages: ``ref 'main~1'``, ``snapshot X``, ``tag 'v1'`` or
    ``branch 'main'``."""
    if ref:
        return f"ref {ref!r}"
    if snapshot_id:
        return f"snapshot {snapshot_id}"
    return f"tag {tag!r}" if tag else f"branch {branch or 'main'!r}"


def open_session(
    repo: str | os.PathLike[str],
    *,
    branch: str | None = None,
    tag: str | None = None,
    snapshot_id: str | None = None,
    storage: StorageOptions | Mapping[str, Any] | None = None,
    source_storage: StorageOptions | Mapping[str, Any] | None = None,
    ref: str | None = None,
) -> tuple[icechunk.Repository, icechunk.Session, StorageOptions]:
    """The repository ``repo`` names (a location or a catalog name), with every virtual chunk
    container authorized, and a read-only session of ``snapshot_id``, else ``ref`` (``main~1``,
    ``tag:v1``), else ``tag``, else ``branch`` (default ``main``); with the source storage
    options (for :func:`check_source_access`).

    Raises
    ------
    RepoNotFoundError
        No repository there.
    ConfigError
        Unknown prefix or catalog name, bad options, no such branch, tag or snapshot, or
        ``ref`` given with ``branch``, ``tag`` or ``snapshot_id``.
    """
    _check_one_version(ref, branch=branch, tag=tag, snapshot_id=snapshot_id)
    branch = branch or "main"
    source_options = coerce_storage_options(source_storage, "source_storage")
    entry = resolve_repo(repo, storage=coerce_storage_options(storage, "storage"), where="repo")
    r = repository.open_repo(
        entry.url,
        create=False,
        storage=entry.storage,
        source_storage=source_options,
        config=entry.config,
    )
    if ref is not None and snapshot_id is None:
        snapshot_id = repository.resolve_ref(r, ref)
    try:
        if snapshot_id:
            session = r.readonly_session(snapshot_id=snapshot_id)
        elif tag:
            session = r.readonly_session(tag=tag)
        else:
            session = r.readonly_session(branch=branch)
    except Exception as exc:
        raise ConfigError(
            f"cannot read {_version(branch, tag, snapshot_id)} of {os.fspath(repo)!r}: {exc}"
        ) from exc
    return r, session, source_options


def check_source_access(
    repo: icechunk.Repository,
    snapshot_id: str,
    group: str | None,
    source: StorageOptions,
    *,
    subtree: bool = False,
) -> None:
    """HEAD one ingested file per object-store container with this reader's credentials
    (files ingested into ``group``, or with ``subtree`` into any group at or below it).

    Icechunk raises when a virtual chunk cannot be fetched, but only when it is read, deep
    inside a computation; this names the location and the fix when the dataset is opened.
    """
    from icepipe.sources.stores import check_readable

    containers = [
        c
        for c in (repo.config.virtual_chunk_containers or {}).values()
        if scheme_of(c.url_prefix) != "file"
    ]
    if not containers:
        return
    urls = _virtual_urls(repo, snapshot_id, group, subtree=subtree)
    for c in containers:
        url = next((u for u in urls if u.startswith(c.url_prefix)), None)
        if url is None:
            continue
        options = repository.container_options(repo, c, source)
        try:
            check_readable(url, options)
        except SourceError as err:
            raise SourceError(
                f"{url}: ingested into {group or '/'!r} as virtual references, but it no "
                "longer exists there; restore it, or re-ingest the data",
                url=url,
            ) from err
        except ConfigError as err:
            if err.field == "source.storage":  # access denied (not, e.g., a missing variable)
                raise ConfigError(
                    f"this reader may not read the source files that the virtual references of "
                    f"{group or '/'!r} point into ({c.url_prefix}): {url}: access denied. Give "
                    "this process credentials for that location (the standard AWS_* variables "
                    "or profile, or source_storage={'access_key_id_env': ..., "
                    "'secret_access_key_env': ...}), or source_storage={'anonymous': True} for a "
                    "public bucket",
                    field="source_storage",
                ) from err
            raise


def _virtual_urls(
    repo: icechunk.Repository, snapshot_id: str, group: str | None, *, subtree: bool = False
) -> list[str]:
    """The source files ingested into ``group`` (or, with ``subtree``, into ``group`` and the
    groups below it) as virtual references (newest commit first)."""
    records = (
        repository.read_commits(repo, snapshot_id, group)
        if not subtree
        else repository.read_commits_below(repo, snapshot_id, group)
    )
    return [f.url for record in records if record.mode == "virtual" for f in record.files or ()]
