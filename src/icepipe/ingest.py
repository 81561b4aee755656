"""The write stage of a run: one group's planned slots written into a session.

:func:`write_part` takes what the plan decided for one target group (:class:`Part`: regions,
re-ingests, appends) and writes it: virtual references through
:func:`icepipe.repository.write_virtual`, natively read variables of a virtual ingest through
:func:`write_fallback`, native chunks through :func:`icepipe.repository.native.write_dataset`
(forked sessions on the cluster). Files are opened lazily here (:func:`open_native`), which is
why this stage sits above both :mod:`icepipe.sources` and :mod:`icepipe.repository`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from icepipe import plan, repository, sources
from icepipe.errors import ConfigError, SchemaMismatchError, SourceError
from icepipe.model import TargetSchema, TimeConversion
from icepipe.spec import Pipeline

__all__ = [
    "LOADED_CHUNK_BYTES",
    "Part",
    "loaded_chunks",
    "open_native",
    "stored_grid",
    "write_fallback",
    "write_part",
    "write_rectilinear_part",
]


@dataclass
class Part:
    """What one run writes into one group: the pipeline's group, or (``source.grib_cubes``)
    the subgroup of one GRIB hypercube."""

    cube: str | None
    group: str | None
    existing: TargetSchema
    new: list[sources.ScannedFile]
    changed: list[tuple[sources.ScannedFile, Mapping[str, Any]]]
    ledger_slots: list[plan.Slot]
    append_plan: plan.AppendPlan | None = None
    reingest: list[plan.Slot] = field(default_factory=list)

    @property
    def slots(self) -> list[plan.Slot]:
        p = self.append_plan
        return [*(p.regions if p else ()), *self.reingest, *(p.appends if p else ())]

    @property
    def by_url(self) -> dict[str, sources.ScannedFile]:
        return {s.source.url: s for s in [*self.new, *(c for c, _ in self.changed)]}


def write_part(pipeline: Pipeline, session: Any, part: Part) -> dict[str, Any]:
    """Write one part's regions then appends into ``session``; return the layout for the
    commit metadata.

    Raises
    ------
    SourceError
        A source file cannot be decoded while its data are copied (a corrupt compressed chunk
        passes the scan, which reads only metadata): the file and variable are named.
    """
    try:
        return _write_part(pipeline, session, part)
    except Exception as exc:
        if not _is_source_read_failure(exc):
            raise
        bad = unreadable_source(pipeline, list(part.by_url.values()))
        if bad is None:
            raise
        raise bad from exc


#: What h5py, netCDF-C, zlib and friends say when the bytes of a chunk cannot be decoded.
_READ_FAILURES = (
    "filter returned failure",
    "can't synchronously read data",
    "can't read data",
    "netcdf: hdf error",
    "error -3 while decompressing",
    "incorrect header check",
    "invalid stored block",
    "buffer size mismatch",
)


def _is_source_read_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if any(m in str(seen).lower() for m in _READ_FAILURES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unreadable_source(pipeline: Pipeline, files: list[sources.ScannedFile]) -> SourceError | None:
    """The first of ``files`` whose data cannot be read, as a :class:`SourceError` naming the
    file and the variable (``None`` when all of them read): the slow path after a failed
    write, reading each file's variables in this process."""
    for f in files:
        try:
            ds = open_native(pipeline, [f], {}, None)
        except SourceError as exc:
            return exc
        with ds:  # closed here, in this thread (netCDF-C and HDF5 are not thread-safe)
            for name in ds.data_vars:
                try:
                    ds[name].load()
                except Exception as exc:
                    return SourceError(
                        f"{f.source.url}: variable {name!r} cannot be read "
                        f"({_first_line(exc)}): the file is corrupt or truncated; replace it, "
                        "or remove it from source.urls",
                        url=f.source.url,
                    )
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _write_part(pipeline: Pipeline, session: Any, part: Part) -> dict[str, Any]:
    from icepipe.repository.native import write_dataset

    assert part.append_plan is not None
    p, files, group, existing = part.append_plan, part.by_url, part.group, part.existing
    dim = pipeline.source.concat_dim
    virtual = pipeline.mode == "virtual"
    if not virtual:
        rule, stored = _concat_rule(pipeline, session, group)
        if rule is not None:
            return write_rectilinear_part(pipeline, session, part, rule, stored)
    for slot in [*p.regions, *part.reingest]:
        region = {dim: slice(slot.start, slot.start + slot.length)}
        if virtual:
            ds = sources.normalize_times(
                files[slot.url].dataset, p.conversions.get(slot.url, {}), slot.url
            )
            rect = _stored_rectilinear(existing, dim, ds)
            if dim in ds.drop_vars(rect).dims:  # else only rectilinear variables have ``dim``
                repository.write_virtual(
                    session, ds.drop_vars(rect), group=group, region=region, urls=[slot.url]
                )
            repository.write_rectilinear(
                session, [(slot.url, ds)], rect, group=group, dim=dim, start=slot.start
            )
            write_fallback(pipeline, session, [files[slot.url]], group, region=region)
        else:
            grid = stored_grid(existing)
            with open_native(pipeline, [files[slot.url]], p.conversions, grid) as ds:
                ds = ds.drop_vars([n for n, v in ds.variables.items() if dim not in v.dims])
                # A file need not fill whole chunks (3 steps into chunks of 4): the write is
                # rechunked onto the stored grid, one task per chunk (the boundary chunks
                # read back and rewritten by that task alone), and each slot's forks are
                # merged before the next slot forks: nothing else writes those chunks.
                write_dataset(
                    session,
                    repository.without_attrs(ds),
                    group=group,
                    region=region,
                    safe_chunks=False,
                )
    if not p.order:
        return {}
    ordered = [files[u] for u in p.order]
    append_dim = dim if p.append else None
    if virtual:
        # Only files whose times change are rebuilt: packed scans stay packed (see
        # sources.combine_virtual).
        ordered = [
            dataclasses.replace(
                f,
                content=sources.normalize_times(f.dataset, conv, f.source.url),
            )
            if (conv := p.conversions.get(f.source.url))
            else f
            for f in ordered
        ]
        _append_virtual(session, ordered, p, group, dim, append_dim)
        write_fallback(pipeline, session, ordered, group, append_dim=append_dim)
        return {}
    native = pipeline.native
    if p.append:
        with open_native(pipeline, ordered, p.conversions, stored_grid(existing)) as opened:
            # The stored chunk (shard) grid stays: write_dataset aligns the write tasks to it.
            ds = repository.without_attrs(opened)
            # xarray's append replaces the group's attributes: write back the stored ones.
            ds.attrs = repository.read_group_attrs(session, group)
            # Time units xarray cannot decode (year 0, months): appended undecoded, by icepipe.
            assert append_dim is not None
            ds, raw = repository.split_undecodable(session, ds, group, append_dim)
            write_dataset(session, ds, group=group, append_dim=append_dim)
            repository.append_raw(session, raw, group, append_dim, list(p.order))
        return {}
    dims = {**ordered[0].schema.dims, dim: p.new_length}
    chunk_len, task_len = plan.plan_chunks(
        dims, dim, ordered[0].schema.dims[dim], chunks=_lengths(native.chunks), shards=native.shards
    )
    with open_native(pipeline, ordered, p.conversions, task_len) as ds:
        encoding = repository.native_encoding(
            ds,
            chunk_len,
            shard_len=task_len if native.shards else None,
            compression=native.compression,
        )
        if dim not in native.chunks:
            # The index coordinate is in memory (xarray never chunks it): stored in chunks of
            # LOADED_CHUNK_BYTES rather than one per file, the data's default.
            index = ds.drop_vars([n for n in ds.variables if n not in ds.indexes])
            for name, var in loaded_chunks(index, dim).variables.items():
                if str(name) in encoding and dim in var.dims:
                    kept = {k: v for k, v in encoding[str(name)].items() if k != "shards"}
                    encoding[str(name)] = {**kept, "chunks": var.encoding["chunks"]}
        # Decoding may remove dimensions the scan saw (the string length of char arrays).
        tasks = {d: n for d, n in task_len.items() if d in ds.dims}
        write_dataset(session, ds.chunk(tasks), group=group, mode="w-", encoding=encoding)
    return {
        "chunks": chunk_len,
        "shards": task_len if native.shards else None,
        "compression": native.compression,
    }


def _lengths(chunks: Mapping[str, int | str]) -> dict[str, int]:
    return {d: n for d, n in chunks.items() if isinstance(n, int)}


def _concat_rule(
    pipeline: Pipeline, session: Any, group: str | None
) -> tuple[str | None, tuple[int, ...]]:
    """The ``chunks.<concat_dim>`` rule (``file``, ``month``, ...) of a native ingest, or
    ``None`` for regular chunks; and the group's stored edges along the concat dimension.

    Raises
    ------
    ConfigError
        The group stores a rectilinear grid along the concat dimension but the pipeline now
        gives a chunk length (xarray cannot append to such arrays), or the reverse.
    """
    dim = pipeline.source.concat_dim
    rule = pipeline.native.chunks.get(dim)
    edges, rectilinear = repository.stored_edges(session, group, dim)
    if rectilinear and not isinstance(rule, str):
        raise ConfigError(
            f"{group or '/'!r} stores chunks of different lengths along {dim!r} (a native "
            "ingest with chunks that follow the files or the calendar); set chunks."
            f"{dim} back to the rule it was created with (file, day, month or year: the "
            "metadata of the commit that created the group records it under 'chunks'), or "
            "ingest into a new group",
            field=f"chunks.{dim}",
        )
    if isinstance(rule, str) and edges and not rectilinear and len(edges) > 1:
        raise ConfigError(
            f"{group or '/'!r} stores regular chunks of {edges[0]} along {dim!r}, but the "
            f"pipeline asks for chunks.{dim}: {rule}; set chunks.{dim}: {edges[0]} as when "
            "the group was created, or ingest into a new group",
            field=f"chunks.{dim}",
        )
    return (rule if isinstance(rule, str) else None), edges


def write_rectilinear_part(
    pipeline: Pipeline, session: Any, part: Part, rule: str, stored: tuple[int, ...]
) -> dict[str, Any]:
    """:func:`write_part` for native ingests with chunks that follow the files or the calendar
    along the concat dimension (``chunks: {time: month}``): a rectilinear grid whose edges
    :func:`icepipe.plan.plan_edges` decides, written by
    :mod:`icepipe.repository.native_rectilinear`. ``stored``: the group's edges along the
    concat dimension (regions and re-ingests rewrite chunks inside them, never change them).
    """
    from icepipe.repository.native_rectilinear import create_rectilinear, write_native_rectilinear

    assert part.append_plan is not None
    p, files, group, existing = part.append_plan, part.by_url, part.group, part.existing
    dim, native = pipeline.source.concat_dim, pipeline.native
    for slot in [*p.regions, *part.reingest]:
        grid = stored_grid(existing)
        with open_native(pipeline, [files[slot.url]], p.conversions, grid) as ds:
            ds = ds.drop_vars([n for n, v in ds.variables.items() if dim not in v.dims])
            write_native_rectilinear(
                session, ds, group=group, dim=dim, start=slot.start, edges=stored
            )
    if not p.order:
        return {}
    ordered = [files[u] for u in p.order]
    edges = plan.plan_edges(
        rule,
        [f.schema for f in ordered],
        existing,
        dim,
        stored_edges=stored if p.append else (),
        order_by=pipeline.source.order_by,
    ).edges
    if p.append:
        with open_native(pipeline, ordered, p.conversions, stored_grid(existing)) as ds:
            ds = ds.drop_vars([n for n, v in ds.variables.items() if dim not in v.dims])
            write_native_rectilinear(
                session, ds, group=group, dim=dim, start=sum(stored), edges=edges
            )
        return {}
    dims = {**ordered[0].schema.dims, dim: p.new_length}
    chunk_len, _ = plan.plan_chunks(dims, dim, max(edges), chunks=_lengths(native.chunks))
    with open_native(pipeline, ordered, p.conversions, chunk_len) as ds:
        encoding = repository.native_encoding(
            ds, chunk_len, shard_len=None, compression=native.compression
        )
        create_rectilinear(session, ds, group=group, dim=dim, edges=edges, encoding=encoding)
    return {"chunks": {**chunk_len, dim: rule}, "shards": None, "compression": native.compression}


def write_fallback(
    pipeline: Pipeline,
    session: Any,
    files: list[sources.ScannedFile],
    group: str | None,
    *,
    append_dim: str | None = None,
    region: dict[str, slice] | None = None,
) -> None:
    """Write the variables a virtual ingest reads natively (GRIB fallback) as ordinary chunks.

    Called after the virtual write of the same files: the coordinates are stored already, so
    only the data variables are written, on the chunk grid their virtual twins would have had
    (one chunk per GRIB message), with the attributes the scan gave them.
    """
    names = list(dict.fromkeys(n for f in files for n in f.fallback))
    if not names:
        return
    if append_dim is not None or region is not None:
        from icepipe.codecs import GRIB_CODEC_NAME

        referenced = repository.arrays_with_codec(session, group, names, GRIB_CODEC_NAME)
        if referenced:
            urls = ", ".join(f.source.url for f in files[:3])
            raise SchemaMismatchError(
                f"{urls}: variable(s) {', '.join(referenced)} must be read natively from these "
                "files (the GRIB codec cannot decode their messages), but the repository "
                f"stores them as GRIB references in {group or '/'!r}; ingest these files into a "
                "new group, or list the variable(s) in source.drop_variables",
                urls=[f.source.url for f in files],
            )
    src = pipeline.source
    schema = files[0].schema.variables
    only = sources.ScanOptions(
        concat_dim=src.concat_dim, variables=tuple(names), storage=src.storage
    )
    with sources.open_files(
        [f.source.url for f in files],
        [f.schema.format for f in files],
        only,
        chunks={src.concat_dim: -1},
    ) as opened:
        _write_fallback_data(session, opened, names, schema, group, append_dim, region)


def _write_fallback_data(
    session: Any,
    ds: Any,
    names: list[str],
    schema: Mapping[str, Any],
    group: str | None,
    append_dim: str | None,
    region: dict[str, slice] | None,
) -> None:
    from icepipe.repository.native import write_dataset

    ds = ds[names]
    ds = ds.drop_vars(list(ds.coords))
    ds = ds.chunk(
        {d: c for n in names for d, c in zip(schema[n].dims, schema[n].chunks or (), strict=True)}
    )
    ds = sources.sanitize_attrs(ds)
    for n in names:
        ds[n].attrs = {k: v for k, v in ds[n].attrs.items() if k != "coordinates"}
        ds[n].encoding = {}
    # xarray replaces the group's attributes (the coordinates list among them) with the
    # dataset's: hand it the stored ones.
    ds.attrs = repository.read_group_attrs(session, group)
    if region is not None:
        write_dataset(session, ds, group=group, region=region)
    elif append_dim is not None:
        write_dataset(session, ds, group=group, append_dim=append_dim)
    else:
        encoding = {n: {"chunks": schema[n].chunks} for n in names}
        write_dataset(session, ds, group=group, mode="a", encoding=encoding)


def _append_virtual(
    session: Any,
    ordered: list[sources.ScannedFile],
    p: plan.AppendPlan,
    group: str | None,
    dim: str,
    append_dim: str | None,
) -> None:
    """Write the files' virtual datasets: variables on one regular grid concatenated through
    VirtualiZarr, those whose chunks differ between files on a rectilinear grid, file by
    file. Many files of one layout are written in pieces of :data:`WRITE_PIECE_FILES`, each
    appended to the last (:func:`icepipe.sources.virtual_pieces`)."""
    # Variables read natively (GRIB fallback) are not in the datasets: write_fallback's.
    rect = [n for n in p.rectilinear if all(n in f.variable_names for f in ordered)]
    pieces = [ordered] if rect else sources.virtual_pieces(ordered, dim, WRITE_PIECE_FILES)
    for k, piece in enumerate(pieces):
        _write_virtual_piece(
            session, piece, rect, group, dim, append_dim if k == 0 else dim, list(p.order)
        )


#: Files whose references one VirtualiZarr write takes at most (in a run over more files of
#: one layout): the client holds their concatenated references, VirtualiZarr's list of their
#: chunks' paths and Icechunk's copy of it for one piece at a time, not for the whole run.
WRITE_PIECE_FILES = 2_000


def _write_virtual_piece(
    session: Any,
    ordered: list[sources.ScannedFile],
    rect: list[str],
    group: str | None,
    dim: str,
    append_dim: str | None,
    urls: list[str],
) -> None:
    """:func:`_append_virtual` for one piece of the files (``append_dim``: ``None`` when the
    piece creates the group's arrays)."""
    combined = sources.combine_virtual(
        [dataclasses.replace(f, content=f.dataset.drop_vars(rect)) for f in ordered]
        if rect
        else ordered,
        dim,
    )
    if append_dim is None:
        combined = loaded_chunks(combined, dim)
    raw: dict[str, Any] = {}
    if append_dim is not None and dim in combined.dims:
        # Time units xarray cannot decode: appended undecoded.
        combined, raw = repository.split_undecodable(session, combined, group, append_dim)
    # With only rectilinear variables (or undecodable times) along ``dim``, the rest is
    # stored already: nothing of it to append.
    if append_dim is None or dim in combined.dims:
        repository.write_virtual(session, combined, group=group, append_dim=append_dim, urls=urls)
    del combined
    if rect:
        repository.write_rectilinear(
            session,
            [(f.source.url, f.dataset) for f in ordered],
            rect,
            group=group,
            dim=dim,
            coords=[n for n in rect if n in ordered[0].dataset.coords],
        )
    if append_dim is not None:
        repository.append_raw(session, raw, group, append_dim, urls)


#: Bytes of one chunk, along the concat dimension, of a loaded variable that has it (the
#: concat coordinate, its bounds) when a run creates it: 8,192 int64 times (64 KiB, written
#: whole even when the array is shorter: chunks are stored padded). Appends keep the
#: stored chunks (and rewrite only the last one); planning reads the ends of the axis only.
LOADED_CHUNK_BYTES = 2**16


def loaded_chunks(ds: Any, dim: str) -> Any:
    """``ds`` with the loaded (not virtual) variables along ``dim`` chunked by
    :data:`LOADED_CHUNK_BYTES` along it.

    The files' own chunking (one chunk per file, as VirtualiZarr's scan reports it) would store
    the time coordinate of 50,000 files in 50,000 chunks, which every reader opening the archive
    reads one by one. The length depends on the variable's dtype and other dimensions only, so
    any split of a series into runs stores the chunks of one run.
    """
    out = ds.copy()
    for name, var in ds.variables.items():
        if dim not in var.dims or _is_virtual(var):
            continue
        chunks = var.encoding.get("chunks") or var.shape
        other = [c for d, c in zip(var.dims, chunks, strict=True) if d != dim]
        step_bytes = max(1, var.dtype.itemsize) * max(1, math.prod(other))
        length = max(1, LOADED_CHUNK_BYTES // step_bytes)
        new = tuple(length if d == dim else c for d, c in zip(var.dims, chunks, strict=True))
        encoding = {**var.encoding, "chunks": new}
        if "preferred_chunks" in encoding:
            encoding["preferred_chunks"] = dict(zip(var.dims, new, strict=True))
        out.variables[name].encoding = encoding
    return out


def _stored_rectilinear(existing: TargetSchema, dim: str, ds: Any) -> list[str]:
    """The variables of ``ds`` stored on a rectilinear grid along ``dim``."""
    return [
        n
        for n, v in existing.variables.items()
        if v.edges and dim in v.dims and n in ds.variables and _is_virtual(ds.variables[n])
    ]


def stored_grid(existing: TargetSchema) -> dict[str, int]:
    """Chunk lengths of the stored arrays per dimension (the largest where they differ)."""
    grid: dict[str, int] = {}
    for var in existing.variables.values():
        for d, c in zip(var.dims, var.chunks or (), strict=False):
            grid[d] = max(grid.get(d, 0), c)
    return grid


def open_native(
    pipeline: Pipeline,
    files: list[sources.ScannedFile],
    conversions: Mapping[str, Mapping[str, TimeConversion]],
    grid: Mapping[str, int] | None = None,
) -> Any:
    """Open ``files`` lazily, each aligned to ``grid`` (target task lengths) except along
    the concat dimension, where every file is one Dask chunk.

    Use as ``with open_native(...) as ds:`` around the write: that closes the files in this
    thread (see :func:`icepipe.sources.open_files`)."""
    src = pipeline.source
    chunks = {d: n for d, n in (grid or {}).items() if d != src.concat_dim}
    chunks[src.concat_dim] = -1
    ds = sources.open_files(
        [[m.url for m in f.members] if f.members else f.source.url for f in files],
        # Members' own formats: a GRIB hypercube's position differs between files.
        [list(f.member_formats) if f.members else f.schema.format for f in files],
        sources.ScanOptions.from_source(src, pipeline.mode),
        conversions=conversions,
        chunks=chunks,
    )
    clean = sources.sanitize_attrs(ds)
    clean.set_close(ds.close)
    return clean


def _is_virtual(var: Any) -> bool:
    # Imported here: the formats import xarray, which a run with nothing new never needs.
    from icepipe.sources.formats.common import is_virtual

    return is_virtual(var)
