"""The ledger: icepipe's typed, versioned record of what a commit ingested.

Every commit icepipe makes carries one :class:`CommitRecord` in its Icechunk commit metadata,
under :data:`METADATA_KEY`. The records of a branch's history say which source files (and
which version of each: size, mtime, ETag) a group already holds, and where each sits along the
concat dimension: the on-disk contract behind "each file exactly once". Records are written
and read only through this module (:meth:`CommitRecord.to_metadata`, :func:`read_record`), as
the JSON the commit stores.

Format versions: a record that lists files carries ``ledger_version`` (:data:`LEDGER_VERSION`);
records without it, written before the field existed or by ``to_icechunk``, are version 1 and
read identically. Version 1 stores ``files`` as one JSON object per file; version 2 (written
since) stores the same fields as columns, compressed into one string (:func:`pack_files`), so
that a commit of 50,000 files costs Icechunk a few bytes per file instead of a JSON object
each. Both read into the same :class:`FileRecord` values. A record of a newer version is
refused (:class:`LedgerVersionError`): this icepipe cannot know what it would skip or
overwrite, and the fix is to upgrade icepipe.

No I/O here (and no icechunk import): :mod:`icepipe.repository.history` walks the commits.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from icepipe.errors import LedgerError, LedgerVersionError
from icepipe.model import SourceFile

__all__ = [
    "LEDGER_VERSION",
    "METADATA_KEY",
    "CommitRecord",
    "FileRecord",
    "NativeLayout",
    "SkippedFile",
    "pack_files",
    "read_record",
    "unpack_files",
]

#: Key of icepipe's record in Icechunk commit metadata.
METADATA_KEY = "icepipe"

#: The newest ledger format this icepipe reads, and the one it writes.
LEDGER_VERSION = 2

#: The format :meth:`CommitRecord.to_metadata` writes by default (tests set 1 to write the
#: history an older icepipe left).
WRITE_VERSION = LEDGER_VERSION


@dataclass(frozen=True, slots=True)
class FileRecord(Mapping[str, Any]):
    """One ingested source file: its identity when ingested and its place in the group(s).

    ``start``/``length`` place it along the concat dimension of the pipeline's group; with
    ``source.grib_cubes`` it has ``cubes`` instead (``cube name -> (start, length)``). Either
    is ``None`` when not recorded.

    A record also reads as the JSON mapping it is stored as (``record["size"]``,
    ``record.get("etag")``), so that pure planning code taking plain mappings accepts it.
    """

    url: str
    size: int
    mtime: str
    etag: str | None = None
    start: int | None = None
    length: int | None = None
    cubes: Mapping[str, tuple[int, int]] | None = None

    @classmethod
    def of(
        cls,
        source: SourceFile,
        *,
        start: int | None = None,
        length: int | None = None,
        cubes: Mapping[str, tuple[int, int]] | None = None,
    ) -> FileRecord:
        """The record of ``source`` as listed, placed at ``start``/``length`` or ``cubes``."""
        return cls(
            url=source.url,
            size=source.size,
            mtime=source.mtime,
            etag=source.etag or None,
            start=start,
            length=length,
            cubes=dict(cubes) if cubes is not None else None,
        )

    def place(self, cube: str | None = None) -> tuple[int, int] | None:
        """``(start, length)`` along the concat dimension (of hypercube ``cube``), if recorded."""
        if cube is not None:
            return (self.cubes or {}).get(cube)
        if self.start is None or self.length is None:
            return None
        return (self.start, self.length)

    def to_metadata(self) -> dict[str, Any]:
        """The JSON stored in the commit (``url``, ``size``, ``mtime``, then the optional keys)."""
        out: dict[str, Any] = {"url": self.url, "size": self.size, "mtime": self.mtime}
        if self.etag:
            out["etag"] = self.etag
        if self.start is not None:
            out["start"] = self.start
        if self.length is not None:
            out["length"] = self.length
        if self.cubes is not None:
            out["cubes"] = {name: [s, n] for name, (s, n) in self.cubes.items()}
        return out

    @classmethod
    def from_metadata(cls, data: Any, *, where: str = "ledger") -> FileRecord:
        """Read one stored file record.

        Raises
        ------
        LedgerError
            ``data`` is not a file record (the message names ``where`` and the field).
        """
        # Called for every file of a branch's history: plain type checks, no helpers.
        if not isinstance(data, dict):
            raise LedgerError(f"{where}: a file record is not a mapping: {data!r}")
        url = data.get("url")
        if type(url) is not str:
            raise LedgerError(f"{where}: a file record has no 'url' string: {data!r}")
        size: Any = data.get("size")
        mtime: Any = data.get("mtime")
        start, length, cubes = data.get("start"), data.get("length"), data.get("cubes")
        if type(size) is not int:
            _required_int(size, f"{where}: {url}: size")
        if type(mtime) is not str:
            _required_str(mtime, f"{where}: {url}: mtime")
        for key, value in (("start", start), ("length", length)):
            if value is not None and type(value) is not int:
                _required_int(value, f"{where}: {url}: {key}")
        return cls(
            url,
            size,
            mtime,
            data.get("etag") or None,
            start,
            length,
            None if cubes is None else _cube_places(cubes, f"{where}: {url}: cubes"),
        )

    # Mapping protocol: the stored JSON (without building it: planning reads every record).
    def __getitem__(self, key: str) -> Any:
        if key in ("url", "size", "mtime"):
            return getattr(self, key)
        value = getattr(self, key) if key in ("etag", "start", "length", "cubes") else None
        if value is None or value == "":
            raise KeyError(key)
        if key == "cubes":
            return {name: [s, n] for name, (s, n) in value.items()}
        return value

    def get(self, key: str, default: Any = None) -> Any:
        # Planning reads a few keys of every record of the branch: no KeyError round trips.
        if key in ("url", "size", "mtime"):
            return getattr(self, key)
        if key not in ("etag", "start", "length", "cubes"):
            return default
        value = getattr(self, key)
        if value is None or value == "":
            return default
        return self[key] if key == "cubes" else value

    def __iter__(self) -> Iterator[str]:
        yield from ("url", "size", "mtime")
        for key in ("etag", "start", "length", "cubes"):
            if getattr(self, key) not in (None, ""):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


# Reading a ledger builds one FileRecord per file of the branch's history (50,000 at a time):
# the frozen dataclass's __init__ sets each field through object.__setattr__, several times
# slower than setting the slots directly, which is what this does (same record, same frozen
# class afterwards).
_new_object = object.__new__
_SET_URL, _SET_SIZE, _SET_MTIME, _SET_ETAG, _SET_START, _SET_LENGTH, _SET_CUBES = (
    FileRecord.__dict__[name].__set__
    for name in ("url", "size", "mtime", "etag", "start", "length", "cubes")
)


def _records(
    urls: Sequence[str],
    sizes: Sequence[int],
    mtimes: Sequence[str],
    etags: Sequence[str | None] | None,
    starts: Sequence[int | None] | None,
    lengths: Sequence[int | None] | None,
) -> list[FileRecord]:
    """``FileRecord(url, size, mtime, etag or None, start, length, None)`` for each row of the
    columns (``None`` for a column: every value ``None``), built without ``__init__``."""
    none = [None] * len(urls)
    out: list[FileRecord] = []
    append = out.append
    for url, size, mtime, etag, start, length in zip(
        urls, sizes, mtimes, etags or none, starts or none, lengths or none, strict=True
    ):
        r = _new_object(FileRecord)
        _SET_URL(r, url)
        _SET_SIZE(r, size)
        _SET_MTIME(r, mtime)
        _SET_ETAG(r, etag or None)
        _SET_START(r, start)
        _SET_LENGTH(r, length)
        _SET_CUBES(r, None)
        append(r)
    return out


@dataclass(frozen=True)
class SkippedFile:
    """A file a run left out (``on_error: skip``), retried by the next run."""

    url: str
    reason: str


@dataclass(frozen=True)
class NativeLayout:
    """The chunk layout a native ingest chose when it created the group."""

    #: A length per dimension, or a rule (``file``, ``month``, ...) for the concat dimension.
    chunks: Mapping[str, int | str]
    shards: Mapping[str, int] | None
    compression: str


_PIPELINE_KEYS = (
    "version",
    "pipeline",
    "pipeline_file",
    "mode",
    "group",
    "concat_dim",
    "order_by",
    "run_id",
    "started_at",
    "cluster",
    "files",
    "reingested",
    "skipped",
)
#: Every key a record of this format may hold (others are kept in ``CommitRecord.extra``).
_KNOWN_KEYS = frozenset(
    {
        *_PIPELINE_KEYS,
        "api",
        "cubes",
        "native_fallback",
        "chunks",
        "shards",
        "compression",
        "ledger_version",
    }
)


@dataclass(frozen=True)
class CommitRecord:
    """What one icepipe commit records: who wrote it, into which group, and which files.

    Pipeline commits (``pipeline`` set) store every provenance key, ``None`` as ``null``;
    other records (``to_icechunk``: ``api`` set, no files) store only the keys that are set.
    ``extra`` keeps keys this version does not know, so that reading and writing a record
    loses nothing.
    """

    version: str | None = None
    mode: str | None = None
    group: str | None = None
    api: str | None = None
    pipeline: str | None = None
    pipeline_file: str | None = None
    concat_dim: str | None = None
    order_by: str | None = None
    run_id: str | None = None
    started_at: str | None = None
    cluster: Mapping[str, Any] | None = None
    #: The files ingested, in the order the commit placed them (``None``: no file list).
    files: tuple[FileRecord, ...] | None = None
    reingested: tuple[str, ...] | None = None
    skipped: tuple[SkippedFile, ...] | None = None
    #: With ``source.grib_cubes``: the hypercubes this commit wrote.
    cubes: tuple[str, ...] | None = None
    native_fallback: Mapping[str, str] | None = None
    layout: NativeLayout | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_files(self) -> int | None:
        return len(self.files) if self.files is not None else None

    def is_of(self, group: str | None) -> bool:
        """Whether this commit wrote into ``group`` (``None``: the root)."""
        return self.group == (group or "")

    def to_metadata(self, *, ledger_version: int | None = None) -> dict[str, Any]:
        """The JSON stored under :data:`METADATA_KEY` in the commit metadata, in ledger format
        ``ledger_version`` (default :data:`WRITE_VERSION`; 1 lists one JSON object per file,
        2 packs the file list into columns: :func:`pack_files`)."""
        version = WRITE_VERSION if ledger_version is None else ledger_version
        if version not in (1, 2):
            raise ValueError(f"ledger_version {version!r}: this icepipe writes formats 1 and 2")
        files: Any = None
        if self.files is not None:
            files = (
                [f.to_metadata() for f in self.files] if version == 1 else pack_files(self.files)
            )
        values: dict[str, Any] = {
            "version": self.version,
            "pipeline": self.pipeline,
            "pipeline_file": self.pipeline_file,
            "mode": self.mode,
            "group": self.group,
            "api": self.api,
            "concat_dim": self.concat_dim,
            "order_by": self.order_by,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "cluster": dict(self.cluster) if self.cluster is not None else None,
            "files": files,
            "reingested": list(self.reingested) if self.reingested is not None else None,
            "skipped": None
            if self.skipped is None
            else [{"url": s.url, "reason": s.reason} for s in self.skipped],
            "cubes": list(self.cubes) if self.cubes is not None else None,
            "native_fallback": dict(self.native_fallback) if self.native_fallback else None,
        }
        always = _PIPELINE_KEYS if self.pipeline is not None else ()
        out = {k: v for k, v in values.items() if v is not None or k in always}
        if self.layout is not None:
            out["chunks"] = dict(self.layout.chunks)
            out["shards"] = dict(self.layout.shards) if self.layout.shards is not None else None
            out["compression"] = self.layout.compression
        out.update(self.extra)
        if self.files is not None:
            out["ledger_version"] = version
        return out

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any], *, where: str = "ledger") -> CommitRecord:
        """Read a record stored under :data:`METADATA_KEY` (any version up to ours).

        Raises
        ------
        LedgerVersionError
            The record is of a newer ledger format than this icepipe reads.
        LedgerError
            The record is malformed (the message names ``where`` and the field).
        """
        version = data.get("ledger_version", 1)
        _check_version(version, where)
        skipped = data.get("skipped")
        return cls(
            version=_str(data.get("version")),
            mode=_str(data.get("mode")),
            group=_str(data.get("group")),
            api=_str(data.get("api")),
            pipeline=_str(data.get("pipeline")),
            pipeline_file=_str(data.get("pipeline_file")),
            concat_dim=_str(data.get("concat_dim")),
            order_by=_str(data.get("order_by")),
            run_id=_str(data.get("run_id")),
            started_at=_str(data.get("started_at")),
            cluster=dict(data["cluster"]) if isinstance(data.get("cluster"), Mapping) else None,
            files=_files(data.get("files"), version, where),
            reingested=_strs(data.get("reingested")),
            skipped=None
            if not isinstance(skipped, list)
            else tuple(
                SkippedFile(str(s.get("url")), str(s.get("reason")))
                for s in skipped
                if isinstance(s, Mapping)
            ),
            cubes=_strs(data.get("cubes")),
            native_fallback=_str_map(data.get("native_fallback")),
            layout=_layout(data),
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )


def read_record(metadata: Mapping[str, Any], *, snapshot_id: str = "") -> CommitRecord | None:
    """icepipe's record in a commit's ``metadata`` (``None`` when icepipe did not write one).

    Raises
    ------
    LedgerVersionError, LedgerError
        See :meth:`CommitRecord.from_metadata`.
    """
    data = metadata.get(METADATA_KEY)
    if not isinstance(data, Mapping):
        return None
    where = f"snapshot {snapshot_id}" if snapshot_id else "ledger"
    return CommitRecord.from_metadata(data, where=where)


def _files(files: Any, version: int, where: str) -> tuple[FileRecord, ...] | None:
    if version == 1:
        if not isinstance(files, list):
            return None
        return tuple(FileRecord.from_metadata(f, where=where) for f in files)
    return None if files is None else unpack_files(files, where=where)


# Version 2: the file list as columns ------------------------------------------------------------

#: The optional columns of a packed file list, in order (absent when no file has a value).
_OPTIONAL_COLUMNS = ("etag", "start", "length", "cubes")


def pack_files(files: Sequence[FileRecord]) -> dict[str, Any]:
    """The file list of a version-2 record: ``{"count": N, "columns": TEXT}``.

    ``TEXT`` is base64 of the zlib-compressed JSON object of the columns: ``url_prefix`` (the
    URLs' common prefix), ``url`` (each URL after it), ``size``, ``mtime``, and ``etag``,
    ``start``, ``length``, ``cubes`` (``{cube: [start, length]}``) when any file has one,
    ``null`` for a file without. One string instead of one JSON object per file: Icechunk keeps
    each JSON value of the commit metadata as its own object while it commits, and every
    snapshot's metadata in the repository's ``repo`` object, which each later commit rewrites.
    """
    urls = [f.url for f in files]
    cut = _common_prefix_length(urls)
    prefix = urls[0][:cut] if urls else ""
    columns: dict[str, Any] = {
        "url_prefix": prefix,
        "url": [u[cut:] for u in urls],
        "size": [f.size for f in files],
        "mtime": [f.mtime for f in files],
    }
    for key in _OPTIONAL_COLUMNS:
        if key == "cubes":
            values: list[Any] = [
                None if f.cubes is None else {c: [s, n] for c, (s, n) in f.cubes.items()}
                for f in files
            ]
        elif key == "etag":
            values = [f.etag or None for f in files]
        else:
            values = [getattr(f, key) for f in files]
        if any(v is not None for v in values):
            columns[key] = values
    text = json.dumps(columns, separators=(",", ":"), ensure_ascii=False).encode()
    return {"count": len(urls), "columns": base64.b64encode(zlib.compress(text, 6)).decode()}


def _common_prefix_length(texts: Sequence[str]) -> int:
    """The length of the characters all ``texts`` begin with (those of the first and the
    last in sorted order)."""
    if not texts:
        return 0
    lo, hi = min(texts), max(texts)
    n = 0
    while n < len(lo) and n < len(hi) and lo[n] == hi[n]:
        n += 1
    return n


def unpack_files(packed: Any, *, where: str = "ledger") -> tuple[FileRecord, ...]:
    """The :class:`FileRecord` values of a version-2 file list (:func:`pack_files`).

    Raises
    ------
    LedgerError
        ``packed`` is not such a list (the message names ``where`` and the column).
    """
    if not isinstance(packed, Mapping) or not isinstance(packed.get("columns"), str):
        raise LedgerError(
            f"{where}: files: expected {{'count': N, 'columns': TEXT}} (ledger format 2), "
            f"got {str(packed)[:200]}"
        )
    try:
        columns = json.loads(zlib.decompress(base64.b64decode(packed["columns"], validate=True)))
    except (ValueError, zlib.error) as exc:
        raise LedgerError(f"{where}: files: the packed columns do not decode: {exc}") from exc
    if not isinstance(columns, dict):
        raise LedgerError(f"{where}: files: the packed columns are not a JSON object")
    count = packed.get("count")
    prefix = _required_str(columns.get("url_prefix"), f"{where}: files: url_prefix")
    urls = [prefix + s for s in _column(columns, "url", str, count, where, required=True)]
    sizes = _column(columns, "size", int, count, where, required=True)
    mtimes = _column(columns, "mtime", str, count, where, required=True)
    etags = _column(columns, "etag", str, count, where)
    starts = _column(columns, "start", int, count, where)
    lengths = _column(columns, "length", int, count, where)
    cubes = _column(columns, "cubes", dict, count, where)
    if cubes.count(None) == len(cubes):  # no file placed in hypercubes
        return tuple(_records(urls, sizes, mtimes, etags, starts, lengths))
    return tuple(
        FileRecord(
            url,
            sizes[i],
            mtimes[i],
            etags[i] or None,
            starts[i],
            lengths[i],
            None if cubes[i] is None else _cube_places(cubes[i], f"{where}: {url}: cubes"),
        )
        for i, url in enumerate(urls)
    )


def _column(
    columns: dict[str, Any], key: str, kind: type, count: Any, where: str, *, required: bool = False
) -> list[Any]:
    """One column of ``count`` values of type ``kind`` (``None`` allowed in optional ones)."""
    values = columns.get(key)
    if values is None and not required:
        return [None] * (count if isinstance(count, int) else 0)
    if not isinstance(values, list) or not isinstance(count, int) or len(values) != count:
        raise LedgerError(
            f"{where}: files: column {key!r} is not a list of {count!r} values (count)"
        )
    # type() rather than isinstance: True is not a size. The set of the values' types is
    # built at C speed; the slow search below runs only to name a bad value.
    allowed = {kind} if required else {kind, type(None)}
    if not set(map(type, values)) <= allowed:
        bad = next(v for v in values if not (type(v) is kind or (v is None and not required)))
        raise LedgerError(
            f"{where}: files: column {key!r}: expected {kind.__name__} values, got {bad!r}"
        )
    return values


def _check_version(version: Any, where: str) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LedgerError(
            f"{where}: ledger_version {version!r} is not a format version (a positive integer); "
            "the commit metadata was not written by icepipe"
        )
    if version > LEDGER_VERSION:
        raise LedgerVersionError(
            f"{where}: the ingest ledger is in format {version}, newer than the format "
            f"{LEDGER_VERSION} this icepipe reads (a newer icepipe wrote to this repository); "
            "upgrade icepipe (pip install --upgrade icepipe) to read or write it",
            found=version,
            supported=LEDGER_VERSION,
        )


def _int(value: Any, what: str) -> int | None:
    return None if value is None else _required_int(value, what)


def _required_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LedgerError(f"{what}: expected an integer, got {value!r}")
    return value


def _required_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise LedgerError(f"{what}: expected a string, got {value!r}")
    return value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strs(value: Any) -> tuple[str, ...] | None:
    return tuple(str(v) for v in value) if isinstance(value, list) else None


def _str_map(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(k): str(v) for k, v in value.items()}


def _cube_places(value: Any, what: str) -> dict[str, tuple[int, int]]:
    if not isinstance(value, Mapping):
        raise LedgerError(f"{what}: expected a mapping of cube -> [start, length], got {value!r}")
    out = {}
    for name, place in value.items():
        if not isinstance(place, Sequence) or len(place) != 2:
            raise LedgerError(f"{what}: {name}: expected [start, length], got {place!r}")
        out[str(name)] = (
            _required_int(place[0], f"{what}: {name}: start"),
            _required_int(place[1], f"{what}: {name}: length"),
        )
    return out


def _layout(data: Mapping[str, Any]) -> NativeLayout | None:
    chunks, shards = data.get("chunks"), data.get("shards")
    if not isinstance(chunks, Mapping):
        return None
    return NativeLayout(
        chunks={str(k): v if isinstance(v, str) else int(v) for k, v in chunks.items()},
        shards={str(k): int(v) for k, v in shards.items()} if isinstance(shards, Mapping) else None,
        compression=str(data.get("compression")),
    )
