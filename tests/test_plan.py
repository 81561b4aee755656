"""Pure planning (icepipe.plan): which files are new, their order, and whether they fit together.

Everything here is built by hand from the plain value types in icepipe.model: no files, no
repositories, no cluster.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from collections.abc import Sequence
from typing import Any

import cftime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icepipe.errors import ConfigError, SchemaMismatchError, SourceError
from icepipe.model import FileSchema, SourceFile, TargetSchema, VariableSchema
from icepipe.plan import (
    CubeFiles,
    EdgePlan,
    Slot,
    ledger_slots,
    plan_append,
    plan_cubes,
    plan_edges,
    select_new,
)

UNITS = "days since 2000-01-01"
CALENDAR = "proleptic_gregorian"
NX = 6


def file_schema(
    url: str,
    values: Sequence[float] | None,
    *,
    steps: int | None = None,
    ny: int = 5,
    dtype: str = "float32",
    time_chunk: int = 1,
    units: str | None = UNITS,
    calendar: str | None = CALENDAR,
    variables: Sequence[str] = ("tas",),
) -> FileSchema:
    """A scanned netCDF file of ``variables`` on (time, lat, lon) with a loaded time coordinate.

    ``values=None`` stands for a file without a ``time`` coordinate variable (``steps`` long).
    """
    n = len(values) if values is not None else (steps or 1)
    vs = {
        name: VariableSchema(
            dims=("time", "lat", "lon"),
            shape=(n, ny, NX),
            dtype=dtype,
            chunks=(time_chunk, ny, NX),
            attrs_units="K",
        )
        for name in variables
    }
    vs["lat"] = VariableSchema(dims=("lat",), shape=(ny,), dtype="float64", chunks=None)
    vs["lon"] = VariableSchema(dims=("lon",), shape=(NX,), dtype="float64", chunks=None)
    if values is not None:
        vs["time"] = VariableSchema(
            dims=("time",),
            shape=(n,),
            dtype="int64",
            chunks=None,
            attrs_units=units,
            attrs_calendar=calendar,
        )
    return FileSchema(
        url=url,
        format="netcdf4",
        dims={"time": n, "lat": ny, "lon": NX},
        variables=vs,
        concat_values=tuple(float(v) for v in values) if values is not None else None,
        concat_units=units if values is not None else None,
        concat_calendar=calendar if values is not None else None,
    )


def target_of(*files: FileSchema) -> TargetSchema:
    """The target group as it looks after ingesting ``files`` (in this order)."""
    n = sum(f.dims["time"] for f in files)
    variables = {}
    for name, v in files[0].variables.items():
        shape = tuple(n if d == "time" else s for d, s in zip(v.dims, v.shape, strict=True))
        # Loaded coordinates are native Zarr arrays in the repository: they have chunks too.
        variables[name] = dataclasses.replace(v, shape=shape, chunks=v.chunks or shape)
    values = [x for f in files for x in f.concat_values or ()]
    return TargetSchema(
        variables=variables,
        dims={**files[0].dims, "time": n},
        concat_first=values[0] if values else None,
        concat_last=values[-1] if values else None,
    )


def src(
    url: str, size: int = 100, mtime: str = "2024-01-01T00:00:00+00:00", **kw: Any
) -> SourceFile:
    return SourceFile(url=url, size=size, mtime=mtime, **kw)


# --- select_new ---------------------------------------------------------------------------


def test_select_new_without_ledger_keeps_listing_order() -> None:
    listed = [src("file:///d/b.nc"), src("file:///d/a.nc")]
    sel = select_new(listed, {})
    assert sel.new == tuple(listed)
    assert sel.already == ()


def test_select_new_skips_recorded_files_and_ignores_vanished_ones() -> None:
    a, b, c = src("file:///d/a.nc"), src("file:///d/b.nc"), src("file:///d/c.nc")
    ledger = {a.url: a.identity(), c.url: c.identity(), "file:///d/deleted.nc": {"size": 1}}
    sel = select_new([a, b, c], ledger)
    assert sel.new == (b,)
    assert sel.already == (a, c)


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(src("file:///d/a.nc", size=101), id="size"),
        pytest.param(src("file:///d/a.nc", mtime="2024-01-01T00:00:01+00:00"), id="mtime"),
    ],
)
def test_select_new_changed_file_raises_naming_it(now: SourceFile) -> None:
    before = src("file:///d/a.nc")
    with pytest.raises(SourceError) as info:
        select_new([now, src("file:///d/b.nc")], {before.url: before.identity()})
    err = info.value
    assert err.urls == (now.url,)
    assert err.url == now.url
    msg = str(err)
    assert now.url in msg
    assert "changed after they were ingested" in msg
    assert "size 100" in msg  # what was ingested, and what is there now
    assert "Restore the original file" in msg


def test_select_new_etag_wins_over_mtime() -> None:
    before = src("file:///d/a.nc", etag="abc")
    touched = src("file:///d/a.nc", mtime="2025-01-01T00:00:00+00:00", etag="abc")
    assert select_new([touched], {before.url: before.identity()}).already == (touched,)
    rewritten = src("file:///d/a.nc", etag="xyz")
    with pytest.raises(SourceError):
        select_new([rewritten], {before.url: before.identity()})


def test_select_new_names_every_changed_file() -> None:
    listed = [src(f"file:///d/f{i}.nc", size=200) for i in range(8)]
    ledger = {f.url: src(f.url).identity() for f in listed}
    with pytest.raises(SourceError) as info:
        select_new(listed, ledger)
    assert info.value.urls == tuple(f.url for f in listed)
    assert "and 3 more" in str(info.value)


# --- plan_append: order ---------------------------------------------------------------------


def test_orders_by_coordinate_values_not_names() -> None:
    z = file_schema("file:///d/z.nc", [0, 1, 2])
    a = file_schema("file:///d/a.nc", [3, 4])
    m = file_schema("file:///d/m.nc", [5])
    p = plan_append([a, m, z], TargetSchema(), "time")
    assert p.order == (z.url, a.url, m.url)
    assert p.append is False
    assert p.new_length == 6


def test_orders_by_url_without_coordinate() -> None:
    files = [file_schema(f"file:///d/{n}.nc", None, steps=2) for n in "cab"]
    p = plan_append(files, TargetSchema(), "time")
    assert p.order == ("file:///d/a.nc", "file:///d/b.nc", "file:///d/c.nc")


def test_append_after_the_target() -> None:
    old = file_schema("file:///d/a.nc", [0, 1])
    new = file_schema("file:///d/b.nc", [2, 3])
    p = plan_append([new], target_of(old), "time")
    assert (p.order, p.append, p.new_length) == ((new.url,), True, 2)


def test_needs_at_least_one_file() -> None:
    with pytest.raises(ValueError, match="at least one file"):
        plan_append([], TargetSchema(), "time")


def test_missing_concat_dim_lists_the_dims() -> None:
    f = file_schema("file:///d/a.nc", [0])
    with pytest.raises(SourceError) as info:
        plan_append([f], TargetSchema(), "valid_time")
    assert info.value.url == f.url
    assert "'valid_time'" in str(info.value)
    assert "set source.concat_dim to one of time, lat, lon" in str(info.value)


def test_empty_file_is_rejected_not_silently_reordered() -> None:
    """A file with no steps must not switch off the ordering and duplicate checks."""
    a = file_schema("file:///d/a.nc", [0, 1, 2, 3])
    b = file_schema("file:///d/b.nc", [2, 3, 4, 5])  # overlaps a
    empty = file_schema("file:///d/0-empty.nc", [])
    with pytest.raises(SourceError) as info:
        plan_append([a, b, empty], TargetSchema(), "time")
    assert empty.url in str(info.value)
    assert info.value.urls == (empty.url,)


# --- plan_append: schema checks ----------------------------------------------------------


BASE = file_schema("file:///d/a.nc", [0, 1])


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], variables=("tas", "pr")),
            ["variables differ", "has extra pr", "fix or remove the file"],
            id="extra-variable",
        ),
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], variables=()),
            ["variables differ", "lacks tas"],
            id="missing-variable",
        ),
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], dtype="float64"),
            ["'tas'", "dtype float64", "dtype float32", "fix or remove the file"],
            id="dtype",
        ),
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], ny=7),
            ["'lat'", "length 7", "only 'time' may differ"],
            id="other-dim-size",
        ),
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], units="months since 2000-01-01"),
            ["'months since 2000-01-01'", "'days since 2000-01-01'", "not a fixed multiple"],
            id="time-units",
        ),
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], calendar="noleap"),
            ["'noleap'", "different calendars"],
            id="calendar",
        ),
    ],
)
def test_schema_mismatch_between_files(other: FileSchema, expected: list[str]) -> None:
    for files in ([BASE, other], [other, BASE]):
        with pytest.raises(SchemaMismatchError) as info:
            plan_append(files, TargetSchema(), "time")
        msg = str(info.value)
        assert other.url in msg
        assert BASE.url in msg
        assert set(info.value.urls) == {other.url, BASE.url}
        for text in expected:
            assert text in msg


@pytest.mark.parametrize(
    "new",
    [
        pytest.param(file_schema("file:///d/b.nc", [2, 3], dtype="float64"), id="dtype"),
        pytest.param(file_schema("file:///d/b.nc", [2, 3], variables=("pr",)), id="variables"),
        pytest.param(
            file_schema("file:///d/b.nc", [2, 3], units="months since 2000-01-01"), id="units"
        ),
        pytest.param(file_schema("file:///d/b.nc", [2, 3], ny=4), id="lat"),
    ],
)
def test_schema_mismatch_with_the_repository(new: FileSchema) -> None:
    with pytest.raises(SchemaMismatchError) as info:
        plan_append([new], target_of(BASE), "time")
    assert info.value.urls == (new.url,)
    assert new.url in str(info.value)
    assert "the repository" in str(info.value)


# --- plan_append: coordinate checks -------------------------------------------------------


def test_overlap_names_both_files() -> None:
    a = file_schema("file:///d/a.nc", [0, 1, 2, 3])
    b = file_schema("file:///d/b.nc", [3, 4])
    with pytest.raises(SourceError) as info:
        plan_append([b, a], TargetSchema(), "time")
    assert type(info.value) is SourceError
    assert info.value.urls == (b.url, a.url)
    assert "duplicate timestamps" in str(info.value)
    assert "Remove one of the files" in str(info.value)


def test_not_increasing_inside_a_file() -> None:
    f = file_schema("file:///d/a.nc", [0, 2, 1])
    with pytest.raises(SourceError, match="not strictly increasing") as info:
        plan_append([f], TargetSchema(), "time")
    assert info.value.url == f.url


@pytest.mark.parametrize("start", [0, 1, 3])
def test_new_file_must_start_after_the_target(start: int) -> None:
    target = target_of(file_schema("file:///d/a.nc", [0, 1, 2, 3]))
    new = file_schema("file:///d/b.nc", [start, 10])
    with pytest.raises(SourceError) as info:
        plan_append([new], target, "time")
    assert info.value.url == new.url
    assert "straddles the end of the data already ingested" in str(info.value)
    assert "the stored ones end at 3" in str(info.value)
    assert "Remove or fix the file" in str(info.value)


def test_large_coordinate_values_are_printed_exactly() -> None:
    """Seconds since 1970 must not print as 1.57784e+09 in an error: the user has to compare."""
    t0 = 1_577_836_800
    target = target_of(file_schema("file:///d/a.nc", [t0, t0 + 1]))
    new = file_schema("file:///d/b.nc", [t0 + 1, t0 + 2])
    with pytest.raises(SourceError) as info:
        plan_append([new], target, "time")
    assert f"run from {t0 + 1} to {t0 + 2}" in str(info.value)
    assert f"end at {t0 + 1}" in str(info.value)


# --- plan_append: chunk grids -------------------------------------------------------------


def test_different_chunk_lengths_along_time_get_a_rectilinear_grid() -> None:
    a = file_schema("file:///d/a.nc", range(8), time_chunk=4)
    b = file_schema("file:///d/b.nc", range(8, 18), time_chunk=5)
    plan = plan_append([a, b], TargetSchema(), "time")
    assert plan.rectilinear == ("tas",)
    assert [(s.start, s.length) for s in plan.appends] == [(0, 8), (8, 10)]


def test_whole_file_chunks_of_different_years_get_a_rectilinear_grid() -> None:
    a = file_schema("file:///d/1999.nc", range(365), time_chunk=365)
    b = file_schema("file:///d/2000.nc", range(365, 731), time_chunk=366)
    assert plan_append([a, b], TargetSchema(), "time").rectilinear == ("tas",)
    # Equal chunks that tile every file but the last stay on one regular grid.
    c = file_schema("file:///d/c.nc", range(731, 741), time_chunk=5)
    d = file_schema("file:///d/d.nc", range(741, 748), time_chunk=5)
    assert plan_append([c, d], TargetSchema(), "time").rectilinear == ()


def test_chunks_along_other_dimensions_must_agree() -> None:
    a = file_schema("file:///d/a.nc", range(8), time_chunk=4)
    b = file_schema("file:///d/b.nc", range(8, 16), time_chunk=4)
    b.variables["tas"] = dataclasses.replace(b.variables["tas"], chunks=(4, 1, NX))
    with pytest.raises(SourceError, match="only along the concat") as info:
        plan_append([a, b], TargetSchema(), "time")
    assert info.value.urls == (b.url,)
    assert "mode: native" in str(info.value)


def test_partial_last_chunk_only_allowed_in_the_last_file() -> None:
    a = file_schema("file:///d/a.nc", range(10), time_chunk=4)
    b = file_schema("file:///d/b.nc", range(10, 20), time_chunk=4)
    assert plan_append(
        [b], target_of(file_schema("file:///d/x.nc", range(8), time_chunk=4)), "time"
    )
    with pytest.raises(SourceError, match="last chunk is partial") as info:
        plan_append([a, b], TargetSchema(), "time")
    assert info.value.urls == (a.url,)
    assert "mode: native" in str(info.value) and "'tas'" in str(info.value)
    assert "zarr-specs #394" in str(info.value)
    assert plan_append([a], TargetSchema(), "time").new_length == 10
    # With other chunk lengths too (rectilinear): a padded chunk cannot sit inside the array.
    c = file_schema("file:///d/c.nc", range(20, 30), time_chunk=10)
    with pytest.raises(SourceError, match="last chunk is partial"):
        plan_append([a, c], TargetSchema(), "time")
    # ... but it may end it.
    d = file_schema("file:///d/d.nc", range(30, 40), time_chunk=4)
    assert plan_append([c, d], TargetSchema(), "time").rectilinear == ("tas",)


def test_other_chunks_than_the_repository_extend_a_rectilinear_grid() -> None:
    target = target_of(file_schema("file:///d/a.nc", range(8), time_chunk=4))
    new = file_schema("file:///d/b.nc", range(8, 16), time_chunk=8)
    assert plan_append([new], target, "time").rectilinear == ("tas",)
    same = file_schema("file:///d/c.nc", range(8, 16), time_chunk=4)
    assert plan_append([same], target, "time").rectilinear == ()


def test_repository_ending_in_a_partial_chunk_cannot_grow() -> None:
    target = target_of(file_schema("file:///d/a.nc", range(6), time_chunk=4))
    new = file_schema("file:///d/b.nc", range(6, 10), time_chunk=4)
    with pytest.raises(SourceError, match="ends with a partial chunk") as info:
        plan_append([new], target, "time")
    assert "mode: native" in str(info.value)
    # A rectilinear array whose last chunk reaches past its end: the same.
    tas = dataclasses.replace(target.variables["tas"], edges=((4, 4), (5,), (NX,)))
    padded = dataclasses.replace(target, variables={**target.variables, "tas": tas})
    with pytest.raises(SourceError, match="ends with a partial chunk"):
        plan_append([new], padded, "time")


def _rectilinear_target(lengths: Sequence[int]) -> TargetSchema:
    files, t = [], 0
    for i, n in enumerate(lengths):
        files.append(file_schema(f"file:///d/{i}.nc", range(t, t + n), time_chunk=n))
        t += n
    target = target_of(*files)
    tas = dataclasses.replace(
        target.variables["tas"], chunks=(max(lengths), 5, NX), edges=(tuple(lengths), (5,), (NX,))
    )
    return dataclasses.replace(
        target,
        variables={**target.variables, "tas": tas},
        order_values=tuple(float(v) for v in range(t)),
    )


def test_rectilinear_repository_takes_any_whole_chunks() -> None:
    target = _rectilinear_target([5, 6])
    assert target.variables["tas"].chunk_lengths(0) == (5, 6)
    assert pickle.loads(pickle.dumps(target)) == target  # sent to workers with the plan
    new = file_schema("file:///d/n.nc", range(11, 15), time_chunk=4)
    plan = plan_append([new], target, "time")
    assert plan.rectilinear == ("tas",) and plan.appends[0].start == 11


def test_region_into_a_rectilinear_grid_must_be_its_chunks() -> None:
    from icepipe.plan import plan_reingest

    target = _rectilinear_target([5, 6, 5])
    again = file_schema("file:///d/1.nc", range(5, 11), time_chunk=6)
    record = {"start": 5, "length": 6}
    assert plan_reingest(again, record, target, "time", virtual=True).start == 5
    split = file_schema("file:///d/1.nc", range(5, 11), time_chunk=3)
    with pytest.raises(SourceError, match="only replace whole chunks") as info:
        plan_reingest(split, record, target, "time", virtual=True)
    assert "(3, 3) are not the stored chunks there (6)" in str(info.value)
    assert plan_reingest(split, record, target, "time", virtual=False).start == 5


# --- properties -----------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)

# Names with spaces and dots: real archives have them, and URLs are compared as strings.
names = st.text(alphabet="ab xyz_-.0", min_size=1, max_size=6)
urls = st.lists(names, min_size=1, max_size=8, unique=True).map(
    lambda ns: [f"file:///data/{n}.nc" for n in ns]
)


@st.composite
def listings(draw: st.DrawFn) -> tuple[list[SourceFile], dict[str, dict[str, Any]], set[str]]:
    """A listing, a ledger, and the URLs whose listed version differs from the ledger's."""
    listed = [
        src(u, size=draw(st.integers(0, 3)), mtime=f"2024-01-0{draw(st.integers(1, 3))}")
        for u in draw(urls)
    ]
    ledger: dict[str, dict[str, Any]] = {}
    changed: set[str] = set()
    for f in listed:
        status = draw(st.sampled_from(["new", "already", "changed"]))
        if status == "already":
            ledger[f.url] = f.identity()
        elif status == "changed":
            bump_size = draw(st.booleans())
            old = dataclasses.replace(
                f,
                size=f.size + 1 if bump_size else f.size,
                mtime=f.mtime if bump_size else f.mtime + "x",
            )
            ledger[old.url] = old.identity()
            changed.add(f.url)
    for n in draw(st.lists(names, max_size=3)):  # ingested once, gone from the listing now
        ledger.setdefault(f"file:///gone/{n}.nc", {"url": n, "size": 0, "mtime": "x"})
    return listed, ledger, changed


@PROPERTY_SETTINGS
@given(listings())
def test_select_new_partitions_the_listing(
    case: tuple[list[SourceFile], dict[str, dict[str, Any]], set[str]],
) -> None:
    listed, ledger, changed = case
    if changed:
        with pytest.raises(SourceError) as info:
            select_new(listed, ledger)
        assert set(info.value.urls) == changed
        return
    sel = select_new(listed, ledger)
    assert set(sel.new) | set(sel.already) == set(listed)
    assert not set(sel.new) & set(sel.already)
    assert len(sel.new) + len(sel.already) == len(listed)
    assert all(f.url in ledger for f in sel.already)
    assert not any(f.url in ledger for f in sel.new)
    # Each part keeps the listing's order.
    assert list(sel.new) == [f for f in listed if f in sel.new]
    assert list(sel.already) == [f for f in listed if f in sel.already]


@st.composite
def consecutive_files(draw: st.DrawFn) -> list[FileSchema]:
    """Files holding consecutive, non-overlapping runs of strictly increasing values."""
    lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=6))
    values = sorted(
        draw(
            st.lists(
                st.integers(-(10**6), 10**6),
                min_size=sum(lengths),
                max_size=sum(lengths),
                unique=True,
            )
        )
    )
    file_names = draw(st.lists(names, min_size=len(lengths), max_size=len(lengths), unique=True))
    bounds = list(itertools.accumulate(lengths, initial=0))
    return [
        file_schema(f"file:///data/{n}.nc", values[lo:hi])
        for n, lo, hi in zip(file_names, bounds[:-1], bounds[1:], strict=True)
    ]


@PROPERTY_SETTINGS
@given(files=consecutive_files(), data=st.data())
def test_plan_order_is_independent_of_input_order(
    files: list[FileSchema], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(files))
    plan = plan_append(shuffled, TargetSchema(), "time")
    assert plan == plan_append(files, TargetSchema(), "time")
    by_first = sorted(files, key=lambda f: (f.concat_values or ())[0])
    assert plan.order == tuple(f.url for f in by_first)
    assert plan.new_length == sum(f.dims["time"] for f in files)


@st.composite
def increasing(draw: st.DrawFn) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True)))


def _intersect(a: Sequence[float], b: Sequence[float]) -> bool:
    return max(a[0], b[0]) <= min(a[-1], b[-1])


@PROPERTY_SETTINGS
@given(
    ranges=st.lists(increasing(), min_size=1, max_size=5),
    ingested=st.none() | increasing(),
)
def test_overlapping_ranges_always_raise(
    ranges: list[list[int]], ingested: list[int] | None
) -> None:
    files = [file_schema(f"file:///data/f{i}.nc", r) for i, r in enumerate(ranges)]
    target = target_of(file_schema("file:///data/old.nc", ingested)) if ingested else TargetSchema()
    overlap = any(_intersect(a, b) for a, b in itertools.combinations(ranges, 2))
    before_target = ingested is not None and min(r[0] for r in ranges) <= ingested[-1]
    if not (overlap or before_target):
        plan_append(files, target, "time")
        return
    with pytest.raises(SourceError) as info:
        plan_append(files, target, "time")
    assert type(info.value) is SourceError
    named = [f for f in files if f.url in info.value.urls]
    assert named, info.value
    for f in named:
        assert f.url in str(info.value)
    if len(named) == 2:  # two new files collide: their ranges really do intersect
        a, b = (f.concat_values or () for f in named)
        assert _intersect(a, b)


# --- late arrivals and re-ingests ---------------------------------------------------------


def test_late_file_goes_into_room_left_on_the_axis() -> None:
    from icepipe.plan import Slot

    # The stored axis has 8 values; a file covering values 4..7 was never ingested.
    target = target_of(file_schema("file:///d/a.nc", range(8), time_chunk=4))
    target = dataclasses.replace(target, order_values=tuple(float(v) for v in range(8)))
    ledger = [Slot("file:///d/a.nc", 0, 4)]
    late = file_schema("file:///d/late.nc", [4, 5, 6, 7], time_chunk=4)
    p = plan_append([late], target, "time", ledger_slots=ledger)
    assert p.regions == (Slot("file:///d/late.nc", 4, 4),)
    assert p.order == ()


def test_late_file_covered_by_the_ledger_is_a_duplicate() -> None:
    from icepipe.plan import Slot

    target = target_of(file_schema("file:///d/a.nc", range(8), time_chunk=4))
    target = dataclasses.replace(target, order_values=tuple(float(v) for v in range(8)))
    ledger = [Slot("file:///d/a.nc", 0, 8)]
    dup = file_schema("file:///d/dup.nc", [4, 5, 6, 7], time_chunk=4)
    with pytest.raises(SourceError, match=r"duplicates data already ingested from file:///d/a\.nc"):
        plan_append([dup], target, "time", ledger_slots=ledger)


def test_late_file_without_room_fails() -> None:
    target = target_of(file_schema("file:///d/a.nc", range(8), time_chunk=4))
    target = dataclasses.replace(target, order_values=tuple(float(v) for v in range(8)))
    odd = file_schema("file:///d/odd.nc", [2.5, 3.5])
    with pytest.raises(SourceError, match="has no room"):
        plan_append([odd], target, "time")


def test_virtual_late_file_must_sit_on_chunk_boundaries() -> None:
    target = target_of(file_schema("file:///d/a.nc", range(8), time_chunk=4))
    target = dataclasses.replace(target, order_values=tuple(float(v) for v in range(8)))
    late = file_schema("file:///d/late.nc", [2, 3], time_chunk=4)
    with pytest.raises(SourceError, match="only replace whole chunks"):
        plan_append([late], target, "time", virtual=True)
    assert plan_append([late], target, "time", virtual=False).regions[0].start == 2


def test_time_units_drift_is_converted_for_ordering_and_recorded() -> None:
    a = file_schema("file:///d/a.nc", [0, 1])
    # The same kind of axis in hours since another epoch: 2 and 3 days after a's epoch.
    b = file_schema(
        "file:///d/b.nc", [24 * 367 + 48, 24 * 367 + 72], units="hours since 1998-12-30"
    )
    p = plan_append([b, a], TargetSchema(), "time")
    assert p.order == (a.url, b.url)
    conv = p.conversions[b.url]["time"]
    assert conv.units == "days since 2000-01-01"
    assert [v * conv.scale + conv.offset for v in b.concat_values or ()] == [2.0, 3.0]


# --- ledger slots and GRIB hypercube partitioning (plain values: any objects stand for cubes) ---


def test_ledger_slots_read_places_and_skip_records_without_one() -> None:
    ledger: dict[str, dict[str, Any]] = {
        "a.nc": {"start": 0, "length": 24},
        "b.nc": {"start": 24, "length": 24},
        "old.nc": {},  # ingested by an older icepipe: no place recorded
        "bad.nc": {"start": "0", "length": 24},
    }
    assert ledger_slots(ledger) == [Slot("a.nc", 0, 24), Slot("b.nc", 24, 24)]


def test_ledger_slots_of_one_hypercube() -> None:
    ledger: dict[str, dict[str, Any]] = {
        "a.grib": {"cubes": {"isobaricInhPa": [0, 2], "surface": [0, 2]}},
        "b.grib": {"cubes": {"surface": [2, 2]}},
        "c.grib": {"start": 0, "length": 2},
    }
    assert ledger_slots(ledger, cube="surface") == [Slot("a.grib", 0, 2), Slot("b.grib", 2, 2)]
    assert ledger_slots(ledger, cube="isobaricInhPa") == [Slot("a.grib", 0, 2)]
    assert ledger_slots(ledger, cube="heightAboveGround") == []


def test_plan_cubes_groups_new_files_by_hypercube_and_keeps_recorded_ones() -> None:
    cubes = plan_cubes(
        [{"surface": "a/sfc", "isobaricInhPa": "a/pl"}, {"surface": "b/sfc"}],
        [],
        recorded=["heightAboveGround", "surface"],
    )
    assert list(cubes) == ["heightAboveGround", "isobaricInhPa", "surface"]
    assert cubes["surface"] == CubeFiles(new=("a/sfc", "b/sfc"))
    assert cubes["isobaricInhPa"] == CubeFiles(new=("a/pl",))
    assert cubes["heightAboveGround"] == CubeFiles()


def test_plan_cubes_puts_a_changed_file_back_into_each_region_it_filled() -> None:
    record = {"url": "a.grib", "size": 10, "cubes": {"surface": [4, 2], "isobaricInhPa": [6, 2]}}
    cubes = plan_cubes([], [("a.grib", {"surface": "sfc", "isobaricInhPa": "pl"}, record)])
    surface, pl = cubes["surface"].changed, cubes["isobaricInhPa"].changed
    assert surface == (("sfc", {**record, "start": 4, "length": 2}),)
    assert pl == (("pl", {**record, "start": 6, "length": 2}),)
    assert cubes["surface"].new == ()


@pytest.mark.parametrize(
    ("now", "before"),
    [({"surface": 1, "isobaricInhPa": 2}, {"surface": [0, 2]}), ({}, {"surface": [0, 2]})],
)
def test_plan_cubes_refuses_a_changed_file_holding_other_hypercubes(
    now: dict[str, int], before: dict[str, list[int]]
) -> None:
    with pytest.raises(SourceError, match=r"a\.grib: changed after it was ingested.*surface"):
        plan_cubes([], [("a.grib", now, {"cubes": before})])


@PROPERTY_SETTINGS
@given(files=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=5))
def test_virtual_grid_decision(files: list[tuple[int, int]]) -> None:
    """Files of any lengths and chunk lengths along time: refused exactly when a file other
    than the last ends in a partial (padded) chunk; otherwise a rectilinear grid exactly when
    the chunk lengths differ, and each file starts on a chunk boundary of the grid."""
    schemas, t = [], 0
    for i, (n, c) in enumerate(files):
        schemas.append(file_schema(f"file:///d/{i}.nc", range(t, t + n), time_chunk=c))
        t += n
    padded_inside = any(n % c for n, c in files[:-1])
    if padded_inside:
        with pytest.raises(SourceError, match="zarr-specs #394"):
            plan_append(schemas, TargetSchema(), "time")
        return
    plan = plan_append(schemas, TargetSchema(), "time")
    assert plan.rectilinear == (() if len({c for _, c in files}) == 1 else ("tas",))
    edges = [e for s in schemas for e in s.variables["tas"].chunk_lengths(0)]
    bounds = set(itertools.accumulate(edges, initial=0))
    assert all(slot.start in bounds for slot in plan.appends)
    assert sum(edges) >= t and sum(edges[:-1]) < t


# ----------------------------------------------------------------------------------------------
# Chunk edges along the concat dimension (chunks: {time: file | day | month | year})
# ----------------------------------------------------------------------------------------------

EDGE_UNITS = "days since 1999-12-01"
CALENDARS = ("standard", "proleptic_gregorian", "noleap", "all_leap", "360_day", "julian")


def _edge_schema(
    url: str, values: list[float], calendar: str, units: str = EDGE_UNITS
) -> FileSchema:
    n = len(values)
    var = VariableSchema(("time",), (n,), "int64", None, units, calendar)
    return FileSchema(
        url=url,
        format="netcdf4",
        dims={"time": n},
        variables={"time": var},
        concat_values=tuple(values),
        concat_units=units,
        concat_calendar=calendar,
    )


def _edge_target(values: list[float], calendar: str) -> TargetSchema:
    var = VariableSchema(("time",), (len(values),), "int64", (1,), EDGE_UNITS, calendar)
    return TargetSchema(
        variables={"time": var},
        dims={"time": len(values)},
        concat_first=values[0],
        concat_last=values[-1],
        order_values=tuple(values),
    )


def _edge_runs(values: list[float], cuts: list[int], calendar: str, rule: str) -> tuple[int, ...]:
    """Edges after ingesting ``values`` as one file per piece between ``cuts``, one file per
    run, each run planned against what the previous ones stored."""
    bounds = [0, *sorted(set(cuts)), len(values)]
    edges: tuple[int, ...] = ()
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        target = _edge_target(values[:a], calendar) if a else TargetSchema()
        p = plan_edges(
            rule, [_edge_schema(f"f{a}", values[a:b], calendar)], target, "time", stored_edges=edges
        )
        assert p.rewrite_from <= a and sum(p.edges) == b
        edges = p.edges
    return edges


def test_month_edges_of_a_leap_year_and_noleap() -> None:
    days = [float(d) for d in range(31, 31 + 366)]  # 2000-01-01 .. 2000-12-31
    one = plan_edges("month", [_edge_schema("a", days, "standard")], TargetSchema(), "time")
    assert one.edges == (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    assert one.rewrite_from == 0
    noleap = plan_edges("month", [_edge_schema("a", days[:365], "noleap")], TargetSchema(), "time")
    assert noleap.edges == (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    d360 = plan_edges(
        "month", [_edge_schema("a", [d - 1 for d in days[:360]], "360_day")], TargetSchema(), "time"
    )
    assert d360.edges == (30,) * 12
    year = plan_edges(
        "year",
        [_edge_schema("a", [*days, *(d + 366 for d in days[:34])], "standard")],
        TargetSchema(),
        "time",
    )
    assert year.edges == (366, 34)


def test_append_completing_a_month_rewrites_the_stored_last_chunk() -> None:
    days = [float(d) for d in range(31, 31 + 60)]  # 2000-01-01 .. 2000-02-29
    first = plan_edges("month", [_edge_schema("a", days[:40], "standard")], TargetSchema(), "time")
    assert first.edges == (31, 9)
    then = plan_edges(
        "month",
        [_edge_schema("b", days[40:], "standard")],
        _edge_target(days[:40], "standard"),
        "time",
        stored_edges=first.edges,
    )
    assert then == EdgePlan(edges=(31, 29), rewrite_from=31)
    # An append that starts a new month leaves the stored chunks alone.
    after = plan_edges(
        "month",
        [_edge_schema("c", [91.0, 92.0], "standard")],
        _edge_target(days, "standard"),
        "time",
        stored_edges=then.edges,
    )
    assert after == EdgePlan(edges=(31, 29, 2), rewrite_from=60)


def test_file_edges_follow_the_files() -> None:
    files = [_edge_schema("a", [0.0, 1.0, 2.0], "standard"), _edge_schema("b", [3.0], "standard")]
    assert plan_edges("file", files, TargetSchema(), "time").edges == (3, 1)
    again = plan_edges("file", files[1:], TargetSchema(), "time", stored_edges=(3,))
    assert again == EdgePlan(edges=(3, 1), rewrite_from=3)


def test_calendar_rules_need_time_values() -> None:
    with pytest.raises(ConfigError, match="'month' chunks need a time coordinate") as e:
        plan_edges("month", [_edge_schema("a", [1.0], "standard", "m")], TargetSchema(), "time")
    assert e.value.field == "chunks.time"
    bare = FileSchema(url="x", format="netcdf4", dims={"time": 2}, variables={})
    with pytest.raises(ConfigError, match="x: 'year' chunks need the time values"):
        plan_edges("year", [bare], TargetSchema(), "time")
    with pytest.raises(ConfigError, match="do not decode"):
        plan_edges(
            "month",
            [_edge_schema("a", [1.0], "standard", "months since 2000-01-01")],
            TargetSchema(),
            "time",
        )


@st.composite
def _daily_series(draw: st.DrawFn) -> tuple[list[float], str, float]:
    calendar = draw(st.sampled_from(CALENDARS))
    start = draw(st.integers(0, 800))
    n = draw(st.integers(1, 500))
    step = draw(st.sampled_from([1.0, 0.25, 0.5, 3.0]))  # daily, 6-hourly, 12-hourly, 3-daily
    return [start + i * step for i in range(n)], calendar, step


@settings(max_examples=60, deadline=None)
@given(_daily_series(), st.sampled_from(["day", "month", "year"]), st.data())
def test_calendar_edges_properties(
    series: tuple[list[float], str, float], rule: str, data: st.DataObject
) -> None:
    values, calendar, _ = series
    one = plan_edges(rule, [_edge_schema("a", values, calendar)], TargetSchema(), "time")
    # The edges tile the series.
    assert sum(one.edges) == len(values) and all(e > 0 for e in one.edges)
    # Every boundary falls at the start of a period, and every chunk holds one period.
    dates = cftime.num2date(values, EDGE_UNITS, calendar)
    key_len = {"year": 1, "month": 2, "day": 3}[rule]

    def key(d: object) -> tuple[int, ...]:
        return (d.year, d.month, d.day)[:key_len]  # type: ignore[attr-defined]

    bounds = [0, *itertools.accumulate(one.edges)]
    for a, b in itertools.pairwise(bounds):
        assert len({key(d) for d in dates[a:b]}) == 1
        if a:
            assert key(dates[a]) != key(dates[a - 1])
    # Any split into runs gives the same edges as one run.
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=6))
    assert _edge_runs(values, cuts, calendar, rule) == one.edges


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=12), st.data())
def test_file_edges_any_split(lengths: list[int], data: st.DataObject) -> None:
    values = [float(i) for i in range(sum(lengths))]
    starts = list(itertools.accumulate(lengths, initial=0))
    files = [
        _edge_schema(f"f{i}", values[a:b], "standard")
        for i, (a, b) in enumerate(itertools.pairwise(starts))
    ]
    one = plan_edges("file", files, TargetSchema(), "time")
    assert one.edges == tuple(lengths)
    k = data.draw(st.integers(0, len(files)))
    first = plan_edges("file", files[:k], TargetSchema(), "time") if k else None
    stored = first.edges if first else ()
    rest = plan_edges(
        "file", files[k:], _edge_target(values, "standard"), "time", stored_edges=stored
    )
    assert rest.edges == one.edges and rest.rewrite_from == sum(stored)


def test_month_boundaries_of_daily_data_fall_on_the_first() -> None:
    values = [float(v) for v in range(0, 1200)]
    for calendar in CALENDARS:
        p = plan_edges("month", [_edge_schema("a", values, calendar)], TargetSchema(), "time")
        dates = cftime.num2date(values, EDGE_UNITS, calendar)
        for b in itertools.accumulate(p.edges[:-1]):
            assert dates[b].day == 1
