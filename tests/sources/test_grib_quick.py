"""The GRIB template route (sources/grib_quick.py, grib_index's templates, grib_frames.py)
against the index route (ecCodes' index and cfgrib's mapping for every file): the same results
on every real GRIB sample and on generated series, and the usual route for everything the
template does not cover exactly."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eccodes
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources import grib_quick
from icepipe.sources.formats import grib_frames, grib_index, hdf5_index
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import ScannedCubes, ScannedFile, scan_file

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLES = sorted(
    [
        *(DATA / "cfgrib-samples").glob("*.grib"),
        *(DATA / "ncarg" / "grb").glob("*.grb*"),
        *(DATA / "ncarg" / "grb").glob("*.grib*"),
    ]
)
ERA5_SERIES = sorted((DATA / "era5-series").glob("*.grib"))
ERA5 = DATA / "era5-series" / "era5-2017010100.grib"
G2 = DATA / "cfgrib-samples" / "regular_gg_ml_g2.grib"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    grib_quick.forget()
    yield
    grib_quick.forget()
    grib_index.INDEXED_SCANS = True


def _messages(path: Path) -> list[bytes]:
    out = []
    with open(path, "rb") as fh:
        while (h := eccodes.codes_grib_new_from_file(fh)) is not None:
            out.append(eccodes.codes_get_message(h))
            eccodes.codes_release(h)
    return out


def _shift(message: bytes, hours: int, *, minutes: int = 0) -> bytes:
    """``message`` with its reference time moved on by ``hours`` and ``minutes``."""
    h = eccodes.codes_new_from_message(message)
    try:
        date, hhmm = eccodes.codes_get(h, "dataDate"), eccodes.codes_get(h, "dataTime")
        when = dt.datetime.strptime(f"{date:08d}{hhmm:04d}", "%Y%m%d%H%M")
        when += dt.timedelta(hours=hours, minutes=minutes)
        eccodes.codes_set(h, "dataDate", int(when.strftime("%Y%m%d")))
        eccodes.codes_set(h, "dataTime", int(when.strftime("%H%M")))
        return bytes(eccodes.codes_get_message(h))
    finally:
        eccodes.codes_release(h)


def _write(path: Path, parts: list[bytes]) -> Path:
    path.write_bytes(b"".join(parts))
    return path


def _source(path: Path) -> SourceFile:
    return SourceFile(f"file://{path}", path.stat().st_size, "0")


def _both(path: Path, o: ScanOptions) -> tuple[Any, Any]:
    """The scan of ``path`` by the current route, and by the index route (or their errors)."""

    def scan() -> Any:
        try:
            return scan_file(_source(path), o)
        except SourceError as exc:
            return exc

    first = scan()
    grib_index.INDEXED_SCANS = False
    try:
        second = scan()
    finally:
        grib_index.INDEXED_SCANS = True
    return first, second


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(b, SourceError):
        assert isinstance(a, SourceError) and str(a) == str(b)
        return
    if isinstance(b, ScannedCubes):
        assert isinstance(a, ScannedCubes) and list(a.cubes) == list(b.cubes)
        for name, cube in b.cubes.items():
            _assert_same(a.cubes[name], cube)
        return
    assert isinstance(a, ScannedFile) and isinstance(b, ScannedFile)
    assert a.schema == b.schema
    assert dict(a.fallback) == dict(b.fallback)
    assert hdf5_index.same_dataset(a.dataset, b.dataset)


def _options(cube: str | None = None) -> ScanOptions:
    return ScanOptions(format="grib", concat_dim="time", grib_cube=cube)


def _templated(result: Any) -> bool:
    return isinstance(result, ScannedFile) and isinstance(result.content, PackedDataset)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_shifted_gives_the_index_route_result(path: Path, tmp_path: Path) -> None:
    """Each real file makes the templates; a copy with every reference time a day and 6 hours
    later is scanned from them, and equals the index route's scan: every cube through
    grib_index (scan_grib), and the first cube through the whole scan."""
    try:
        shifted = _write(tmp_path / path.name, [_shift(m, 30) for m in _messages(path)])
    except eccodes.GribInternalError:  # a corrupt sample: both routes say so alike
        for _ in range(2):
            _assert_same(*_both(path, _options()))
        return
    url, copy_url = f"file://{path}", f"file://{shifted}"
    try:
        scanned = grib_index.scan_grib(url, squeeze=False)
    except SourceError:
        return  # not a file the index route scans: nothing to template
    found = grib_index.frames_of(str(shifted), shifted.stat().st_size)
    assert found is not None  # every sample is framed
    quick = grib_index.scan_grib(copy_url, squeeze=False)
    grib_index.INDEXED_SCANS = False
    slow = grib_index.scan_grib(copy_url, squeeze=False)
    grib_index.INDEXED_SCANS = True
    assert grib_index.decode_checks(found) is not None  # built from the template
    assert grib_index.same_cubes(quick, slow)
    if path.stat().st_size > 300_000:
        return  # the whole scan of big files: test_era5_series (the scan_grib part is above)
    o = _options(scanned[0].name)
    scan_file(_source(path), o)  # the template
    a, b = _both(shifted, o)
    _assert_same(a, b)
    assert _templated(a)  # sparse cubes too (single_gridpoint, forecast_monthly_ukmo)
    if len(scanned) > 1:  # every cube, each into its own group
        o = ScanOptions(format="grib", concat_dim="time", grib_cubes=())
        scan_file(_source(path), o)
        a, b = _both(shifted, o)
        _assert_same(a, b)
        assert isinstance(a, ScannedCubes) and all(map(_templated, a.cubes.values()))


def test_era5_series() -> None:
    """The real ERA5 series: the first file makes the template, the others are built from
    it, equal to the index route's scans."""
    for k, path in enumerate(ERA5_SERIES):
        a, b = _both(path, _options())
        _assert_same(a, b)
        assert _templated(a) == (k > 0)


def test_series_are_scanned_from_the_template(tmp_path: Path) -> None:
    """GRIB1 and GRIB2 series: every file after the first is built from the template (no
    dataset), equal to the index route's scan; both the template's own file again, and files
    with junk between messages."""
    for source in (ERA5, G2):
        messages = _messages(source)
        for i in range(3):
            path = _write(
                tmp_path / f"{source.stem}-{i}.grib", [_shift(m, 12 * i) for m in messages]
            )
            a, b = _both(path, _options())
            _assert_same(a, b)
            assert _templated(a) == (i > 0)
        junk = [b"junk\x00" * (k % 3) + _shift(m, 48) for k, m in enumerate(messages)]
        a, b = _both(
            _write(tmp_path / f"{source.stem}-junk.grib", [*junk, b"trailing"]), _options()
        )
        _assert_same(a, b)
        assert _templated(a)
        a, b = _both(source, _options())
        _assert_same(a, b)
        assert _templated(a)


def test_a_layout_is_checked_only_when_a_second_file_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a template costs about a scan again (every decode check): a run of one file
    of a layout (a nightly run) does not pay it; the second file of the layout does."""
    checks: list[str] = []
    check = grib_quick._template_from

    def counted(*args: Any) -> Any:
        checks.append(args[1].url)
        return check(*args)

    monkeypatch.setattr(grib_quick, "_template_from", counted)
    messages = _messages(ERA5)
    first = _write(tmp_path / "a.grib", messages)
    a, b = _both(first, _options())
    _assert_same(a, b)
    assert checks == []
    a, b = _both(_write(tmp_path / "b.grib", [_shift(m, 12) for m in messages]), _options())
    _assert_same(a, b)
    assert _templated(a) and checks == [f"file://{first}"]


def test_a_first_file_changed_before_the_check_does_not_change_later_scans(
    tmp_path: Path,
) -> None:
    """The template is the first file as it was scanned (its messages framed right after its
    scan), however that file changes before the second file comes: rewritten with other
    times, it must not move the second file's times."""
    messages = _messages(ERA5)
    first = _write(tmp_path / "a.grib", messages)
    _both(first, _options())
    _write(first, [_shift(m, 6) for m in messages])
    a, b = _both(_write(tmp_path / "b.grib", [_shift(m, 12) for m in messages]), _options())
    _assert_same(a, b)


Change = Callable[[list[bytes]], list[bytes]]
CHANGES: dict[str, Change] = {
    "permuted": lambda ms: [ms[1], ms[0], *ms[2:]],
    "dropped": lambda ms: ms[:-1],
    "duplicated": lambda ms: [*ms, ms[-1]],
    "one-time-apart": lambda ms: [_shift(ms[0], 1), *ms[1:]],
    "level-changed": lambda ms: [_set(ms[0], "level", 7), *ms[1:]],
    "step-changed": lambda ms: [_set(ms[0], "endStep", 6), *ms[1:]],
    "truncated": lambda ms: [*ms[:-1], ms[-1][:-100]],
    "end-corrupt": lambda ms: [*ms[:-1], ms[-1][:-4] + b"7776"],
    "grib-in-junk": lambda ms: [ms[0], b"GRIB\x00\x00", *ms[1:]],
    "data-corrupt": lambda ms: [_corrupt_data(ms[0]), *ms[1:]],
}


def _set(message: bytes, key: str, value: int) -> bytes:
    h = eccodes.codes_new_from_message(message)
    try:
        eccodes.codes_set(h, key, value)
        return bytes(eccodes.codes_get_message(h))
    finally:
        eccodes.codes_release(h)


def _corrupt_data(message: bytes) -> bytes:
    """The message with its data section's length cut to almost nothing (header intact)."""
    found = grib_frames.frames(message)
    assert found
    return message[:-40] + b"\xff" * 36 + b"7777"


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("source", [ERA5, G2], ids=["grib1", "grib2"])
def test_files_unlike_the_template_go_the_index_route(
    change: str, source: Path, tmp_path: Path
) -> None:
    """A later file that differs from the template by more than its reference time (other
    messages, order, level, step, a shift not shared by all, truncation, corruption) gets
    exactly the index route's result or error."""
    messages = _messages(source)
    scan_file(_source(source), _options())  # the template
    changed = CHANGES[change]([_shift(m, 24) for m in messages])
    a, b = _both(_write(tmp_path / "changed.grib", changed), _options())
    _assert_same(a, b)
    if change not in ("data-corrupt",):
        assert not _templated(a)


def _undecodable(message: bytes) -> bytes:
    """A GRIB1 message whose header frames as before but whose data cannot be decoded (255
    bits per value)."""
    m = bytearray(message)
    q = 8 + int.from_bytes(m[8:11], "big")
    for bit in (0x80, 0x40):  # grid and bitmap sections, when present
        if m[15] & bit:
            q += int.from_bytes(m[q : q + 3], "big")
    m[q + 10] = 255
    return bytes(m)


def test_a_variable_that_stops_decoding_goes_the_index_route(tmp_path: Path) -> None:
    """The first message of a variable decides whether the codec serves it: a file where it
    does not decode goes the usual way, which reads that variable natively."""
    messages = _messages(ERA5)
    scan_file(_source(ERA5), _options())
    found = grib_frames.frames(b"".join(messages))
    assert found is not None
    checks = grib_index.decode_checks(found)
    assert checks
    broken = [_shift(m, 24) for m in messages]
    slot = checks[0][0]
    broken[slot] = _undecodable(broken[slot])
    a, b = _both(_write(tmp_path / "broken.grib", broken), _options())
    _assert_same(a, b)
    assert not _templated(a) and isinstance(b, ScannedFile) and b.fallback


def _ecc_when(message: bytes) -> dt.datetime:
    h = eccodes.codes_new_from_message(message)
    date, hhmm = eccodes.codes_get(h, "dataDate"), eccodes.codes_get(h, "dataTime")
    eccodes.codes_release(h)
    return dt.datetime.strptime(f"{date:08d}{hhmm:04d}", "%Y%m%d%H%M")


def test_reference_times_match_eccodes() -> None:
    """The reference time framing reads is ecCodes' dataDate/dataTime, on every message of
    every sample, and on copies of GRIB1 and GRIB2 messages 6 days and 90 minutes later."""
    for path in SAMPLES:
        found = grib_frames.frames(path.read_bytes())
        if found is None:
            continue
        messages = _messages(path)
        assert [f.when for f in found] == [_ecc_when(m) for m in messages]
    for message in (*_messages(ERA5)[:2], *_messages(G2)[:2]):
        for later in (message, _shift(message, 6 * 24, minutes=90)):
            (frame,) = grib_frames.frames(later) or ()
            assert frame.when == _ecc_when(later)


_POOL = [
    m for p in (ERA5, G2, DATA / "cfgrib-samples" / "regular_ll_sfc.grib") for m in _messages(p)[:3]
]


def _eccodes_frames(data: bytes) -> list[tuple[int, int]] | None:
    """Offsets and lengths of the messages ecCodes reads from ``data`` (None: it fails)."""
    out = []
    with tempfile.TemporaryFile() as fh:
        fh.write(data)
        fh.seek(0)
        try:
            while (h := eccodes.codes_grib_new_from_file(fh)) is not None:
                offset = int(eccodes.codes_get_message_offset(h))
                out.append((offset, int(eccodes.codes_get_message_size(h))))
                eccodes.codes_release(h)
        except eccodes.GribInternalError:
            return None
    return out


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(_POOL) - 1), min_size=0, max_size=6),
    junk=st.lists(st.binary(max_size=12).filter(lambda b: b"G" not in b), min_size=7, max_size=7),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
)
def test_framing_finds_the_messages_ecCodes_finds(
    picks: list[int], junk: list[bytes], cut: int | None
) -> None:
    """Real messages with junk around them, maybe cut short: when framing reads the bytes, it
    finds the messages ecCodes finds, at the same offsets and lengths."""
    data = b"".join(junk[k] + _POOL[p] for k, p in enumerate(picks)) + junk[-1]
    if cut is not None:
        data = data[: max(0, len(data) - cut)]
    found = grib_frames.frames(data)
    if found is None:
        assert cut, "whole messages between junk are framed"
        return  # the usual route reads such a file
    assert [(f.offset, f.length) for f in found] == _eccodes_frames(data)
    assert len(found) <= len(picks)


def test_framing_refuses_large_grib1_and_multi_field_grib2() -> None:
    """What ecCodes reads by other rules is left to it: a GRIB1 length with the large-message
    bit, a GRIB2 message holding two fields."""
    g1 = _messages(ERA5)[0]
    large = g1[:4] + bytes([g1[4] | 0x80]) + g1[5:]
    assert grib_frames.frames(large) is None
    g2 = _messages(G2)[0]
    found = grib_frames.frames(g2)
    assert found is not None and len(found) == 1
    # Sections 4-7 repeated: a second field in the same message.
    q, sections = 16, {}
    while q < len(g2) - 4:
        n = int.from_bytes(g2[q : q + 4], "big")
        sections[g2[q + 4]] = g2[q : q + n]
        q += n
    body = b"".join(sections[k] for k in sorted(sections))
    body += b"".join(sections[k] for k in (4, 5, 6, 7))
    total = 16 + len(body) + 4
    multi = g2[:8] + total.to_bytes(8, "big") + body + b"7777"
    assert grib_frames.frames(multi) is None


@pytest.mark.parametrize("years", [300, -420], ids=["2317", "1597"])
def test_times_outside_datetime64_go_the_index_route(tmp_path: Path, years: int) -> None:
    """The index route decodes a reference time of 2317 (or 1597) to cftime objects, which no
    template moves (a datetime64[ns] shift would overflow): such a file goes that route, on
    both levels of templates, and equals it."""
    messages = _messages(ERA5)
    first = _write(tmp_path / "a.grib", messages)
    second = _write(tmp_path / "b.grib", [_shift(m, 24) for m in messages])
    far = _write(tmp_path / "c.grib", [_shift(m, round(years * 365.25 * 24)) for m in messages])
    results = [_both(p, _options()) for p in (first, second, far)]
    for result in results:
        _assert_same(*result)
    assert [_templated(r[0]) for r in results] == [False, True, False]
    # cfgrib's mapping level (grib_index's templates) alone.
    grib_quick.forget()
    for p in (first, second):
        grib_index.scan_grib(f"file://{p}", squeeze=False)
    quick = grib_index.scan_grib(f"file://{far}", squeeze=False)
    grib_index.INDEXED_SCANS = False
    usual = grib_index.scan_grib(f"file://{far}", squeeze=False)
    for a, b in zip(quick, usual, strict=True):  # cftime objects: compared one by one
        for name in ("time", "valid_time"):
            assert list(a.dataset[name].values.ravel()) == list(b.dataset[name].values.ravel())


def test_a_first_file_rewritten_during_its_scan_makes_no_template(tmp_path: Path) -> None:
    """A layout's first file rewritten (same layout, 6 hours later) between its framing and
    its scan: its scan's times are not its framed ones, and a template made of the two would
    move every later file of the layout from the wrong times. No template is made: later
    files equal the index route, on both levels of templates."""
    import copy

    from icepipe.sources import quick

    messages = _messages(ERA5)
    o = _options()
    later = _write(tmp_path / "later.grib", [_shift(m, 48) for m in messages])
    # cfgrib's mapping level: framed, then rewritten, then indexed and mapped.
    first = _write(tmp_path / "a.grib", messages)
    url, path, size = f"file://{first}", str(first), first.stat().st_size
    pending = grib_index._scan_quick(url, path, size, False)
    assert isinstance(pending, grib_index._Pending)
    _write(first, [_shift(m, 6) for m in messages])
    cubes, fields = grib_index._index_and_map(url, path, size, False)
    kept = copy.deepcopy(cubes)
    scanned = grib_index._cubes_of(url, path, cubes, fields, False)
    grib_index._remember(pending, url, path, False, kept, fields, scanned)
    quick_cubes = grib_index.scan_grib(f"file://{later}", squeeze=False)
    grib_index.INDEXED_SCANS = False
    usual = grib_index.scan_grib(f"file://{later}", squeeze=False)
    grib_index.INDEXED_SCANS = True
    assert grib_index.same_cubes(quick_cubes, usual)
    # The finished scans' level (with cfgrib's mapping level templated): scanned, then
    # rewritten, then remembered.
    grib_quick.forget()
    for i, hours in enumerate((72, 96)):
        copied = _write(tmp_path / f"{i}.grib", [_shift(m, hours) for m in messages])
        grib_index.scan_grib(f"file://{copied}", squeeze=False)
    second = _write(tmp_path / "b.grib", messages)
    pending = grib_quick.scan_quick(_source(second), o)
    assert isinstance(pending, quick.Pending)
    grib_index.INDEXED_SCANS = False  # the usual scan, not remembered
    result = scan_file(_source(second), o)
    grib_index.INDEXED_SCANS = True
    assert isinstance(result, ScannedFile)
    _write(second, [_shift(m, 6) for m in messages])
    grib_quick.remember(pending, _source(second), o, (result.schema, result.content))
    _assert_same(*_both(later, o))
