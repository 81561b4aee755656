"""Scan results in columnar form: what the files of one layout share is kept once, each file
keeps only its own columns (chunk offsets and lengths, the values of its variables along the
concat dimension, the attributes that differ).

A scanned virtual dataset is an ``xarray.Dataset`` of a few variables, indexes and attribute
dicts: some 4 KB pickled and tens of KB of Python objects once unpickled, per file, although the
files of a series differ only in their chunk tables, their time values and a title. A batch of
scans is packed on the worker (:func:`pack_batch`): the files of one :class:`Skeleton` point at
the same skeleton object, so pickling the batch writes it once, and the client holds per file
only a :class:`PackedDataset`. :meth:`PackedDataset.to_dataset` gives the file's dataset back,
identical to the scanned one (checked once per skeleton when packing: a file whose dataset the
skeleton does not reproduce exactly stays unpacked). :func:`concat_packed` concatenates files of
one skeleton along the concat dimension straight from their columns, without a dataset per
file, as ``xarray.concat`` (``data_vars``/``coords="minimal"``, ``compat``/``combine_attrs``/
``join="override"``) does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "BatchColumns",
    "PackedDataset",
    "Skeleton",
    "attrs_differing",
    "concat_packed",
    "in_columns",
    "one_layout",
    "pack",
    "same_skeleton",
]

_Kind = Literal["virtual", "per-file", "shared"]


@dataclass(frozen=True, eq=False)
class _VarSkeleton:
    name: str
    dims: tuple[str, ...]
    attrs: dict[Any, Any]
    encoding: dict[Any, Any]
    #: ``virtual``: chunk references (``metadata``); ``per-file``: loaded values along the
    #: concat dimension, one column per file; ``shared``: loaded values every file has.
    kind: _Kind
    metadata: Any = None
    values: np.ndarray[Any, Any] | None = None
    #: ``per-file``: the values' dtype and shape, the concat dimension's length left out;
    #: ``virtual``: the shape of the chunk manifest (one entry per shard when sharded).
    form: tuple[Any, ...] = ()


@dataclass(frozen=True, eq=False)
class Skeleton:
    """What the scanned datasets of files laid out alike share: variables in order, their
    dimensions, encodings, chunk metadata, the values of variables without the concat
    dimension, and the attributes of the first file packed with it."""

    concat_dim: str
    variables: tuple[_VarSkeleton, ...]
    coords: tuple[str, ...]
    attrs: dict[Any, Any]
    #: The dataset's encoding without ``source`` (each file's own).
    encoding: dict[Any, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)


#: One virtual variable's references in one file: the path of every chunk (a single string
#: when all chunks are in one object, the usual case), their offsets and lengths.
_Refs = tuple[str | np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]


@dataclass(frozen=True, eq=False)
class BatchColumns:
    """The columns of the files of one skeleton packed in one batch, end to end: a handful of
    arrays per batch instead of a few per file (each a pickle frame and a Python object)."""

    #: Per ``virtual`` variable: each file's one path.
    paths: tuple[tuple[str, ...], ...]
    #: Per ``virtual`` variable: every file's offsets and lengths, flattened, one file after
    #: the other (the skeleton's metadata fixes how many chunks a file has).
    offsets: tuple[np.ndarray[Any, Any], ...]
    lengths: tuple[np.ndarray[Any, Any], ...]
    #: Per ``per-file`` variable: the files' values concatenated along the concat dimension,
    #: and where each file's begin (one more entry than files).
    values: tuple[np.ndarray[Any, Any], ...]
    starts: tuple[np.ndarray[Any, Any], ...]


@dataclass(frozen=True, eq=False, slots=True)
class PackedDataset:
    """One file's scanned virtual dataset as its skeleton plus its own columns (its own
    arrays, or its row ``row`` of a batch's :class:`BatchColumns`)."""

    skeleton: Skeleton
    #: Per ``virtual`` variable of the skeleton, in order (empty with ``columns``).
    refs: tuple[_Refs, ...]
    #: Per ``per-file`` variable of the skeleton, in order (empty with ``columns``).
    values: tuple[np.ndarray[Any, Any], ...]
    #: Attributes that differ from the skeleton's: variable name (``""``: the dataset) ->
    #: the whole attribute dict.
    attrs: dict[str, dict[Any, Any]]
    #: ``encoding["source"]`` of the dataset, if it has one.
    source: Any = None
    columns: BatchColumns | None = None
    row: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        """The dataset's variable names, in order."""
        return self.skeleton.names

    def file_refs(self) -> tuple[_Refs, ...]:
        """Per ``virtual`` variable: this file's paths, offsets and lengths (chunk grid)."""
        c = self.columns
        if c is None:
            return self.refs
        out = []
        virtual = [v for v in self.skeleton.variables if v.kind == "virtual"]
        for k, v in enumerate(virtual):
            grid = v.form
            size = math.prod(grid)
            span = slice(self.row * size, (self.row + 1) * size)
            out.append(
                (
                    c.paths[k][self.row],
                    c.offsets[k][span].reshape(grid),
                    c.lengths[k][span].reshape(grid),
                )
            )
        return tuple(out)

    def file_values(self) -> tuple[np.ndarray[Any, Any], ...]:
        """Per ``per-file`` variable: this file's values."""
        c = self.columns
        if c is None:
            return self.values
        out = []
        per_file = [v for v in self.skeleton.variables if v.kind == "per-file"]
        for k, v in enumerate(per_file):
            axis = v.dims.index(self.skeleton.concat_dim)
            begin, end = int(c.starts[k][self.row]), int(c.starts[k][self.row + 1])
            out.append(np.take(c.values[k], np.arange(begin, end), axis=axis))
        return tuple(out)

    def to_dataset(self) -> xr.Dataset:
        """The file's dataset, as scanned."""
        import xarray as xr

        sk = self.skeleton
        refs, values = iter(self.file_refs()), iter(self.file_values())
        variables: dict[str, xr.Variable] = {}
        for v in sk.variables:
            data: Any
            if v.kind == "virtual":
                data = _manifest_array(v.metadata, next(refs))
            elif v.kind == "per-file":
                data = next(values)
            else:
                data = v.values
            attrs = dict(self.attrs.get(v.name, v.attrs))
            variables[v.name] = xr.Variable(v.dims, data, attrs=attrs, encoding=dict(v.encoding))
        ds = xr.Dataset(variables, attrs=dict(self.attrs.get("", sk.attrs)))
        others = [n for n in sk.coords if n not in ds.coords]
        if others:
            ds = ds.set_coords(others)
        ds.encoding = (
            {**sk.encoding, "source": self.source} if self.source is not None else dict(sk.encoding)
        )
        return ds


def in_columns(files: list[PackedDataset]) -> list[PackedDataset]:
    """``files`` (packed in one batch) with those of each skeleton whose chunks each sit in one
    object moved into one :class:`BatchColumns` per skeleton; the others as they are."""
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(files):
        if f.columns is None and all(isinstance(r[0], str) for r in f.refs):
            groups.setdefault(id(f.skeleton), []).append(i)
    out = list(files)
    for rows in groups.values():
        members = [files[i] for i in rows]
        sk = members[0].skeleton
        per_file = [v for v in sk.variables if v.kind == "per-file"]
        starts = []
        for k, v in enumerate(per_file):
            axis = v.dims.index(sk.concat_dim)
            lengths = [f.values[k].shape[axis] for f in members]
            starts.append(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        n_virtual = len(members[0].refs)
        columns = BatchColumns(
            paths=tuple(tuple(str(f.refs[k][0]) for f in members) for k in range(n_virtual)),
            offsets=tuple(
                np.concatenate([f.refs[k][1].ravel() for f in members]) for k in range(n_virtual)
            ),
            lengths=tuple(
                np.concatenate([f.refs[k][2].ravel() for f in members]) for k in range(n_virtual)
            ),
            values=tuple(
                np.concatenate([f.values[k] for f in members], axis=v.dims.index(sk.concat_dim))
                for k, v in enumerate(per_file)
            ),
            starts=tuple(starts),
        )
        for row, (i, f) in enumerate(zip(rows, members, strict=True)):
            out[i] = PackedDataset(
                skeleton=f.skeleton,
                refs=(),
                values=(),
                attrs=f.attrs,
                source=f.source,
                columns=columns,
                row=row,
            )
    return out


def _manifest_array(metadata: Any, refs: _Refs) -> Any:
    from virtualizarr.manifests import ChunkManifest, ManifestArray

    paths, offsets, lengths = refs
    if isinstance(paths, str):
        paths = np.full(offsets.shape, paths, dtype=np.dtypes.StringDType())
    manifest = ChunkManifest.from_arrays(
        paths=paths, offsets=offsets, lengths=lengths, validate_paths=False
    )
    return ManifestArray(metadata=metadata, chunkmanifest=manifest)


def _refs_of(data: Any) -> _Refs | None:
    """A ManifestArray's references as columns, or None when it holds inlined chunks."""
    manifest = data.manifest
    if manifest._inlined:
        return None
    paths = manifest._paths
    first = paths.flat[0] if paths.size else ""
    if first and bool((paths == first).all()):
        return str(first), manifest._offsets, manifest._lengths
    return paths, manifest._offsets, manifest._lengths


def _skeleton_and_columns(
    ds: xr.Dataset, concat_dim: str
) -> tuple[Skeleton, tuple[_Refs, ...], tuple[np.ndarray[Any, Any], ...]] | None:
    """``ds`` split into a new skeleton and its columns, or None when it holds something this
    module does not pack (inlined chunks, values that are not numpy arrays)."""
    from virtualizarr.manifests import ManifestArray

    variables: list[_VarSkeleton] = []
    refs: list[_Refs] = []
    values: list[np.ndarray[Any, Any]] = []
    for name, var in ds.variables.items():
        data = var.data
        kind: _Kind
        if isinstance(data, ManifestArray):
            columns = _refs_of(data)
            if columns is None:
                return None
            refs.append(columns)
            kind = "virtual"
        elif isinstance(data, np.ndarray):
            kind = "per-file" if concat_dim in var.dims else "shared"
            if kind == "per-file":
                values.append(data)
        else:
            return None
        variables.append(
            _VarSkeleton(
                name=str(name),
                dims=tuple(str(d) for d in var.dims),
                attrs=var.attrs,
                encoding=var.encoding,
                kind=kind,
                metadata=data.metadata if kind == "virtual" else None,
                values=data if kind == "shared" else None,
                form=(
                    _form(data, var.dims, concat_dim)
                    if kind == "per-file"
                    else tuple(data.manifest._offsets.shape)
                    if kind == "virtual"
                    else ()
                ),
            )
        )
    encoding = {k: v for k, v in ds.encoding.items() if k != "source"}
    skeleton = Skeleton(
        concat_dim=concat_dim,
        variables=tuple(variables),
        coords=tuple(str(c) for c in ds.coords),
        attrs=ds.attrs,
        encoding=encoding,
    )
    return skeleton, tuple(refs), tuple(values)


def _form(data: np.ndarray[Any, Any], dims: Any, concat_dim: str) -> tuple[Any, ...]:
    shape = tuple(-1 if d == concat_dim else n for d, n in zip(dims, data.shape, strict=True))
    return (data.dtype.str, shape)


def same_skeleton(a: Skeleton, b: Skeleton) -> bool:
    """Whether two skeletons describe the same layout (attributes aside: those are kept per
    file where they differ)."""
    if a.concat_dim != b.concat_dim or a.coords != b.coords or a.names != b.names:
        return False
    if not _same_mapping(a.encoding, b.encoding):
        return False
    for va, vb in zip(a.variables, b.variables, strict=True):
        if va.dims != vb.dims or va.kind != vb.kind or va.form != vb.form:
            return False
        if not _same_mapping(va.encoding, vb.encoding):
            return False
        if va.kind == "virtual" and va.metadata != vb.metadata:
            return False
        if va.kind == "shared" and not _same_array(va.values, vb.values):
            return False
    return True


def pack(
    ds: xr.Dataset, concat_dim: str, known: list[Skeleton] | None = None
) -> PackedDataset | None:
    """``ds`` packed onto one of the ``known`` skeletons (most recent last), or onto a new one
    appended to ``known`` once it reproduces ``ds`` exactly; None when ``ds`` cannot be packed
    exactly (it is then kept as a dataset)."""
    from icepipe.sources.formats.hdf5_index import same_dataset

    split = _skeleton_and_columns(ds, concat_dim)
    if split is None:
        return None
    mine, refs, values = split
    known = [] if known is None else known
    for skeleton in reversed(known):
        if same_skeleton(mine, skeleton):
            return PackedDataset(
                skeleton=skeleton,
                refs=refs,
                values=values,
                attrs=_attrs_differing(mine, skeleton),
                source=ds.encoding.get("source"),
            )
    packed = PackedDataset(
        skeleton=mine, refs=refs, values=values, attrs=_SAME_ATTRS, source=ds.encoding.get("source")
    )
    try:
        exact = same_dataset(packed.to_dataset(), ds)
    except Exception:  # e.g. array-valued attributes xarray cannot compare: keep the dataset
        exact = False
    if not exact:
        return None
    known.append(mine)
    return packed


#: The attributes of a file that has the skeleton's (one object: it is never changed).
_SAME_ATTRS: dict[str, dict[Any, Any]] = {}


def _attrs_differing(mine: Skeleton, skeleton: Skeleton) -> dict[str, dict[Any, Any]]:
    attrs = {"": mine.attrs} | {v.name: v.attrs for v in mine.variables}
    return attrs_differing(skeleton, attrs)


def attrs_differing(
    skeleton: Skeleton, attrs: dict[str, dict[Any, Any]]
) -> dict[str, dict[Any, Any]]:
    """Of a file's attributes by variable (``""``: the dataset's), those that differ from
    ``skeleton``'s: what :attr:`PackedDataset.attrs` keeps."""
    out: dict[str, dict[Any, Any]] = {}
    if not _same_mapping(attrs[""], skeleton.attrs):
        out[""] = attrs[""]
    for v in skeleton.variables:
        if not _same_mapping(attrs[v.name], v.attrs):
            out[v.name] = attrs[v.name]
    return out or _SAME_ATTRS


def concat_packed(files: Sequence[PackedDataset], concat_dim: str) -> xr.Dataset | None:
    """The files, of one skeleton and already ordered, concatenated along the concat dimension
    as ``xarray.concat`` does for the scans (see the module docstring); None when they do not
    share one skeleton or a variable without the concat dimension is virtual (the caller then
    concatenates their datasets)."""
    import xarray as xr

    if not one_layout(files, concat_dim):
        return None
    sk = files[0].skeleton
    dim = sk.concat_dim
    first = files[0]
    refs = [f.file_refs() for f in files]
    values = [f.file_values() for f in files]
    variables: dict[str, xr.Variable] = {}
    v_index = p_index = 0
    for v in sk.variables:
        attrs = dict(first.attrs.get(v.name, v.attrs))
        data: Any
        if v.kind == "virtual":
            data = _concat_refs(v.metadata, [r[v_index] for r in refs], v.dims.index(dim))
            v_index += 1
        elif v.kind == "per-file":
            axis = v.dims.index(dim)
            data = np.concatenate([f[p_index] for f in values], axis=axis)
            p_index += 1
        else:
            data = v.values
        variables[v.name] = xr.Variable(v.dims, data, attrs=attrs, encoding=dict(v.encoding))
    # In the order xarray.concat gives them (it depends on the layout only): concatenate the
    # first file with itself.
    one = first.to_dataset()
    model = xr.concat([one, one], dim=dim, **_CONCAT)
    ds = xr.Dataset(
        {n: variables[str(n)] for n in model.variables},
        attrs=dict(first.attrs.get("", sk.attrs)),
    )
    others = [n for n in model.coords if n not in ds.coords]
    if others:
        ds = ds.set_coords(others)
    ds.encoding = dict(model.encoding)
    return ds


def one_layout(files: Sequence[PackedDataset], concat_dim: str) -> bool:
    """Whether :func:`concat_packed` concatenates ``files``: packed on one skeleton (so they
    share every variable without ``concat_dim``), every virtual variable along ``concat_dim``
    (xarray takes the first file's others: as rare as it is, left to it)."""
    if not files:
        return False
    sk = files[0].skeleton
    # Batches packed apart hold equal skeletons, each its own object.
    distinct = {id(f.skeleton): f.skeleton for f in files}
    if sk.concat_dim != concat_dim or not all(same_skeleton(s, sk) for s in distinct.values()):
        return False
    return all(concat_dim in v.dims for v in sk.variables if v.kind == "virtual")


def _concat_refs(metadata: Any, refs: list[_Refs], axis: int) -> Any:
    """One variable's references of files of one layout concatenated along ``axis``, as
    VirtualiZarr's ``concatenate`` of their ManifestArrays gives them, without those."""
    from virtualizarr.manifests import ChunkManifest, ManifestArray
    from virtualizarr.manifests.utils import (
        check_no_partial_chunks_on_concat_axis,
        copy_and_replace_metadata,
        manifest_chunk_shape,
    )

    shape = list(metadata.shape)
    chunks = manifest_chunk_shape(metadata)  # a shard's when sharded
    check_no_partial_chunks_on_concat_axis([tuple(shape)] * len(refs), [chunks] * len(refs), axis)
    offsets = np.concatenate([r[1] for r in refs], axis=axis)
    lengths = np.concatenate([r[2] for r in refs], axis=axis)
    paths: Any
    if axis == 0 and all(isinstance(r[0], str) for r in refs):
        # Each file's block of the grid is contiguous: one path repeated per chunk.
        per_file = np.array([r[0] for r in refs], dtype=np.dtypes.StringDType())
        paths = np.repeat(per_file, refs[0][1].size).reshape(offsets.shape)
    else:
        paths = np.concatenate(
            [
                np.full(r[1].shape, r[0], dtype=np.dtypes.StringDType())
                if isinstance(r[0], str)
                else r[0]
                for r in refs
            ],
            axis=axis,
        )
    shape[axis] *= len(refs)
    manifest = ChunkManifest.from_arrays(
        paths=paths, offsets=offsets, lengths=lengths, validate_paths=False
    )
    return ManifestArray(
        metadata=copy_and_replace_metadata(old_metadata=metadata, new_shape=shape),
        chunkmanifest=manifest,
    )


#: How the scans of a run are concatenated (``icepipe.sources.combine_virtual``).
_CONCAT: dict[str, Any] = {
    "data_vars": "minimal",
    "coords": "minimal",
    "compat": "override",
    "combine_attrs": "override",
    "join": "override",
}


def _same_array(a: np.ndarray[Any, Any] | None, b: np.ndarray[Any, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _same_mapping(a: Any, b: Any) -> bool:
    """:func:`~icepipe.sources.formats.hdf5_index.same_mapping`, keys in the same order too (a
    packed file rebuilds its dicts in the skeleton's order)."""
    from icepipe.sources.formats.hdf5_index import same_mapping

    return a is b or (list(a) == list(b) and same_mapping(a, b))
