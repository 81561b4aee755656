"""Finished scans of local GRIB files from a template: the packed result and schema of a file
laid out like one already scanned in this worker process, without ecCodes' index, cfgrib's
mapping or a dataset.

The GRIB counterpart of :mod:`~icepipe.sources.quick`. A file's messages are found by their
framing (:mod:`~icepipe.sources.formats.grib_frames`); two files whose messages have the same
identities (every header byte cfgrib maps but the reference time) in the same order, and
whose reference times differ by one same amount, are mapped alike by cfgrib but for ``time``
and ``valid_time``, which move by that amount. So the result of such a file is the first
file's packed result with the file's own message offsets and lengths as chunk references,
``time`` and ``valid_time`` moved on, and the schema's ordering values recomputed.

The first file of each layout is scanned the usual way; its result becomes the layout's
template once building that same file from it reproduces it exactly (schema, and the packed
dataset against the scanned one), else the layout goes the usual way. That check costs about
a scan, so it runs when a second file of the layout comes (a run of one file never pays it).
What a later file's bytes decide besides the header is decided again per file as the usual
route does: the first message of each variable must decode
(:func:`~icepipe.codecs.decode_grib_message`), else the file goes the usual way (which leaves
that variable to the native route). Files with variables read natively and ``preprocess``
hooks never come here. Templates live in the worker process.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import mmap
from dataclasses import dataclass
from typing import Any

import numpy as np

from icepipe.codecs import GribDecodeError, decode_grib_message
from icepipe.model import FileSchema, SourceFile
from icepipe.sources import quick
from icepipe.sources.formats import grib_frames, grib_index, hdf5_index
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.formats.templates import Templates
from icepipe.sources.packed import PackedDataset, pack
from icepipe.storage import reference_url

__all__ = ["forget", "remember", "scan_quick"]

_MAX_TEMPLATES = 16
#: Coordinates that follow the files' reference times, in seconds since an epoch.
_SHIFTED = ("time", "valid_time")


@dataclass(frozen=True, eq=False)
class _Template:
    schema: FileSchema
    #: The first file's dataset packed.
    packed: PackedDataset
    #: Per virtual variable: the position in the file of each chunk's message (-1: none).
    slots: tuple[np.ndarray[Any, Any], ...]
    #: The messages to decode in each file, with their shapes (see grib_index.decode_checks).
    checks: tuple[tuple[int, tuple[int, ...]], ...]
    #: Each message's reference time in the first file.
    when: tuple[Any, ...]


#: A layout's template: one (a scan of one cube), or one per cube name (``grib_cubes``).
_Stored = _Template | tuple[tuple[str, _Template], ...]


@dataclass(frozen=True, eq=False)
class _Candidate:
    """The usual scan of a layout's first file (a copy), checked and made the layout's
    template when a second file of that layout is scanned: the check costs about what the
    scan did, which a run of one file of a layout would never get back."""

    pending: quick.Pending
    source: SourceFile
    options: ScanOptions
    #: The file's messages right after its scan (the file may change before the check).
    found: list[grib_frames.Frame]
    scanned: tuple[FileSchema, Any] | dict[str, tuple[FileSchema, Any]]


_templates: Templates[_Stored | _Candidate] = Templates(_MAX_TEMPLATES)


def forget() -> None:
    """Drop every GRIB template of this process, of both levels (tests, benchmarks)."""
    _templates.clear()
    grib_index.forget_templates()


def _key(found: list[grib_frames.Frame], o: ScanOptions) -> tuple[Any, ...]:
    layout = grib_frames.layout_key(found)
    return (
        "grib",
        layout,
        o.concat_dim,
        o.order_by,
        o.variables,
        o.drop_variables,
        o.grib_cube,
        o.grib_cubes,
    )


def _frames(source: SourceFile, o: ScanOptions) -> list[grib_frames.Frame] | None:
    applies = quick._applies(source.url, dataclasses.replace(o, grib_cubes=None))
    if not grib_index.INDEXED_SCANS or not applies:
        return None
    try:
        return grib_index.frames_of(source.url.removeprefix("file://"), source.size)
    except Exception:  # the usual route's errors name the problem
        return None


def scan_quick(
    source: SourceFile, o: ScanOptions
) -> (
    tuple[FileSchema, PackedDataset]
    | dict[str, tuple[FileSchema, PackedDataset]]
    | quick.Pending
    | None
):
    """The schema and packed dataset of the GRIB file ``source`` (with ``grib_cubes``: of each
    cube, by name) from a template; :class:`~icepipe.sources.quick.Pending` when its layout has
    none yet; None when it goes the usual way."""
    found = _frames(source, o)
    if found is None:
        return None
    key = _key(found, o)
    known, template = _templates.lookup(key)
    if not known:
        return quick.Pending(key)
    if isinstance(template, _Candidate):
        template = _checked(template)
    if template is None:
        return None
    parts = template if isinstance(template, tuple) else (("", template),)
    when = parts[0][1].when
    delta = found[0].when - when[0]
    if any(f.when - t != delta for f, t in zip(found, when, strict=True)):
        return None  # not one shift of the template's times: cfgrib may map it otherwise
    seconds = int(delta.total_seconds())
    try:
        if not _decodes(parts[0][1].checks, found, source):
            return None  # the usual route reads that variable natively
        built = {name: _build(t, found, seconds, source, o) for name, t in parts}
    except Exception:  # whatever this module misreads goes the usual way, not wrong
        return None
    return built if isinstance(template, tuple) else built[""]


def _decodes(
    checks: tuple[tuple[int, tuple[int, ...]], ...],
    found: list[grib_frames.Frame],
    source: SourceFile,
) -> bool:
    """Whether the message that decides whether each variable is virtual decodes (every
    variable of every cube of the file, as the index route checks them)."""
    path = source.url.removeprefix("file://")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for slot, shape in checks:
            f = found[slot]
            try:
                decode_grib_message(mm[f.offset : f.offset + f.length], shape=shape)
            except GribDecodeError:
                return False
    return True


def _build(
    template: _Template,
    found: list[grib_frames.Frame],
    seconds: int,
    source: SourceFile,
    o: ScanOptions,
) -> tuple[FileSchema, PackedDataset]:
    """The file of ``found`` as ``template`` gives it, its messages decoding (:func:`_decodes`)."""
    # The last entry serves the empty entries of sparse cubes (slot -1): no message, 0, 0.
    offsets = np.array([f.offset for f in found] + [0], dtype=np.uint64)
    lengths = np.array([f.length for f in found] + [0], dtype=np.uint64)
    ref_url = reference_url(source.url)
    refs = tuple(
        (_paths(path, ref_url), offsets[s], lengths[s])
        for (path, _, _), s in zip(template.packed.refs, template.slots, strict=True)
    )
    # Every per-file variable is a time in seconds (checked when the template was made).
    values = tuple(v + np.asarray(seconds, dtype=v.dtype) for v in template.packed.values)
    first = template.packed
    sk = first.skeleton
    packed = PackedDataset(
        skeleton=sk, refs=refs, values=values, attrs=first.attrs, source=source.url
    )
    attrs = {"": first.attrs.get("", sk.attrs)}
    attrs.update({v.name: first.attrs.get(v.name, v.attrs) for v in sk.variables})
    like = quick._Template(schema=template.schema, packed=first, raw={}, raw_ok=frozenset())
    return quick._schema(like, packed, attrs, source, o), packed


def _paths(template: str | np.ndarray[Any, Any], ref_url: str) -> str | np.ndarray[Any, Any]:
    """The chunk paths of a file: its URL, in the entries of the template's that have one."""
    if isinstance(template, str):
        return ref_url
    out = template.copy()
    out[template != ""] = ref_url
    return out


def remember(
    pending: quick.Pending,
    source: SourceFile,
    o: ScanOptions,
    scanned: tuple[FileSchema, Any] | dict[str, tuple[FileSchema, Any]] | None,
) -> None:
    """Keep the usual scan of ``source`` (its schema and dataset; with ``grib_cubes``, those of
    each cube by name; None: variables read natively) as its layout's candidate template: made
    the template when the next file of the layout comes, if building ``source`` from it
    reproduces it exactly (:func:`_checked`)."""
    candidate: _Candidate | None = None
    found = _frames(source, o) if scanned is not None else None
    if scanned is not None and found is not None:
        try:
            # What follows the scan may change its dataset in place.
            candidate = _Candidate(pending, source, o, found, copy.deepcopy(scanned))
        except Exception:  # a scan this module cannot copy is not used
            candidate = None
    _templates.put(pending.key, candidate)


def _checked(candidate: _Candidate) -> _Stored | None:
    """The template ``candidate`` makes (None: not one), kept in its place."""
    c = candidate
    template = _template_from(c.pending, c.source, c.options, c.found, c.scanned)
    _templates.replace(c.pending.key, candidate, template)
    return template


def _template_from(
    pending: quick.Pending,
    source: SourceFile,
    o: ScanOptions,
    found: list[grib_frames.Frame],
    scanned: tuple[FileSchema, Any] | dict[str, tuple[FileSchema, Any]] | None,
) -> _Stored | None:
    template: _Stored | None
    try:
        checks = grib_index.decode_checks(found)
        # The decode checks pass for this file (once for all its cubes; not again per cube).
        usable = (
            found is not None
            and scanned is not None
            and _key(found, o) == pending.key
            and checks is not None
            and _decodes(checks, found, source)
        )
        if not usable or found is None or scanned is None:
            template = None
        elif isinstance(scanned, dict):
            parts = [(n, _template_of(found, source, o, *r)) for n, r in scanned.items()]
            ok = parts and all(t is not None for _, t in parts)
            template = tuple((n, t) for n, t in parts if t is not None) if ok else None
        else:
            template = _template_of(found, source, o, *scanned)
    except Exception:  # a template this module cannot check is not used
        template = None
    return template


def _slots(
    refs: tuple[Any, np.ndarray[Any, Any], np.ndarray[Any, Any]],
    found: list[grib_frames.Frame],
    ref_url: str,
) -> np.ndarray[Any, Any] | None:
    """The position in the file of each chunk's message (-1: no message, an empty entry of a
    sparse cube); None when a chunk is not one of the file's messages."""
    path, offsets, lengths = refs
    if isinstance(path, str):
        present = np.full(offsets.shape, True)
        if path != ref_url:
            return None  # chunks elsewhere
    else:
        present = path != ""
        if not np.all(path[present] == ref_url):
            return None
    position = {(f.offset, f.length): k for k, f in enumerate(found)}
    slot = np.full(offsets.shape, -1, dtype=np.intp)
    for index in zip(*np.nonzero(present), strict=True):
        k = position.get((int(offsets[index]), int(lengths[index])))
        if k is None:
            return None
        slot[index] = k
    if not (offsets[~present] == 0).all() or not (lengths[~present] == 0).all():
        return None
    return slot


_EPOCH = datetime.datetime(1970, 1, 1)


def _times_framed(packed: PackedDataset, found: list[grib_frames.Frame]) -> bool:
    """Whether the scan's ``time`` values are reference times of the messages ``found``: not
    so when the file was rewritten between its scan and its framing (later files would be
    moved from the wrong times)."""
    whens = {int((f.when - _EPOCH).total_seconds()) for f in found}
    per_file = [v for v in packed.skeleton.variables if v.kind == "per-file"]
    for v, values in zip(per_file, packed.values, strict=True):
        if v.name == "time":
            units = str(v.attrs.get("units", ""))
            return units == "seconds since 1970-01-01" and set(values.ravel().tolist()) <= whens
    return False


def _template_of(
    found: list[grib_frames.Frame], source: SourceFile, o: ScanOptions, schema: FileSchema, ds: Any
) -> _Template | None:
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        return None
    checks = grib_index.decode_checks(found)
    packed = pack(ds, o.concat_dim)
    if checks is None or packed is None or packed.source != source.url:
        return None
    slots = []
    for refs in packed.refs:
        slot = _slots(refs, found, reference_url(source.url))
        if slot is None:
            return None
        slots.append(slot)
    for v in (v for v in packed.skeleton.variables if v.kind == "per-file"):
        units = str(v.attrs.get("units", ""))
        if v.name not in _SHIFTED or not units.startswith("seconds since "):
            return None  # a value along the concat dimension this module does not move
    if not _times_framed(packed, found):
        return None
    template = _Template(
        schema=schema,
        packed=packed,
        slots=tuple(slots),
        checks=checks,
        when=tuple(f.when for f in found),
    )
    built = _build(template, found, 0, source, o)
    if built[0] != schema:
        return None
    if not hdf5_index.same_dataset(built[1].to_dataset(), ds):
        return None
    return template
