"""netCDF3 scans at the speed of the header: the classic formats' header (CDF-1, CDF-2, CDF-5)
read natively, summarised into a layout key, for :mod:`~icepipe.sources.quick` to pack a file
laid out like one already scanned onto that file's result.

A netCDF3 header is a short big-endian grammar (magic, ``numrecs``, the dimension list, the
global attributes, the variable list: name, dimension ids, attributes, ``nc_type``, ``vsize``,
``begin``) and it says where every value is. VirtualiZarr's ``NetCDF3Parser`` reads it quickly
too; what costs a scan tens of milliseconds is xarray opening the parsed file as a Zarr store.
Here one read of the file's head is parsed (:func:`parse_header`) into a :class:`Layout`: a key
holding everything the virtual dataset is made of (dimensions with the record count, each
variable's name, dimensions, type, record or not, attributes with their values), except what
may differ between the files of one series and is read per file: each variable's ``begin``
(which follows the header's length), the values of loaded variables, and the values (not the
types) of plain global attributes (non-empty strings, finite numbers) and of the ``units``
(time units only), ``long_name``, ``history`` and ``comment`` strings of variables.

Chunks are what VirtualiZarr makes of them: a fixed-size variable is one chunk at ``begin``;
a record variable has one chunk per record, ``recsize`` apart, where ``recsize`` is the sum of
the record variables' ``vsize``, or, for a file holding a single record variable, its unpadded
record (the classic format writes those records back to back). A ``numrecs`` of all one bits
(a file being streamed) counts the records the file size holds.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from icepipe.sources.formats.selection import LINKING, may_keep

__all__ = [
    "Attribute",
    "Header",
    "HeaderError",
    "Layout",
    "Variable",
    "chunk_table",
    "discard",
    "hand_on",
    "layout_of",
    "parse_header",
    "per_file_value",
    "read_header",
    "read_raw",
]

# nc_type codes: everything is big-endian on disk; 7-11 exist only in CDF-5.
_TYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("i1"),
    2: np.dtype("S1"),
    3: np.dtype(">i2"),
    4: np.dtype(">i4"),
    5: np.dtype(">f4"),
    6: np.dtype(">f8"),
    7: np.dtype("u1"),
    8: np.dtype(">u2"),
    9: np.dtype(">u4"),
    10: np.dtype(">i8"),
    11: np.dtype(">u8"),
}
_CHAR = 2
_DIMENSION, _VARIABLE, _ATTRIBUTE = 10, 11, 12
# Bytes of the file read first; a longer header is read again whole.
_HEAD = 16384
_PER_FILE_VAR_ATTRS = {"units", "long_name", "history", "comment"}
_INT32, _INT64 = struct.Struct(">i"), struct.Struct(">q")


class HeaderError(ValueError):
    """The bytes are not a well-formed netCDF3 header."""


class _Short(Exception):
    """The header goes on past the bytes read."""


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    nc_type: int
    nelems: int
    raw: bytes

    @property
    def value(self) -> Any:
        """The value as VirtualiZarr's parser gives it: text for chars, a scalar for one
        number, else a list."""
        if self.nc_type == _CHAR:
            return self.raw.decode("utf-8", errors="replace").rstrip("\x00")
        values = np.frombuffer(self.raw, _TYPES[self.nc_type])
        return values[0].item() if self.nelems == 1 else values.tolist()


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    dims: tuple[str, ...]
    #: The shape, the record dimension's length being the record count.
    shape: tuple[int, ...]
    nc_type: int
    attrs: tuple[Attribute, ...]
    vsize: int
    begin: int
    record: bool

    @property
    def dtype(self) -> np.dtype[Any]:
        return _TYPES[self.nc_type]

    @property
    def nbytes(self) -> int:
        """Bytes of the values (of one record, for a record variable), unpadded."""
        inner = self.shape[1:] if self.record else self.shape
        return math.prod(inner) * self.dtype.itemsize


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    #: Records in the file (counted from its size when the header says "streaming").
    numrecs: int
    streaming: bool
    dims: tuple[tuple[str, int], ...]
    attrs: tuple[Attribute, ...]
    variables: tuple[Variable, ...]
    #: Bytes from one record to the next.
    recsize: int


class _Reader:
    """Big-endian fields from the head of a file; CDF-5 widens counts and lengths to 8 bytes,
    CDF-2 and CDF-5 widen ``begin``."""

    def __init__(self, buf: bytes, version: int) -> None:
        self.buf = buf
        self.at = 4
        self.wide = version == 5
        self.version = version

    def take(self, n: int) -> bytes:
        if n < 0:
            raise HeaderError(f"negative length {n} at byte {self.at}")
        end = self.at + n
        if end > len(self.buf):
            raise _Short
        out = self.buf[self.at : end]
        self.at = end
        return out

    def int32(self) -> int:
        at = self.at
        if at + 4 > len(self.buf):
            raise _Short
        self.at = at + 4
        value: int = _INT32.unpack_from(self.buf, at)[0]
        return value

    def int64(self) -> int:
        at = self.at
        if at + 8 > len(self.buf):
            raise _Short
        self.at = at + 8
        value: int = _INT64.unpack_from(self.buf, at)[0]
        return value

    def size(self) -> int:
        return self.int64() if self.wide else self.int32()

    def offset(self) -> int:
        return self.int32() if self.version == 1 else self.int64()

    def padded(self, n: int) -> bytes:
        out = self.take(n)
        self.take(-n % 4)
        return out

    def name(self) -> str:
        raw = self.padded(self.size())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderError(f"a name is not UTF-8 ({raw!r})") from exc

    def nc_type(self) -> int:
        code = self.int32()
        if code not in _TYPES or (code > 6 and self.version != 5):
            raise HeaderError(f"unknown type code {code} for CDF-{self.version}")
        return code

    def list_of(self, tag: int, what: str) -> int:
        found, count = self.int32(), self.size()
        if (found, count) == (0, 0):
            return 0
        if found != tag or count < 0:
            raise HeaderError(f"expected the {what} list, found tag {found} count {count}")
        return count

    def attributes(self) -> tuple[Attribute, ...]:
        out = []
        for _ in range(self.list_of(_ATTRIBUTE, "attribute")):
            name = self.name()
            code = self.nc_type()
            nelems = self.size()
            raw = self.padded(nelems * _TYPES[code].itemsize)
            out.append(Attribute(name, code, nelems, raw))
        return tuple(out)


def parse_header(buf: bytes, file_size: int) -> Header:
    """The header at the start of ``buf`` (the file's first bytes; ``file_size`` bytes in all).

    Raises
    ------
    HeaderError
        Not a netCDF3 header, or cut short (``buf`` holds the whole file).
    """
    try:
        return _parse(buf, file_size)
    except _Short:
        if len(buf) >= file_size:
            raise HeaderError(f"the header is truncated (the file has {file_size} bytes)") from None
        raise


def _parse(buf: bytes, file_size: int) -> Header:
    if buf[:3] != b"CDF" or buf[3:4] not in (b"\x01", b"\x02", b"\x05"):
        raise HeaderError(f"not a netCDF3 file (magic {buf[:4]!r})")
    version = buf[3]
    r = _Reader(buf, version)
    numrecs = r.size()
    dims = []
    for _ in range(r.list_of(_DIMENSION, "dimension")):
        name = r.name()
        dims.append((name, r.size()))
    attrs = r.attributes()
    variables = []
    for _ in range(r.list_of(_VARIABLE, "variable")):
        name = r.name()
        ids = [r.size() for _ in range(r.size())]
        if any(not 0 <= i < len(dims) for i in ids):
            raise HeaderError(f"variable {name!r} names dimension ids {ids} of {len(dims)}")
        var_attrs = r.attributes()
        code = r.nc_type()
        vsize, begin = r.size(), r.offset()
        shape = tuple(dims[i][1] for i in ids)
        record = bool(shape) and shape[0] == 0
        variables.append(
            Variable(
                name, tuple(dims[i][0] for i in ids), shape, code, var_attrs, vsize, begin, record
            )
        )
    records = [v for v in variables if v.record]
    recsize = records[0].nbytes if len(records) == 1 else sum(v.vsize for v in records)
    streaming = numrecs == -1
    if streaming:
        start = min((v.begin for v in records), default=0)
        numrecs = max(0, (file_size - start) // recsize) if records and recsize else 0
    elif numrecs < 0:
        raise HeaderError(f"negative record count {numrecs}")
    variables = [
        Variable(
            v.name, v.dims, (numrecs, *v.shape[1:]), v.nc_type, v.attrs, v.vsize, v.begin, True
        )
        if v.record
        else v
        for v in variables
    ]
    return Header(version, numrecs, streaming, tuple(dims), attrs, tuple(variables), recsize)


def read_header(path: str) -> Header:
    """The header of the local netCDF3 file ``path``.

    Raises
    ------
    HeaderError
        Not a well-formed netCDF3 header.
    """
    with open(path, "rb") as f:
        return _read_header(f)[0]


def _read_header(f: Any) -> tuple[Header, int]:
    size = os.fstat(f.fileno()).st_size
    want = _HEAD
    while True:
        f.seek(0)
        buf = f.read(want)
        try:
            return parse_header(buf, size), size
        except _Short:
            want = max(want * 4, 1)


# --- layouts for sources/quick.py --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Values:
    """Where one variable's values are in the open file."""

    file: Any
    var: Variable
    recsize: int


@dataclass
class Layout:
    """One open file's layout key and what :mod:`~icepipe.sources.quick` reads from it (the
    same members as :class:`~icepipe.sources.formats.hdf5_index.Layout`)."""

    key: tuple[Any, ...]
    file: Any
    datasets: dict[str, _Values]
    group_attrs: dict[str, Any]
    var_attrs: dict[str, dict[str, Any]]
    #: The record dimension and the file's record count (None: no record dimension). The
    #: count is not part of the key: files of a series may hold more or fewer records.
    records: tuple[str, int] | None = None
    #: Where the data of the variables the selection leaves out ends (0: none): the usual
    #: route refuses a file truncated inside them too.
    left_out_end: int = 0


def per_file_value(value: Any) -> Any:
    """The value stored for an attribute read per file (already converted by the layout)."""
    return value


def _plain(a: Attribute) -> Any:
    """The value of an attribute whose value may differ between files of one layout (a
    non-empty string, one finite number), else None."""
    value = a.value
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if math.isfinite(value) else None
    return None


def _attrs_key(
    attrs: tuple[Attribute, ...], per_file: dict[str, Any], pick: Any
) -> tuple[Any, ...]:
    """Attributes for a layout key; those ``pick`` takes go into ``per_file`` with their
    values, their name and type alone into the key."""
    out: list[Any] = []
    for a in attrs:
        value = pick(a)
        if value is not None:
            per_file[a.name] = value
            out.append((a.name, a.nc_type))
        else:
            out.append((a.name, a.nc_type, a.nelems, a.raw))
    return tuple(out)


def _var_pick(a: Attribute) -> Any:
    if a.name not in _PER_FILE_VAR_ATTRS or a.nc_type != _CHAR:
        return None
    value = _plain(a)
    return value if a.name != "units" or " since " in str(value) else None


def layout_of(
    path: str,
    group: str | None,
    order_by: str | None,
    *,
    variables: tuple[str, ...] | None = None,
    drop_variables: tuple[str, ...] = (),
) -> Layout | None:
    """The layout of the local netCDF3 file ``path`` (open: close it with :func:`discard`), or
    None when ``group`` is set (netCDF3 has none: the usual route says so).

    The key covers the variables the scan may keep under ``variables`` / ``drop_variables``
    (``source.*``; see :func:`_kept`) and the dimensions they use: files differing only in
    variables the selection leaves out share a key.

    Raises
    ------
    HeaderError
        Not a well-formed netCDF3 header.
    """
    if group is not None:
        return None
    f = open(path, "rb")  # noqa: SIM115 (closed by discard)
    try:
        header, _ = _read_header(f)
        kept = _kept(header, order_by, variables, drop_variables)
        used = {d for v in header.variables if v.name in kept for d in v.dims}
        group_attrs: dict[str, Any] = {}
        var_attrs: dict[str, dict[str, Any]] = {}
        dims = tuple((name, n) for name, n in header.dims if name in used)
        parts: list[Any] = ["netcdf3", order_by, dims]
        datasets = {}
        left_out_end = 0
        for v in header.variables:
            if v.name not in kept:
                left_out_end = max(left_out_end, _data_end(v, header.recsize))
                continue
            var_attrs[v.name] = {}
            attrs = _attrs_key(v.attrs, var_attrs[v.name], _var_pick)
            parts.append((v.name, v.dims, v.nc_type, v.record, attrs))
            datasets[v.name] = _Values(f, v, header.recsize)
        parts.append(_attrs_key(header.attrs, group_attrs, _plain))
    except BaseException:
        f.close()
        raise
    record_dim = next((name for name, n in header.dims if n == 0), None)
    return Layout(
        key=tuple(parts),
        file=f,
        datasets=datasets,
        group_attrs=group_attrs,
        var_attrs=var_attrs,
        records=None if record_dim is None else (record_dim, header.numrecs),
        left_out_end=left_out_end,
    )


def _data_end(v: Variable, recsize: int) -> int:
    """Where the chunks VirtualiZarr's parser references for ``v`` end (0: none; see
    :func:`chunk_table`: scalars and empty variables have none)."""
    if not v.shape or 0 in v.shape:
        return 0
    return v.begin + (v.shape[0] - 1) * recsize + v.nbytes if v.record else v.begin + v.nbytes


def _kept(
    header: Header,
    order_by: str | None,
    variables: tuple[str, ...] | None,
    drop_variables: tuple[str, ...],
) -> set[str]:
    """The variables a scan may keep under ``source.variables`` / ``drop_variables``: a
    superset of what it keeps (:func:`~icepipe.sources.formats.selection.may_keep`)."""
    linked = {v.name for v in header.variables if any(a.name in LINKING for a in v.attrs)}
    coordinates = {name for name, _ in header.dims}
    for a in (*header.attrs, *(a for v in header.variables for a in v.attrs)):
        if a.name == "coordinates" and a.nc_type == _CHAR:
            coordinates.update(str(a.value).split())
    names = (v.name for v in header.variables)
    return may_keep(names, linked, coordinates, order_by, variables, drop_variables)


def discard(layout: Layout) -> None:
    """Close the file of ``layout``."""
    layout.datasets.clear()
    layout.file.close()


def hand_on(layout: Layout, path: str, group: str | None, order_by: str | None) -> None:
    """The usual route reads the file itself: close it."""
    discard(layout)


def chunk_table(
    obj: _Values, chunks: tuple[int, ...]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """Whether each chunk is stored, its offset and its length on the chunk grid ``chunks``
    (VirtualiZarr's: one chunk per record, or one for the whole variable); None when the
    variable holds nothing or ``chunks`` is another grid."""
    v = obj.var
    if v.record:
        if chunks != (1, *v.shape[1:]) or not v.shape[0]:
            return None
        grid = (v.shape[0],) + (1,) * (len(v.shape) - 1)
        offsets = v.begin + np.arange(v.shape[0], dtype=np.uint64) * np.uint64(obj.recsize)
        offsets = offsets.reshape(grid)
    else:
        if chunks != v.shape or 0 in v.shape or not v.shape:
            return None
        grid = (1,) * len(v.shape)
        offsets = np.full(grid, v.begin, dtype=np.uint64)
    return (
        np.ones(grid, dtype=bool),
        offsets,
        np.full(grid, v.nbytes, dtype=np.uint64),
    )


def read_raw(obj: _Values) -> np.ndarray[Any, Any]:
    """The variable's values as stored (native byte order, as xarray loads them).

    Raises
    ------
    ValueError
        The file ends before them.
    """
    v = obj.var
    dtype = v.dtype.newbyteorder("=")
    n = v.nbytes
    if v.record and v.shape[0]:
        span = (v.shape[0] - 1) * obj.recsize + n
        buf = os.pread(obj.file.fileno(), span, v.begin)
        if len(buf) < span:
            raise ValueError("the file ends inside a record")
        rows = np.ndarray((v.shape[0], n), np.uint8, buf, strides=(obj.recsize, 1))
        flat = np.frombuffer(rows.tobytes(), v.dtype)
    else:
        count = n if math.prod(v.shape) else 0
        buf = os.pread(obj.file.fileno(), count, v.begin) if count else b""
        if len(buf) < count:
            raise ValueError("the file ends inside a variable")
        flat = np.frombuffer(buf, v.dtype)
    return flat.astype(dtype).reshape(v.shape)
