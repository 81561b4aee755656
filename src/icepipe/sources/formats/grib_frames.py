"""GRIB messages found by their framing, with the header bytes that place them in cfgrib's
hypercubes: what the template route of :mod:`~icepipe.sources.formats.grib_index` reads instead
of indexing a file with ecCodes and cfgrib.

A message starts with ``GRIB``; edition 1 gives its length in 3 bytes (octets 5-7), edition 2
in 8 (octets 9-16); it ends with ``7777``. Bytes between messages that do not start one are
skipped, as ecCodes skips them. What this module does not read exactly the way ecCodes does is
refused (:func:`frames` returns None) and the file goes the usual way: GRIB1 messages over
8 MB (their length field is rescaled by the data section's), sections that do not fill the
message exactly, several fields in one GRIB2 message, ``GRIB`` that does not start a whole
message, a reference time that is not a date.

Each message's *identity* is its header with the reference time left out: every byte of the
GRIB1 product and grid definition sections but the date (octets 13-17 and 25 of section 1),
the bitmap section's table reference and the data section's flags; every byte of GRIB2
sections 1 (but octets 13-18, the date up to minutes), 2, 3 and 4, the template number of
section 5 and the bitmap indicator of section 6. Everything cfgrib maps (parameter, level,
step, grid, ensemble member, ...) comes from those bytes; values, their packing parameters
and bitmaps (which change with the data) do not take part. Two files whose messages have the
same identities in the same order, and whose reference times differ by one same amount,
are mapped by cfgrib alike but for that shift of ``time`` (and ``valid_time``).
"""

from __future__ import annotations

import datetime
import hashlib
import mmap
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Frame", "frames", "layout_key", "shiftable"]

_MAGIC = b"GRIB"
_END = b"7777"
#: The sections of a GRIB2 message holding one field (2, local use, is optional).
_ONE_FIELD = ([1, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7])


@dataclass(frozen=True, slots=True)
class Frame:
    """One GRIB message: where it is, what places it in cfgrib's cubes, and its reference
    time (``dataDate``/``dataTime``, to the minute, as cfgrib reads them)."""

    offset: int
    length: int
    identity: bytes
    when: datetime.datetime


def _u(data: bytes | mmap.mmap, start: int, n: int) -> int:
    return int.from_bytes(data[start : start + n], "big")


def _date(year: int, month: int, day: int, hour: int, minute: int) -> datetime.datetime | None:
    try:
        return datetime.datetime(year, month, day, hour, minute)
    except ValueError:
        return None


def _parts(*parts: bytes) -> bytes:
    """Byte strings joined so that no two different lists give the same result."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _grib1(m: bytes) -> tuple[bytes, datetime.datetime] | None:
    """The identity and reference time of one GRIB1 message ``m`` (None: not read here)."""
    pds_len = _u(m, 8, 3)
    if pds_len < 28 or 8 + pds_len > len(m):
        return None
    pds = m[8 : 8 + pds_len]
    when = _date((pds[24] - 1) * 100 + pds[12], pds[13], pds[14], pds[15], pds[16])
    parts = [b"1", pds[:12] + pds[17:24] + pds[25:]]
    q = 8 + pds_len
    if pds[7] & 0x80:  # grid description section
        gds_len = _u(m, q, 3)
        parts.append(m[q : q + gds_len])
        q += gds_len
    if pds[7] & 0x40:  # bitmap section: its bits change with the data, its kind does not
        parts.append(m[q + 4 : q + 6])
        q += _u(m, q, 3)
    if q + 4 > len(m):
        return None
    parts.append(bytes([m[q + 3] & 0xF0]))  # data section flags (packing kind)
    q += _u(m, q, 3)
    if when is None or q + 4 != len(m):
        return None
    return _parts(*parts), when


def _grib2(m: bytes) -> tuple[bytes, datetime.datetime] | None:
    """The identity and reference time of one GRIB2 message ``m`` (None: not read here)."""
    parts = [b"2", m[6:7]]  # discipline
    numbers = []
    when = None
    q = 16
    while q < len(m) - 4:
        n, number = _u(m, q, 4), m[q + 4]
        if n < 5 or q + n > len(m) - 4:
            return None
        s = m[q : q + n]
        numbers.append(number)
        if number == 1:
            if n < 21:
                return None
            when = _date(_u(s, 12, 2), s[14], s[15], s[16], s[17])
            parts.append(s[:12] + s[18:])
        elif number in (2, 3, 4):
            parts.append(s)
        elif number == 5:
            parts.append(s[9:11] if n >= 11 else b"")
        elif number == 6:
            parts.append(s[5:6])
        q += n
    # One field per message: several fields would make chunks of part of a message.
    if when is None or q != len(m) - 4 or numbers not in _ONE_FIELD:
        return None
    return _parts(*parts), when


def frames(data: bytes | mmap.mmap) -> list[Frame] | None:
    """Every GRIB message of a file's bytes, in file order (None: something here is not read
    exactly the way ecCodes reads it; an empty list: no message)."""
    out: list[Frame] = []
    pos = 0
    size = len(data)
    while True:
        pos = data.find(_MAGIC, pos)
        if pos < 0:
            return out
        if pos + 16 > size:
            return None
        edition = data[pos + 7]
        if edition == 1:
            length = _u(data, pos + 4, 3)
            if length & 0x800000:  # the large-message rule: let ecCodes read those
                return None
        elif edition == 2:
            length = _u(data, pos + 8, 8)
        else:
            return None
        if length < 16 or pos + length > size or data[pos + length - 4 : pos + length] != _END:
            return None
        message = data[pos : pos + length]
        read = _grib1(message) if edition == 1 else _grib2(message)
        if read is None:
            return None
        out.append(Frame(pos, length, read[0], read[1]))
        pos += length


#: Reference times inside which xarray decodes cfgrib's times to ``datetime64[ns]``, with some
#: 60 years to spare for steps (outside, ``cftime`` objects, which no template moves).
_EARLIEST = datetime.datetime(1700, 1, 1)
_LATEST = datetime.datetime(2200, 1, 1)


def shiftable(found: Sequence[Frame]) -> bool:
    """Whether every reference time of ``found`` is one a template may be moved onto or from
    (a file of 2300, or 1600, goes the usual way: its times do not decode to datetime64)."""
    return all(_EARLIEST <= f.when < _LATEST for f in found)


def layout_key(found: Sequence[Frame]) -> bytes:
    """A digest of the messages' identities, in order: equal for files cfgrib maps alike."""
    h = hashlib.blake2b(digest_size=20)
    for f in found:
        h.update(len(f.identity).to_bytes(4, "big"))
        h.update(f.identity)
    return h.digest()
