"""Write xarray Datasets into Icechunk sessions, and commit them against a moving branch.

:func:`write_dataset` is the building block: one dataset into one writable session, no commit.
Dask variables are written as :func:`icechunk.xarray.to_icechunk` writes them (its writer, the
same graph: one task per block writes into a fork of the session on the active scheduler, a
``distributed.Client`` when one exists, and the forks are merged back with a tree reduction),
merged by :func:`_merge_forks_of`, which skips Icechunk's fixed cost per write. What icepipe
adds on top:

* **Every write task owns whole target chunks (or whole shards).** Icechunk merges forks without
  looking at chunks, so two tasks writing parts of one chunk silently lose one part (measured:
  misaligned Dask chunks with ``safe_chunks=False`` corrupt data on a ``LocalCluster``). Dask
  chunks are therefore always rechunked onto the target grid (xarray's ``align_chunks``, which
  uses the shard shape when the encoding has ``"shards"`` and the existing arrays' grid,
  offset by the current length, for appends; the region's start for regions). ``safe_chunks=
  False`` therefore never lets two tasks share a chunk either. A region of numpy data may cut
  through stored chunks (this process rewrites them); one of Dask data may not in mode
  ``"r+"`` unless ``safe_chunks=False`` (xarray's rule: the rest of such a chunk is usually
  written by another task into another fork, and merging forks keeps one of the two).
* **Errors say what to fix.** Library errors become :mod:`icepipe.errors` exceptions, which
  stay the built-in type xarray raised (:class:`~icepipe.errors.WriteKeyError` is a
  ``KeyError``, :class:`~icepipe.errors.TargetExistsError` a ``FileExistsError``, ...).
* **Virtual datasets** (VirtualiZarr ``ManifestArray`` variables) go through
  ``ds.vz.to_icechunk(session.store, ...)``, after checking the repository has a virtual chunk
  container for every location they reference.

:func:`write_and_commit` writes and commits against a moving branch: it commits with
:func:`icepipe.repository.commits.commit` (the table there says what happens when another
writer moved the branch meanwhile) and redoes the whole write on the new tip when the commit
says so (:class:`~icepipe.errors.StaleWriteError`), waiting as
:class:`~icepipe.repository.commits.Retry` says between attempts.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, MutableMapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import dask
import icechunk
import numpy as np
import xarray as xr
import zarr
import zarr.errors
from dask.base import compute, is_dask_collection

from icepipe.errors import (
    ArgumentTypeError,
    ConfigError,
    ConflictError,
    IcepipeError,
    StaleWriteError,
    StorageError,
    TargetExistsError,
    TargetNotFoundError,
    WriteKeyError,
)
from icepipe.faults import storage_failure
from icepipe.repository.commits import Retry, commit
from icepipe.repository.grids import stored_chunks
from icepipe.repository.repo import container_prefixes, in_memory, local_path
from icepipe.repository.write import writable_session

__all__ = [
    "Region",
    "WriteMode",
    "check_write_args",
    "is_repository",
    "is_session",
    "is_virtual",
    "virtual_locations",
    "write_and_commit",
    "write_dataset",
]

WriteMode = Literal["w", "w-", "a", "a-", "r+"]
Region = Mapping[str, slice | Literal["auto"]] | Literal["auto"]

_MODES: tuple[str, ...] = ("w", "w-", "a", "a-", "r+")
_VIRTUAL_MODES: tuple[str, ...] = ("w", "w-", "a")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def is_session(obj: object) -> TypeGuard[icechunk.Session]:
    """Whether ``obj`` is an Icechunk session (writable or not)."""
    return isinstance(obj, icechunk.Session)


def is_repository(obj: object) -> TypeGuard[icechunk.Repository]:
    """Whether ``obj`` is an Icechunk repository."""
    return isinstance(obj, icechunk.Repository)


def is_virtual(ds: xr.Dataset) -> bool:
    """Whether any variable of ``ds`` holds VirtualiZarr references (a ``ManifestArray``)."""
    try:
        from virtualizarr.manifests import ManifestArray
    except ImportError:  # pragma: no cover - virtualizarr is a dependency
        return False
    return any(isinstance(v.data, ManifestArray) for v in ds.variables.values())


def virtual_locations(ds: xr.Dataset) -> list[str]:
    """The virtual chunk container prefixes (folders) the references of ``ds`` point into."""
    from virtualizarr.manifests import ManifestArray

    urls: set[str] = set()
    for var in ds.variables.values():
        if isinstance(var.data, ManifestArray):
            urls.update(var.data.manifest.iter_nonempty_paths())
    return container_prefixes(urls)


def write_dataset(
    session: icechunk.Session,
    ds: xr.Dataset,
    *,
    group: str | None = None,
    mode: WriteMode | None = None,
    append_dim: str | None = None,
    region: Region | None = None,
    encoding: Mapping[Any, Mapping[str, Any]] | None = None,
    safe_chunks: bool = True,
    align_chunks: bool | None = None,
    chunkmanager_store_kwargs: MutableMapping[Any, Any] | None = None,
    split_every: int | None = None,
) -> None:
    """Write ``ds`` into a writable ``session``, without committing.

    Numpy variables and all metadata are written by the calling process; Dask variables are
    computed on the active scheduler (the default ``distributed.Client`` if there is one),
    every task writing whole target chunks (or shards) into a fork of ``session``, and the
    forks are merged back into ``session``.

    Parameters
    ----------
    session
        A writable session (``repo.writable_session(branch)``).
    ds
        The data: numpy- or Dask-backed, or a virtual dataset from VirtualiZarr.
    group
        The group to write into; the root group when ``None``.
    mode
        As :meth:`xarray.Dataset.to_zarr`: ``"w-"`` create (the default), ``"w"`` overwrite,
        ``"a"`` add or overwrite variables (the default with ``append_dim``), ``"a-"`` append
        only variables that have ``append_dim``, ``"r+"`` change values only (the default
        with ``region``).
    append_dim
        Append along this existing dimension.
    region
        Write into this region of the existing arrays: ``{"dim": slice(start, stop)}``, with
        ``"auto"`` to locate a dimension by its coordinate values. Numpy data may cut through
        chunks; Dask data must cover whole chunks (shards) in mode ``"r+"`` unless
        ``safe_chunks=False``.
    encoding
        Per-variable Zarr encoding of new arrays (``{"var": {"chunks": ..., "shards": ...}}``).
        Existing arrays keep theirs.
    safe_chunks, align_chunks, chunkmanager_store_kwargs, split_every
        As :func:`icechunk.xarray.to_icechunk`, but Dask chunks are rechunked onto the target
        grid unless ``align_chunks=False`` with ``safe_chunks=True`` (xarray's check).

    Raises
    ------
    ConfigError
        Bad arguments: unknown mode, an ``append_dim`` the target does not have, a group that
        exists (``"w-"``, :class:`~icepipe.errors.TargetExistsError`) or does not (appends;
        regions: :class:`~icepipe.errors.TargetNotFoundError`), virtual references without a
        virtual chunk container, ... The message says the fix.
    StorageError
        Storage failed, or Dask workers died while writing.
    """
    _check_dataset_and_mode(ds, mode)
    if not isinstance(session, icechunk.Session) or session.read_only:
        raise ConfigError(
            "expected a writable icechunk.Session; open one with repo.writable_session(branch)"
        )
    what = f"{_names(ds)} into {_group_label(group)}"
    if is_virtual(ds):
        _write_virtual(session, ds, group=group, mode=mode, append_dim=append_dim, region=region)
        return
    if append_dim is not None or region is not None or mode == "r+":
        target = _existing_group(session, group, append_dim=append_dim, region=region)
        if append_dim is not None:
            _check_append_dim(target, append_dim, group)
        if region is not None:
            _check_region(region)
            if safe_chunks and mode in (None, "r+") and _has_dask(ds):
                _check_partial_chunks(session, target, ds, region, group)
    try:
        # align_chunks rechunks every Dask variable onto the target's chunk (shard) grid: the
        # existing arrays' grid offset by their length for appends, the region's start for
        # region writes, the encoding's for new arrays. Without it, two tasks writing parts of
        # one chunk into two forks lose one part when the forks merge: safe_chunks=False
        # (xarray's "I accept the race") aligns too, as no write here may lose data.
        align = (align_chunks is not False) or not safe_chunks
        _to_icechunk(
            ds,
            session,
            group=group,
            mode=mode,
            append_dim=append_dim,
            region=region,
            encoding=encoding,
            safe_chunks=safe_chunks,
            align_chunks=align,
            chunkmanager_store_kwargs=chunkmanager_store_kwargs,
            split_every=split_every,
        )
    except Exception as exc:
        raise _convert_write_error(exc, what, group=group) from exc


def _to_icechunk(
    obj: xr.Dataset | xr.DataArray,
    session: icechunk.Session,
    *,
    group: str | None = None,
    mode: WriteMode | None = None,
    safe_chunks: bool = True,
    align_chunks: bool = False,
    append_dim: str | None = None,
    region: Region | None = None,
    encoding: Mapping[str, Any] | None = None,
    chunkmanager_store_kwargs: MutableMapping[Any, Any] | None = None,
    split_every: int | None = None,
) -> None:
    """:func:`icechunk.xarray.to_icechunk` (same arguments, same writes, same forks and merge)
    without its fixed cost of tokenizing closures.

    Icechunk merges the forks with ``da.reduction`` over functions it wraps in a new closure on
    every call, which Dask tokenizes by pickling them by value (cloudpickle scans every loaded
    module): ~0.1-0.2 s per write on a loaded 2-core machine, more in a process with many
    modules, for nothing. :func:`_merge_forks_of` is that reduction over module-level
    functions. The rest is Icechunk's own writer (private, but icechunk is pinned to a minor
    release in pyproject.toml, and the tests write through it).
    """
    from icechunk.xarray import _make_dataset, _XarrayDatasetWriter

    writer = _XarrayDatasetWriter(
        _make_dataset(obj), store=session.store, safe_chunks=safe_chunks, align_chunks=align_chunks
    )
    writer._open_group(group=group, mode=mode, append_dim=append_dim, region=region)
    writer.write_metadata(encoding)  # array metadata, attributes; resizes appended arrays
    writer.write_eager()  # numpy variables, by this process
    if not is_dask_collection(obj):
        return
    lazy = writer.writer
    if not lazy.sources:
        raise TypeError("Attempting to execute a write with dask but no dask arrays were detected.")
    # One fork for every task: each task writes its chunks into its own copy of it (they
    # pickle), and returns that copy, merged back below.
    fork = session.fork()
    lazy.targets = [
        BufferReusingTarget(zarr.open_array(fork.store, path=t.path, mode="a"))
        for t in lazy.targets
    ]
    # As Icechunk: the caller's mapping gets (and keeps) the two keys.
    store_kwargs = chunkmanager_store_kwargs if chunkmanager_store_kwargs is not None else {}
    store_kwargs["load_stored"] = False
    store_kwargs["return_stored"] = True  # each block's task returns the zarr.Array it wrote
    stored = lazy.sync(compute=False, chunkmanager_store_kwargs=store_kwargs)  # type: ignore[no-untyped-call]
    session.merge(_merge_forks_of(stored, split_every=split_every))


def _merge_forks_of(stored: Any, *, split_every: int | None) -> icechunk.session.ForkSession:
    """The forks written by the blocks of ``stored`` (Dask arrays of zarr Arrays, as
    ``dask.array.store(..., return_stored=True)`` returns), merged by a tree reduction on the
    scheduler, fused with the writes (one task per block), then into one."""
    import dask.array as da
    from icechunk.distributed import merge_sessions

    arrays = stored if isinstance(stored, list | tuple) else [stored]
    if not all(isinstance(a, da.Array) for a in arrays):  # another array backend: Icechunk's
        from icechunk.dask import session_merge_reduction

        return session_merge_reduction(list(arrays), split_every=split_every)
    reduced = [
        da.reduction(  # type: ignore[no-untyped-call]
            a,
            chunk=_fork_of_block,
            aggregate=_merge_forks,
            split_every=split_every,
            concatenate=False,
            keepdims=False,
            dtype=object,
            meta=np.array([object()], dtype=object),
            name="ice-changeset",  # Icechunk's task names (dashboards, tests killing them)
        )
        for a in arrays
    ]
    return merge_sessions(*compute(*reduced))  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class BufferReusingTarget:
    """A zarr Array that write tasks store blocks into, each store reusing its large buffers.

    Encoding and storing a chunk allocates several buffers its size; on Dask workers (static
    malloc thresholds) each is a fresh mapping whose pages the kernel zeroes: the store runs
    under :func:`icepipe.allocator.reuse_large_buffers`, which hands back what glibc lets it
    once the store returns.
    """

    array: zarr.Array[Any]

    def __setitem__(self, key: Any, value: Any) -> None:
        from icepipe.allocator import reuse_large_buffers

        with reuse_large_buffers():
            self.array[key] = value

    @property
    def store(self) -> Any:
        return self.array.store


def _fork_of_block(
    stored: Any, axis: Any = None, keepdims: Any = None, computing_meta: bool = False
) -> Any:
    """In a Dask task: the fork a block was written into (its zarr Array's session)."""
    if computing_meta:
        return np.array([object()], dtype=object)
    return stored.store.session


def _merge_forks(
    *forks: Any, axis: Any = None, keepdims: Any = None, computing_meta: bool = False
) -> Any:
    """In a Dask task: merge forks (nested lists of them, as the reduction passes them)."""
    if computing_meta:
        return np.array([object()], dtype=object)
    from icechunk.distributed import merge_sessions

    return merge_sessions(*forks)


def _check_dataset_and_mode(ds: object, mode: str | None) -> None:
    if not isinstance(ds, xr.Dataset):
        hint = " (convert it with .to_dataset(name=...))" if isinstance(ds, xr.DataArray) else ""
        raise ConfigError(f"expected an xarray.Dataset; got {type(ds).__name__}{hint}")
    if mode is not None and mode not in _MODES:
        raise ConfigError(f"expected one of {', '.join(_MODES)}; got {mode!r}", field="mode")


def _names(ds: xr.Dataset) -> str:
    names = sorted(str(n) for n in ds.data_vars) or sorted(str(n) for n in ds.variables)
    shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    return shown or "an empty dataset"


def _group_label(group: str | None) -> str:
    return repr(group) if group else "the root group"


def _group_path(group: str | None) -> str:
    return (group or "").strip("/")


def _existing_group(
    session: icechunk.Session,
    group: str | None,
    *,
    append_dim: str | None,
    region: Region | None,
) -> zarr.Group:
    try:
        return zarr.open_group(session.store, path=_group_path(group), mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError) as exc:
        action = (
            f"append along {append_dim!r} to"
            if append_dim is not None
            else "write a region of"
            if region is not None
            else "change values (mode 'r+') in"
        )
        message = (
            f"cannot {action} {_group_label(group)}: it does not exist on branch "
            f"{session.branch!r}; create it first (mode='w-', without append_dim or region)"
        )
        # xarray says ValueError for appends, zarr FileNotFoundError for the others.
        if append_dim is not None:
            raise ConfigError(message) from exc
        raise TargetNotFoundError(message) from exc


def _array_dims(arr: zarr.Array[Any]) -> tuple[str, ...]:
    names = getattr(arr.metadata, "dimension_names", None)
    if names is None:
        raw = arr.attrs.get("_ARRAY_DIMENSIONS", ())
        names = raw if isinstance(raw, list | tuple) else ()
    return tuple(str(d) for d in names)


def _target_dims(target: zarr.Group) -> dict[str, int]:
    dims: dict[str, int] = {}
    for _, arr in target.arrays():
        for d, n in zip(_array_dims(arr), arr.shape, strict=False):
            dims[d] = int(n)
    return dims


def _check_append_dim(target: zarr.Group, append_dim: str, group: str | None) -> None:
    dims = _target_dims(target)
    if append_dim not in dims:
        listed = ", ".join(f"{d} ({n})" for d, n in sorted(dims.items())) or "none"
        raise ConfigError(
            f"{_group_label(group)} has no dimension {append_dim!r} to append along; its "
            f"dimensions are: {listed}. Pass one of them as append_dim, or write a new group "
            "with mode='w-'",
            field="append_dim",
        )


def _has_dask(ds: xr.Dataset) -> bool:
    return any(v.chunks is not None for v in ds.variables.values())


def _check_region(region: object) -> None:
    """Check the form of ``region`` (xarray checks it against the data and the target).

    A region may cut through stored chunks: one task (or this process) owns each chunk of it,
    see :func:`write_dataset`.
    """
    if region == "auto":
        return
    if not isinstance(region, Mapping):
        raise ArgumentTypeError(
            f"expected a mapping of dimension names to slices, or 'auto'; got {region!r}",
            field="region",
        )
    for dim, sl in region.items():
        if isinstance(sl, slice):
            if sl.step not in (None, 1):
                raise ConfigError(
                    f"region slices must be contiguous; got {dim}={sl!r}", field="region"
                )
        elif sl != "auto":
            raise ArgumentTypeError(
                f"expected a slice or 'auto' for dimension {dim!r}; got {sl!r}", field="region"
            )


def _write_grid(arr: zarr.Array[Any]) -> tuple[int, ...]:
    """The unit a write must own whole: the shard shape when sharded, else the chunk shape."""
    shards = getattr(arr, "shards", None)
    return tuple(int(c) for c in (shards or stored_chunks(arr)[0]))


def _check_partial_chunks(
    session: icechunk.Session,
    target: zarr.Group,
    ds: xr.Dataset,
    region: Region,
    group: str | None,
) -> None:
    """Refuse Dask data for a region that covers chunks (shards) of the existing arrays only
    partly, as xarray's ``safe_chunks`` does in mode ``"r+"``: the rest of such a chunk is
    typically written by another task or call into another fork, and merging forks keeps only
    one of the two. Numpy data (written by this process) may cut through chunks.
    """
    if region == "auto":
        region = dict.fromkeys((str(d) for d in ds.dims), "auto")
    if not isinstance(region, Mapping):  # _check_region refused it already
        return
    slices = _resolve_region(session, ds, region, group)
    arrays = dict(target.arrays())
    problems: list[str] = []
    # Index coordinates are not written by region writes (xarray drops them).
    for name, var in ds.variables.items():
        if name in ds.indexes or str(name) not in arrays or var.chunks is None:
            continue
        arr = arrays[str(name)]
        grid = _write_grid(arr)
        for axis, dim in enumerate(_array_dims(arr)):
            sl = slices.get(dim)
            if sl is None or axis >= len(grid):
                continue
            size, step = int(arr.shape[axis]), grid[axis]
            start = 0 if sl.start is None else int(sl.start)
            stop = start + int(var.sizes[dim]) if sl.stop is None else int(sl.stop)
            if start % step == 0 and (stop % step == 0 or stop == size):
                continue
            lo = start - start % step
            hi = min(size, -(-stop // step) * step)
            unit = "shards" if getattr(arr, "shards", None) else "chunks"
            problems.append(
                f"{name!r} along {dim!r}: slice({start}, {stop}) cuts through its {unit} of "
                f"{step} (length {size}); widen it to slice({lo}, {hi})"
            )
    if problems:
        raise ConfigError(
            "region writes of Dask data must cover whole chunks (or shards): merging forks "
            "keeps one of two writes to one chunk. " + "; ".join(problems[:10]) + ". Or write "
            "numpy data (.load() it), or pass safe_chunks=False if no other task or writer "
            "writes the rest of those chunks (xarray's mode='r+' rule)",
            field="region",
        )


def _resolve_region(
    session: icechunk.Session, ds: xr.Dataset, region: Mapping[str, Any], group: str | None
) -> dict[str, slice]:
    """Explicit slices for the region; ``"auto"`` dims located by coordinate value when possible.

    Dimensions that cannot be located are left out: xarray reports those itself, precisely.
    """
    out: dict[str, slice] = {}
    existing: xr.Dataset | None = None
    for dim, sl in region.items():
        if isinstance(sl, slice):
            if sl.step not in (None, 1):
                raise ConfigError(
                    f"region slices must be contiguous; got {dim}={sl!r}", field="region"
                )
            out[str(dim)] = sl
            continue
        if sl != "auto":
            raise ConfigError(
                f"expected a slice or 'auto' for dimension {dim!r}; got {sl!r}", field="region"
            )
        if dim not in ds.indexes:
            out[str(dim)] = slice(0, int(ds.sizes[dim])) if dim in ds.sizes else slice(None)
            continue
        if existing is None:
            try:
                existing = xr.open_zarr(
                    session.store,
                    group=group,
                    consolidated=False,
                    chunks=None,
                    zarr_format=3,
                )
            except (FileNotFoundError, KeyError, ValueError):
                return out
        if dim not in existing.indexes:
            continue
        positions = existing.indexes[dim].get_indexer(ds.indexes[dim])
        if len(positions) and (positions >= 0).all() and (np.diff(positions) == 1).all():
            out[str(dim)] = slice(int(positions[0]), int(positions[-1]) + 1)
    return out


def _write_virtual(
    session: icechunk.Session,
    ds: xr.Dataset,
    *,
    group: str | None,
    mode: str | None,
    append_dim: str | None,
    region: Region | None,
) -> None:
    if mode == "r+" and region is not None:
        mode = None  # VirtualiZarr opens the existing group for region writes by itself
    if mode is not None and mode not in _VIRTUAL_MODES:
        raise ConfigError(
            f"virtual datasets are written with mode 'w', 'w-' or 'a' (or None); got {mode!r}",
            field="mode",
        )
    configured = [c.url_prefix for c in (session.config.virtual_chunk_containers or {}).values()]
    missing = [p for p in virtual_locations(ds) if not any(p.startswith(c) for c in configured)]
    if missing:
        raise ConfigError(
            f"the virtual references point into {', '.join(missing)}, for which the repository "
            "has no virtual chunk container; pass the repository as a path to "
            "icepipe.to_icechunk (it adds them), or add an icechunk.VirtualChunkContainer per "
            "location to its config and save_config()"
        )
    what = f"virtual {_names(ds)} into {_group_label(group)}"
    try:
        with warnings.catch_warnings():
            # netCDF char arrays have no Zarr v3 dtype spec yet (see sources/scan.py).
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            ds.vz.to_icechunk(
                session.store,
                group=group,
                mode=mode,  # type: ignore[arg-type]
                append_dim=append_dim,
                region=region,
            )
    except Exception as exc:
        raise _convert_write_error(exc, what, group=group) from exc


def _convert_write_error(exc: Exception, what: str, *, group: str | None) -> Exception:
    """The icepipe error for an exception raised while writing (the exception itself if none)."""
    if isinstance(exc, IcepipeError):
        return exc
    exists = zarr.errors.ContainsGroupError | zarr.errors.ContainsArrayError | FileExistsError
    if isinstance(exc, exists):
        return TargetExistsError(
            f"cannot write {what}: {_group_label(group)} already holds data; pass mode='w' to "
            "replace it, mode='a' to add or overwrite variables, append_dim to append, or "
            "region to overwrite part of it",
            field="mode",
        )
    if isinstance(exc, zarr.errors.NodeNotFoundError | FileNotFoundError):
        return TargetNotFoundError(
            f"cannot write {what}: {exc}; create the group first (mode='w-', without "
            "append_dim or region)"
        )
    if isinstance(exc, icechunk.IcechunkError) and not isinstance(exc, ValueError):
        hint = (
            " (worker processes cannot reach an in-memory repository: write it with the "
            "threaded scheduler, dask.config.set(scheduler='threads'), or use a repository on "
            "disk or object storage)"
            if getattr(exc, "kind", None) == "object-not-found"
            else ""
        )
        if hint:
            return StorageError(f"cannot write {what}: {exc}{hint}; retry")
        return storage_failure(exc, f"cannot write {what}")
    if type(exc).__name__ == "KilledWorker":
        return StorageError(
            f"cannot write {what}: a Dask worker died repeatedly while writing ({exc}); give "
            "workers more memory or smaller chunks, and retry"
        )
    # Keep the built-in type xarray raised (code written for icechunk.xarray.to_icechunk
    # catches it), as an icepipe ConfigError.
    if isinstance(exc, KeyError):
        return WriteKeyError(f"cannot write {what}: {exc.args[0] if exc.args else exc}")
    if isinstance(exc, TypeError):
        return ArgumentTypeError(f"cannot write {what}: {exc}")
    if isinstance(exc, ValueError):
        return ConfigError(f"cannot write {what}: {exc}")
    if isinstance(exc, OSError):
        return storage_failure(exc, f"cannot write {what}")
    return exc


# ----------------------------------------------------------------------------------------------
# Committing
# ----------------------------------------------------------------------------------------------


def check_write_args(
    ds: object, *, mode: str | None, metadata: Mapping[str, Any], max_attempts: int
) -> None:
    """The checks of :func:`write_and_commit` that need no storage: run them before creating
    a repository for the write.

    Raises
    ------
    ConfigError
        ``ds`` is not a Dataset, ``mode`` is unknown, ``max_attempts`` is below 1, or
        ``metadata`` is not JSON.
    """
    _check_dataset_and_mode(ds, mode)
    if max_attempts < 1:
        raise ConfigError(f"expected at least 1; got {max_attempts}", field="max_attempts")
    try:
        json.dumps(dict(metadata))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"commit metadata must be JSON: {exc}", field="metadata") from exc


def write_and_commit(
    repo: icechunk.Repository,
    ds: xr.Dataset,
    *,
    branch: str = "main",
    group: str | None = None,
    mode: WriteMode | None = None,
    append_dim: str | None = None,
    region: Region | None = None,
    encoding: Mapping[Any, Mapping[str, Any]] | None = None,
    safe_chunks: bool = True,
    align_chunks: bool | None = None,
    chunkmanager_store_kwargs: Mapping[Any, Any] | None = None,
    split_every: int | None = None,
    message: str,
    metadata: Mapping[str, Any],
    max_attempts: int = 5,
) -> str:
    """Write ``ds`` into ``branch`` of ``repo`` and commit it; return the snapshot id.

    The write starts from the branch tip. If the branch moves before the commit, the commit
    rebases over disjoint changes; when that cannot work (appends, resized arrays) the session
    is discarded and the whole write is redone on the new tip, up to ``max_attempts`` writes
    with exponential backoff and jitter. Chunks written by discarded attempts stay in storage
    unreferenced until ``garbage_collect``.

    ``safe_chunks``, ``align_chunks``, ``chunkmanager_store_kwargs`` and ``split_every`` are
    those of :func:`write_dataset`.

    Raises
    ------
    ConfigError
        Bad arguments (see :func:`write_dataset`); ``max_attempts`` below 1; metadata that is
        not JSON.
    ConflictError
        Another writer wrote the same chunks meanwhile (the message names arrays and chunks),
        or the branch kept moving for ``max_attempts`` attempts.
    StorageError
        Storage or cluster failure.
    """
    check_write_args(ds, mode=mode, metadata=metadata, max_attempts=max_attempts)
    lock = local_path(repo)
    # Worker processes cannot reach an in-memory repository: its forks must stay in-process.
    in_process = in_memory(repo)
    retry = Retry(max_attempts)
    last: StaleWriteError | None = None
    for attempt in retry.attempts():
        session = writable_session(repo, branch)
        with dask.config.set(scheduler="threads") if in_process else nullcontext():
            write_dataset(
                session,
                ds,
                group=group,
                mode=mode,
                append_dim=append_dim,
                region=region,
                encoding=encoding,
                safe_chunks=safe_chunks,
                align_chunks=align_chunks,
                # icechunk adds its own keys to the mapping: a fresh copy per attempt.
                chunkmanager_store_kwargs=dict(chunkmanager_store_kwargs or {}),
                split_every=split_every,
            )
        try:
            return commit(
                session,
                message=message,
                metadata=metadata,
                lock=lock,
                group=group,
                appending=append_dim is not None,
                allow_empty=True,
            )
        except StaleWriteError as exc:
            last = exc
        if not retry.is_last(attempt):
            retry.wait(attempt)
    raise ConflictError(
        f"gave up after {max_attempts} attempts: branch {branch!r} kept moving under this write "
        f"({last}); retry later, or raise max_attempts",
        conflicts=last.conflicts if last else (),
    ) from last
