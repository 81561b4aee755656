"""netCDF4/HDF5 scans at the speed of the chunk index: a file that shares its layout with a
file already scanned the slow way gets its virtual dataset from that file's, with only its chunk
table and loaded coordinates read.

The slow way (VirtualiZarr's ``HDFParser`` reading through a Python file object, then xarray
opening the parsed file as a Zarr store) costs tens of milliseconds a file; most of that is
metadata that every file of a series repeats. Here a file is opened once, by path, with
h5py's low-level API (``h5py.File``'s wrapper objects cost as much again as the reads), and
summarised into a *layout key*: the names, kinds, shapes, dtypes, chunk shapes, filters, fill
values, dimension names (through ``h5ds``, as VirtualiZarr finds them) and attribute values of
every dataset of the group (only the types of its ``long_name``, ``history`` and ``comment``
strings and of time ``units``; only the names of attributes no result depends on, see
``_HIDDEN_ATTRS``), and the attribute types of the group. The first file of each key goes
the slow way; its dataset becomes the key's *template* once a rebuild of that same file from
its template reproduces it exactly (otherwise the key is marked unusable, and its files keep
going the slow way). The next files of the key take the template's metadata, encodings and
attributes, their own chunk offsets and lengths (``chunk_iter``), loaded coordinates, group
attributes and those variable strings.

Anything this module does not reproduce exactly makes :func:`layout_of` return ``None`` (the
file goes the slow way): groups holding groups or links, compact, external or virtual storage,
object/compound/opaque dtypes, several dimension scales on one axis. Loaded variables whose
values differ from the template's are read raw when xarray would not change them on decoding
(no scale, offset, ``missing_value``, and no ``_FillValue`` other than NaN on floats), and
otherwise send the file the slow way. A chunk stored without some of its filters (its HDF5
filter mask) cannot be referenced on either way: :func:`check_filter_masks` refuses the file
(:func:`check_filter_masks_in` an object-store file, through the parser's reader).

Templates live in the worker process (a few, least recently used first out); they never travel.
``sources/quick.py``'s templates (finished, selected scans) share a layout's ``selected_key``
instead: the key over the datasets ``source.variables`` / ``drop_variables`` may keep.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from icepipe.sources.formats.selection import LINKING, may_keep
from icepipe.sources.formats.templates import Templates

if TYPE_CHECKING:
    import h5py
    import xarray as xr

__all__ = [
    "Layout",
    "MaskedChunkError",
    "check_filter_masks",
    "check_filter_masks_in",
    "chunk_table",
    "discard",
    "empty_datasets",
    "forget_templates",
    "hand_on",
    "layout_of",
    "per_file_value",
    "raw_decodes_to_itself",
    "read_raw",
    "remember",
    "same_dataset",
    "same_mapping",
    "scan_indexed",
]

# Templates kept per worker process: one per layout seen recently.
_MAX_TEMPLATES = 16
# Attributes whose values nothing reproduced here depends on: only their names are part of a
# layout key, and they are not read. VirtualiZarr's parser leaves them out of the dataset; it
# resolves dimensions through h5ds (DIMENSION_LIST, REFERENCE_LIST, CLASS: see _dims) and looks
# only whether "_Netcdf4Dimid" is there; netCDF-C's bookkeeping ("_Netcdf4Coordinates", the
# library versions of "_NCProperties") does not reach it.
_HIDDEN_ATTRS = {
    "DIMENSION_LIST",
    "REFERENCE_LIST",
    "CLASS",
    "_Netcdf4Dimid",
    "_Netcdf4Coordinates",
    "_nc3_strict",
    "_NCProperties",
}
# String attributes of variables whose values may differ between files of one layout (time
# units counted from each file's start, descriptions): read per file, as group attributes are.
_PER_FILE_VAR_ATTRS = {"units", "long_name", "history", "comment"}
# Attributes VirtualiZarr's parser leaves out (its ``_extract_attrs``): "NAME" is read (it
# tells a netCDF dimension without a variable, see _dataset_key).
_PARSER_HIDDEN = {*_HIDDEN_ATTRS, "NAME"}


@dataclass(slots=True)
class _Dataset:
    """One HDF5 dataset of the group, opened by h5py's low-level API."""

    id: h5py.h5d.DatasetID
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    #: The chunk shape (None: contiguous).
    chunks: tuple[int, ...] | None
    size: int


@dataclass
class Layout:
    """One open file's layout key and what a rebuild reads from it."""

    key: tuple[Any, ...]
    #: The open file (h5py's low-level ``FileID``).
    file: h5py.h5f.FileID
    #: Datasets of the group by name.
    datasets: dict[str, _Dataset]
    #: The group's attributes whose values may differ between files of one key.
    group_attrs: dict[str, Any]
    #: The same for each dataset (:data:`_PER_FILE_VAR_ATTRS`), by dataset name.
    var_attrs: dict[str, dict[str, Any]]
    #: Datasets of the group holding no values (a dimension of length 0), dimensions without
    #: a variable left out: what the reader's ``refused_variables`` reports.
    empty: list[str]
    #: The key over what ``source.variables`` / ``drop_variables`` may keep (see
    #: :func:`_left_out`): finished scans (``sources/quick.py``) share templates by it; ``key``
    #: covers every dataset (the whole virtual dataset :func:`scan_indexed` rebuilds).
    selected_key: tuple[Any, ...] = ()
    #: Datasets the selection leaves out (in no ``selected_key``).
    left_out: frozenset[str] = frozenset()


@dataclass
class _Template:
    dataset: xr.Dataset
    #: Loaded variables whose raw values become their values (see module docstring).
    raw_ok: frozenset[str]
    #: Raw bytes of each loaded variable in the template's file.
    raw: dict[str, bytes] = field(repr=False)


_templates: Templates[_Template] = Templates(_MAX_TEMPLATES)
# Workers may scan on several threads: guards the layouts handed on and the empty datasets.
_lock = threading.Lock()


def forget_templates() -> None:
    """Drop every template of this process (tests, benchmarks)."""
    _templates.clear()
    with _lock:
        handed = list(_handed.values())
        _handed.clear()
    for layout in handed:
        _close(layout)


def _attr_values(obj: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(name, dtype, shape, value bytes) of each attribute of the object ``obj`` (an h5py
    ``ObjectID``), in order, and the values (as h5py reads them) by name."""
    import h5py

    names: list[bytes] = []
    h5py.h5a.iterate(obj, names.append)  # in the order h5py's .attrs lists them
    out: list[tuple[Any, ...]] = []
    values: dict[str, Any] = {}
    for raw_name in names:
        name = raw_name.decode("utf-8")
        if name in _HIDDEN_ATTRS:
            out.append((name,))
            continue
        attr = h5py.h5a.open(obj, raw_name)
        dtype = attr.dtype
        space = attr.get_space()
        if space.get_simple_extent_type() == h5py.h5s.NULL:
            out.append((name, "empty"))
            values[name] = h5py.Empty(dtype)
            continue
        arr = np.empty(space.shape, dtype)
        attr.read(arr)
        raw = repr(arr.tolist()).encode() if dtype.kind == "O" else arr.tobytes()
        out.append((name, dtype.str, arr.shape, raw))
        values[name] = arr
    return tuple(out), values


def _dims(dsid: Any, rank: int) -> tuple[str, ...] | None:
    """The dimension names VirtualiZarr gives the dataset ``dsid`` at ``path`` (its
    ``_dataset_dims``, through the same ``h5ds`` calls), or None when that would raise."""
    import h5py

    scale = h5py.h5ds.is_scale(dsid)
    out = []
    for n in range(rank):
        count = h5py.h5ds.get_num_scales(dsid, n)
        if count == 1:
            name = h5py.h5ds.iterate(dsid, n, h5py.h5i.get_name)
            out.append(name.decode("utf-8"))
        elif scale:
            out.append(h5py.h5i.get_name(dsid).decode("utf-8"))
        elif count > 1:
            return None
        else:
            out.append(f"phony_dim_{n}")
    return tuple(out)


def _split(
    entries: tuple[tuple[Any, ...], ...], per_file: dict[str, Any]
) -> tuple[tuple[Any, ...], ...]:
    """Attribute entries for a layout key: only the kind and shape of those whose values are
    read per file (a string's length is part of its HDF5 type)."""
    return tuple(
        (a[0], np.dtype(a[1]).kind, a[2]) if len(a) > 2 and a[0] in per_file else a for a in entries
    )


def _var_attr_per_file(name: str, value: Any) -> bool:
    """Whether a variable's attribute is read per file: a string of
    :data:`_PER_FILE_VAR_ATTRS`, and for ``units`` only time units ("<unit> since <date>"),
    which times kept undecoded leave alone (xarray may decode a variable with other units,
    "days" for one, as durations)."""
    text = per_file_value(value) if name in _PER_FILE_VAR_ATTRS else None
    return isinstance(text, str) and (name != "units" or " since " in text)


def _dataset_key(
    dsid: Any,
) -> tuple[tuple[Any, ...], _Dataset, dict[str, Any], _Links] | None:
    """The layout key of one dataset, the dataset, its attributes read per file and what
    decides whether a selection keeps it (whether it is a netCDF variable, not a dimension
    without one, among others); None when this module does not reproduce it."""
    import h5py

    dtype = dsid.dtype
    if dtype.kind in "OV" or dtype.names is not None or dtype.subdtype is not None:
        return None
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if layout not in (h5py.h5d.CHUNKED, h5py.h5d.CONTIGUOUS) or dcpl.get_external_count():
        return None
    shape = dsid.shape
    chunks = dcpl.get_chunk() if layout == h5py.h5d.CHUNKED else None
    filters = tuple(dcpl.get_filter(i) for i in range(dcpl.get_nfilters()))
    fill_value = np.zeros((1,), dtype)
    try:
        dcpl.get_fill_value(fill_value)  # as h5py's Dataset.fillvalue reads it
        fill: Any = np.asarray(fill_value[0]).tobytes()
    except RuntimeError:
        fill = "default"
    dims = _dims(dsid, len(shape))
    if dims is None:
        return None
    entries, values = _attr_values(dsid)
    per_file = {name: value for name, value in values.items() if _var_attr_per_file(name, value)}
    empty = dsid.get_storage_size() == 0
    key = (layout, shape, dtype.str, chunks, filters, fill, dims, _split(entries, per_file))
    dataset = _Dataset(id=dsid, shape=shape, dtype=dtype, chunks=chunks, size=math.prod(shape))
    label = values.get("NAME")
    label = label.reshape(()).item() if isinstance(label, np.ndarray) and label.size == 1 else b""
    variable = not (isinstance(label, bytes) and label.startswith(b"This is a netCDF dimension"))
    return (*key, empty), dataset, per_file, _links(dims, values, variable)


def _open(path: str, group: str | None) -> tuple[Any, Any] | None:
    """The file (h5py's low-level ``FileID``: ``h5py.File``'s wrappers cost as much again as
    what is read through them) and its group, or None when ``group`` is not a group."""
    import h5py

    fid = h5py.h5f.open(path.encode(), h5py.h5f.ACC_RDONLY, _file_access())
    try:
        root = h5py.h5o.open(fid, group.encode() if group else b"/")
    except Exception:
        fid.close()
        raise
    if not isinstance(root, h5py.h5g.GroupID):
        fid.close()
        return None
    return fid, root


_fapl: Any = None


def _file_access() -> Any:
    """The file access properties ``h5py.File(path, "r")`` uses (made once)."""
    import h5py

    global _fapl
    if _fapl is None:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
        fapl.set_alignment(1, 1)
        _fapl = fapl
    return _fapl


def layout_of(
    path: str,
    group: str | None,
    order_by: str | None,
    *,
    variables: tuple[str, ...] | None = None,
    drop_variables: tuple[str, ...] = (),
) -> Layout | None:
    """The layout of the local file ``path`` (open: close it with :func:`discard`), or None
    when this module cannot reproduce the slow route for it.

    Its ``selected_key`` covers the datasets the scan may keep under ``variables`` /
    ``drop_variables`` (``source.*``; see :func:`_left_out`): files differing only in datasets the
    selection leaves out share it.
    """
    import h5py

    opened = _open(path, group)
    if opened is None:
        return None
    fid, root = opened
    try:
        datasets: dict[str, _Dataset] = {}
        var_attrs: dict[str, dict[str, Any]] = {}
        empty: list[str] = []
        selecting: dict[str, _Links] = {}
        parts: list[Any] = [group, order_by]
        links: list[tuple[bytes, int]] = []
        root.links.iterate(lambda n, info: links.append((n, info.type)), info=True)
        for raw_name, link_type in links:
            obj = h5py.h5o.open(root, raw_name) if link_type == h5py.h5l.TYPE_HARD else None
            found = _dataset_key(obj) if isinstance(obj, h5py.h5d.DatasetID) else None
            if found is None:
                fid.close()
                return None
            name = raw_name.decode("utf-8")
            key, datasets[name], var_attrs[name], selecting[name] = found
            parts.append((name, key))
            if not datasets[name].size and selecting[name].variable:
                empty.append(name)
        attrs, values = _attr_values(root)
        # Strings and finite numbers of the group differ per file (titles, dates, history):
        # their types are part of the key, their values are read per file.
        per_file = {
            name: value
            for name, value in values.items()
            if name not in _PARSER_HIDDEN and per_file_value(value) is not None
        }
        parts.append(_split(attrs, per_file))
        left_out = {
            name
            for name in _left_out(selecting, values, order_by, variables, drop_variables)
            if _parser_maps(datasets[name].id)
        }
        if _conflicting(datasets, selecting):
            left_out = set()  # the parser refuses the file: so must the template route
        return Layout(
            key=tuple(parts),
            file=fid,
            datasets=datasets,
            group_attrs=per_file,
            var_attrs=var_attrs,
            empty=empty,
            selected_key=(
                *(p for p in parts[2:-1] if p[0] not in left_out),
                *(group, order_by, parts[-1]),
            ),
            left_out=frozenset(left_out),
        )
    except Exception:
        fid.close()
        raise


def _conflicting(datasets: dict[str, _Dataset], links: dict[str, _Links]) -> bool:
    """Whether two netCDF variables give one dimension different lengths (HDF5 lets each
    dataset have its own length along an unlimited dimension: a file still being written, a
    diagnostic one step ahead). xarray refuses such a file on the usual route ("conflicting
    sizes for dimension"), whichever variables the selection keeps."""
    sizes: dict[str, int] = {}
    for name, link in links.items():
        if link.variable:
            for dim, n in zip(link.dims, datasets[name].shape, strict=False):
                if sizes.setdefault(dim, n) != n:
                    return True
    return False


#: Per filter pipeline (``get_filter`` of each filter): whether VirtualiZarr's parser maps it.
_MAPPED: dict[tuple[Any, ...], bool] = {}


def _parser_maps(dsid: Any) -> bool:
    """Whether VirtualiZarr's HDF parser maps every filter of the dataset ``dsid`` to a codec.

    It fails the whole file on one it cannot (bzip2 or zstd without their codecs, say), kept
    by the selection or not: such a dataset is never left out of a selected key, so that its
    file goes the usual way and fails there, as every file holding it does, whichever file of
    the series a worker scanned first."""
    dcpl = dsid.get_create_plist()
    key = tuple(dcpl.get_filter(i) for i in range(dcpl.get_nfilters()))
    if not key:
        return True
    known = _MAPPED.get(key)
    if known is None:
        from h5py._hl.filters import get_filters
        from virtualizarr.parsers.hdf.filters import _filter_to_codec
        from zarr.registry import get_codec_class

        try:
            for filter_id, properties in get_filters(dcpl).items():
                codec = _filter_to_codec(filter_id, properties)
                # VirtualiZarr names it numcodecs.<id> in Zarr 3, which must implement it
                # (bzip2 maps to numcodecs' imagecodecs_bz2, which zarr has no class for).
                get_codec_class(f"numcodecs.{codec.codec_id}")
            known = True
        except Exception:  # whatever the parser raises on it
            known = False
        if len(_MAPPED) < 256:
            _MAPPED[key] = known
    return known


@dataclass(frozen=True, slots=True)
class _Links:
    """What decides whether a scan's selection may keep a dataset."""

    #: The names of its dimensions (their datasets' names).
    dims: tuple[str, ...]
    #: Whether it holds an attribute of :data:`~icepipe.sources.formats.selection.LINKING`.
    linking: bool
    #: The names its ``coordinates`` attribute lists (None: one this module does not read).
    coordinates: tuple[str, ...] | None
    #: Whether it is a netCDF variable (not a dimension without one).
    variable: bool


def _links(dims: tuple[str, ...], values: dict[str, Any], variable: bool) -> _Links:
    return _Links(
        dims=tuple(d.rsplit("/", 1)[-1] for d in dims),  # h5ds gives paths: at least the names
        linking=bool(values.keys() & LINKING),
        coordinates=_coordinates(values),
        variable=variable,
    )


def _coordinates(values: dict[str, Any]) -> tuple[str, ...] | None:
    """The names the ``coordinates`` attribute among ``values`` lists (None: not a plain
    string)."""
    if "coordinates" not in values:
        return ()
    text = per_file_value(values["coordinates"])
    return tuple(text.split()) if isinstance(text, str) else None


def _left_out(
    links: dict[str, _Links],
    group_attrs: dict[str, Any],
    order_by: str | None,
    variables: tuple[str, ...] | None,
    drop_variables: tuple[str, ...],
) -> set[str]:
    """The datasets a scan under ``source.variables`` / ``drop_variables`` never keeps: the
    complement of a superset of what it keeps. Left out are only the dropped ones, and, with
    ``variables``, those not named there that nothing can make a coordinate (named like a
    dimension, or in a ``coordinates`` attribute); never one holding an attribute linking it
    to others. A dimension without a variable is left out when no dataset kept uses it (the
    parser leaves it out of the dataset; the kept datasets' shapes hold its length)."""
    listed = [_coordinates(group_attrs), *(link.coordinates for link in links.values())]
    if any(found is None for found in listed):
        return set()  # what a coordinates attribute names is not known: nothing is left out
    linked = {name for name, link in links.items() if link.linking}
    coordinates = {d for link in links.values() for d in link.dims}
    for more in listed:
        coordinates.update(more or ())
    names = may_keep(links, linked, coordinates, order_by, variables, drop_variables)
    used = {d for name in names if links[name].variable for d in links[name].dims}
    return {n for n in links if n not in names or (not links[n].variable and n not in used)}


def per_file_value(value: Any) -> Any:
    """The attribute value xarray shows for ``value``, when it is a plain string or finite
    number (the values that may differ between files of one layout); else None."""
    if not isinstance(value, np.ndarray) or value.shape not in ((), (1,)):
        return None
    item = value.reshape(()).item()
    if isinstance(item, bytes):
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text or None  # VirtualiZarr turns empty strings into " "
    if isinstance(item, str):
        return item or None
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item
    if isinstance(item, float) and math.isfinite(item):
        return item
    return None


def _close(layout: Layout) -> None:
    # The datasets first: the file closes once nothing of it is open.
    layout.datasets.clear()
    layout.file.close()


def chunk_table(
    obj: _Dataset, chunks: tuple[int, ...]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """Where each chunk of ``obj`` is, on the chunk grid of ``chunks``: whether it is stored,
    its offset and its length (None: nothing is stored), as VirtualiZarr's
    ``_dataset_chunk_manifest`` finds them."""
    shape = obj.shape
    dsid = obj.id
    if obj.chunks is None:
        offset = dsid.get_offset()
        if offset is None:
            return None
        one = (1,) * len(shape)
        return (
            np.ones(one, dtype=bool),
            np.full(one, offset, dtype=np.uint64),
            np.full(one, dsid.get_storage_size(), dtype=np.uint64),
        )
    grid = tuple(math.ceil(a / b) for a, b in zip(shape, chunks, strict=True))
    found: list[tuple[tuple[int, ...], int, int]] = []
    masked: list[tuple[tuple[int, ...], int]] = []

    def add(info: Any) -> None:
        key = tuple(a // b for a, b in zip(info.chunk_offset, chunks, strict=True))
        found.append((key, info.byte_offset, info.size))
        if info.filter_mask:
            masked.append((key, info.filter_mask))

    dsid.chunk_iter(add)
    if masked:
        raise MaskedChunkError(*masked[0])
    if not found:
        return None
    present = np.zeros(grid, dtype=bool)
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)
    for key, offset, size in found:
        present[key] = True
        offsets[key] = offset
        lengths[key] = size
    return present, offsets, lengths


class MaskedChunkError(ValueError):
    """A chunk is stored without some of its dataset's filters (its HDF5 *filter mask*: an
    optional filter that failed on it was skipped, or a direct chunk write chose so). A
    virtual reference decodes every chunk of an array with the array's one codec pipeline:
    that chunk would read back as garbage, or not at all."""

    def __init__(self, chunk: tuple[int, ...], mask: int) -> None:
        super().__init__(f"chunk {chunk} is stored without some filters (mask {mask:#x})")
        self.chunk = chunk
        self.mask = mask

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.chunk, self.mask))


def check_filter_masks(path: str, url: str, group: str | None, names: Iterable[str]) -> None:
    """Raise when a chunk of one of the datasets ``names`` of the local file ``path`` is
    stored without some of its filters (see :class:`MaskedChunkError`).

    Raises
    ------
    SourceError
        Naming the file, the variable, the chunk and the fix.
    """
    opened = _open(path, group)
    if opened is None:
        return
    fid, root = opened
    try:
        _check_masks(root, url, names)
    finally:
        fid.close()


def check_filter_masks_in(reader: Any, url: str, group: str | None, names: Iterable[str]) -> None:
    """:func:`check_filter_masks` of a file read through ``reader`` (a file-like object: the
    one VirtualiZarr's parser read an object-store file with, whose cached blocks hold the
    chunk index it read: only the index is read, mostly from that cache).

    Raises
    ------
    SourceError
        Naming the file, the variable, the chunk and the fix.
    """
    import h5py

    with h5py.File(reader, "r") as f:
        node = f.get(group or "/")
        if isinstance(node, h5py.Group):
            _check_masks(node.id, url, names)


def _check_masks(root: Any, url: str, names: Iterable[str]) -> None:
    """Raise when a chunk of one of the datasets ``names`` of the group ``root`` (h5py's
    low-level ``GroupID``) is stored without some of its filters."""
    import h5py

    from icepipe.errors import SourceError

    for name in names:
        try:
            dsid = h5py.h5o.open(root, name.encode())
        except KeyError:
            continue  # made by the reader, not read from the file
        if not isinstance(dsid, h5py.h5d.DatasetID):
            continue
        plist = dsid.get_create_plist()
        if plist.get_layout() != h5py.h5d.CHUNKED or not plist.get_nfilters():
            continue
        obj = _Dataset(dsid, dsid.shape, dsid.dtype, plist.get_chunk(), 0)
        try:
            chunk_table(obj, obj.chunks or ())
        except MaskedChunkError as exc:
            raise SourceError(
                f"{url}: variable {name!r}: {exc}, which virtual references cannot "
                "express (they decode every chunk of a variable alike); use mode: native "
                "(HDF5 reads it), or rewrite the file (nccopy, h5repack)",
                url=url,
            ) from exc


def _manifest(ref_url: str, obj: _Dataset, chunks: tuple[int, ...]) -> Any:
    """The chunk manifest of ``obj`` as VirtualiZarr's ``_dataset_chunk_manifest`` builds it."""
    from virtualizarr.manifests import ChunkManifest

    table = chunk_table(obj, chunks)
    if table is None:
        return ChunkManifest(entries={}, shape=obj.shape)
    present, offsets, lengths = table
    paths = np.full(present.shape, "", dtype=np.dtypes.StringDType())
    paths[present] = ref_url
    return ChunkManifest.from_arrays(
        paths=paths, offsets=offsets, lengths=lengths, validate_paths=False
    )


def read_raw(obj: Any) -> np.ndarray[Any, Any]:
    import h5py

    arr = np.empty(obj.shape, obj.dtype)
    if obj.size:
        obj.id.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
    return arr


def _rebuild(template: _Template, layout: Layout, url: str, ref_url: str) -> xr.Dataset | None:
    """The virtual dataset of the file of ``layout`` from ``template``, or None when a loaded
    variable cannot be reproduced without xarray's decoding."""
    import xarray as xr
    from virtualizarr.manifests import ManifestArray

    tmpl = template.dataset
    variables: dict[str, xr.Variable] = {}
    for name, var in tmpl.variables.items():
        name = str(name)
        obj = layout.datasets[name]
        # Copies: a preprocess hook may change what it is given in place, and the template
        # must stay as the file had it.
        attrs = copy.deepcopy(var.attrs)
        for key, value in layout.var_attrs[name].items():
            attrs[key] = per_file_value(value)
        if isinstance(var.data, ManifestArray):
            metadata = var.data.metadata
            manifest = _manifest(ref_url, obj, tuple(metadata.chunks))
            data: Any = ManifestArray(metadata=metadata, chunkmanifest=manifest)
        else:
            raw = read_raw(obj)
            if raw.tobytes() == template.raw.get(name):
                data = var.values.copy()
            elif name not in template.raw_ok:
                return None
            else:
                data = raw
        encoding = copy.deepcopy(var.encoding)
        variables[name] = xr.Variable(var.dims, data, attrs=attrs, encoding=encoding)
    group_attrs = copy.deepcopy(tmpl.attrs)
    for name, value in layout.group_attrs.items():
        group_attrs[name] = per_file_value(value)
    # In the template's order (a dimension's variable becomes its index coordinate anyway).
    ds = xr.Dataset(variables, attrs=group_attrs)
    others = [n for n in tmpl.coords if n not in ds.coords]
    if others:
        ds = ds.set_coords(others)
    ds.encoding = {**tmpl.encoding, "source": url}
    return ds


def raw_decodes_to_itself(var: xr.Variable, raw: np.ndarray[Any, Any]) -> bool:
    """Whether xarray's decoding leaves the raw values of ``var``'s variable unchanged, whatever
    they are (so that another file's raw values are its values)."""
    if raw.dtype.kind not in "iuf" or var.dtype != raw.dtype:
        return False
    keys = set(var.attrs) | set(var.encoding)
    if keys & {"scale_factor", "add_offset", "missing_value", "valid_range", "valid_min"}:
        return False
    fill = var.encoding.get("_FillValue", var.attrs.get("_FillValue"))
    if fill is not None and not (raw.dtype.kind == "f" and np.isnan(fill)):
        return False
    return bool(np.array_equal(np.asarray(var.values), raw, equal_nan=raw.dtype.kind == "f"))


def remember(layout: Layout, ds: xr.Dataset, url: str, ref_url: str) -> None:
    """Make ``ds`` (the slow route's dataset of the file of ``layout``) the template of its
    layout, if rebuilding that same file from it reproduces it exactly; closes the file."""
    try:
        try:
            template = _template_of(layout, ds, url, ref_url)
        except Exception:  # whatever this module misreads goes the slow way, not wrong
            template = None
        _templates.put(layout.key, template)
    finally:
        _close(layout)


def discard(layout: Layout) -> None:
    """Close the file of ``layout`` without remembering anything (the slow route failed)."""
    _close(layout)


def _template_of(layout: Layout, ds: xr.Dataset, url: str, ref_url: str) -> _Template | None:
    from virtualizarr.manifests import ManifestArray

    raw: dict[str, bytes] = {}
    raw_ok = set()
    for name, var in ds.variables.items():
        name = str(name)
        obj = layout.datasets.get(name)
        if obj is None:
            return None  # made by the reader, not read from the file
        if isinstance(var.data, ManifestArray):
            chunks = tuple(var.data.metadata.chunks)
            if obj.chunks is not None and chunks != obj.chunks:
                return None  # VirtualiZarr trimmed an oversized chunk
        else:
            values = read_raw(obj)
            raw[name] = values.tobytes()
            if raw_decodes_to_itself(var, values):
                raw_ok.add(name)
    for name, value in layout.group_attrs.items():
        if ds.attrs.get(name, object()) != per_file_value(value):
            return None
    for var_name, per_file in layout.var_attrs.items():
        for name, value in per_file.items():
            if var_name in ds.variables and ds[var_name].attrs.get(name) != per_file_value(value):
                return None
    template = _Template(dataset=ds, raw_ok=frozenset(raw_ok), raw=raw)
    # A rebuild of the same file must give the same dataset, both with the template's loaded
    # values and with the raw values of the variables that would take them.
    others = {n: b for n, b in raw.items() if n not in raw_ok}
    copies = []
    for check in (template, _Template(ds, frozenset(raw_ok), others)):
        again = _rebuild(check, layout, url, ref_url)
        if again is None or not same_dataset(again, ds):
            return None
        copies.append(again)
    # A copy: the scan hands ``ds`` on, and what follows may change it in place.
    return _Template(dataset=copies[0], raw_ok=frozenset(raw_ok), raw=raw)


# A layout read for a file and handed on to that file's next scan (one: a newer one closes it).
_handed: dict[tuple[str, str | None, str | None], Layout] = {}


def hand_on(layout: Layout, path: str, group: str | None, order_by: str | None) -> None:
    """Keep the open ``layout`` of ``path`` for the next :func:`scan_indexed` of that file,
    which then does not read it again."""
    with _lock:
        old = list(_handed.values())
        _handed.clear()
        _handed[(path, group, order_by)] = layout
    for stale in old:
        _close(stale)


def _handed_on(path: str, group: str | None, order_by: str | None) -> Layout | None:
    with _lock:
        return _handed.pop((path, group, order_by), None)


def scan_indexed(
    path: str, url: str, ref_url: str, group: str | None, order_by: str | None
) -> tuple[xr.Dataset | None, Layout | None]:
    """The virtual dataset of the local file ``path`` from a template, or ``(None, layout)``:
    scan it the slow way, then :func:`remember` the result with ``layout`` (``None``: this
    module cannot reproduce that file's scan).

    After a rebuild, :func:`empty_datasets` gives the file's datasets without values.
    """
    layout = _handed_on(path, group, order_by) or layout_of(path, group, order_by)
    if layout is None:
        return None, None
    known, template = _templates.lookup(layout.key)
    if not known:
        return None, layout  # the caller scans the slow way and remembers
    try:
        ds = None if template is None else _rebuild(template, layout, url, ref_url)
    finally:
        _close(layout)
    with _lock:
        _empty.clear()
        if ds is not None and group is None:
            _empty[url] = layout.empty
    return ds, None


# The empty datasets of the file last rebuilt, which the scan asks for next.
_empty: dict[str, list[str]] = {}


def empty_datasets(url: str) -> list[str] | None:
    """The datasets without values of the root group of ``url``, if it was the file last
    rebuilt from a template (None otherwise)."""
    with _lock:
        return _empty.pop(url, None)


def same_dataset(a: xr.Dataset, b: xr.Dataset) -> bool:
    """Whether two virtual datasets are identical: variables in the same order, dims, attrs,
    encodings, loaded values, and ManifestArray metadata and references (offsets and lengths
    compared where a chunk exists)."""
    from virtualizarr.manifests import ManifestArray

    if list(a.variables) != list(b.variables) or list(a.coords) != list(b.coords):
        return False
    if a.attrs != b.attrs or a.encoding != b.encoding or dict(a.sizes) != dict(b.sizes):
        return False
    if list(a.xindexes) != list(b.xindexes):
        return False
    for name, va in a.variables.items():
        vb = b.variables[name]
        if va.dims != vb.dims or not same_mapping(va.attrs, vb.attrs):
            return False
        if not same_mapping(va.encoding, vb.encoding):
            return False
        if isinstance(va.data, ManifestArray) != isinstance(vb.data, ManifestArray):
            return False
        if isinstance(va.data, ManifestArray):
            if va.data.metadata != vb.data.metadata:
                return False
            if not _same_manifest(va.data.manifest, vb.data.manifest):
                return False
        elif not _same_values(va, vb):
            return False
    return True


def _same_values(a: xr.Variable, b: xr.Variable) -> bool:
    if a.dtype != b.dtype or type(a) is not type(b):
        return False
    return bool(np.array_equal(a.values, b.values, equal_nan=a.dtype.kind in "fc"))


def same_mapping(a: Any, b: Any) -> bool:
    """Attribute/encoding dicts equal (in any key order), NaN equal to NaN, numpy values
    compared with their type and dtype."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray | np.generic) or isinstance(y, np.ndarray | np.generic):
            if type(x) is not type(y) or np.asarray(x).dtype != np.asarray(y).dtype:
                return False
            if not np.array_equal(x, y, equal_nan=np.asarray(x).dtype.kind in "fc"):
                return False
        elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _same_manifest(a: Any, b: Any) -> bool:
    pa, pb = a._paths, b._paths
    if pa.shape != pb.shape or not bool((pa == pb).all()):
        return False
    present = pa != ""
    return bool(
        (a._offsets[present] == b._offsets[present]).all()
        and (a._lengths[present] == b._lengths[present]).all()
        and a._inlined == b._inlined
    )
