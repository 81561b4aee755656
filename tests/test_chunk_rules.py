"""``chunks: {time: file | day | month | year}``: the spec, and the pure planning of the edges
(first runs, appends that continue a period the stored data end in, any split into runs)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cftime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icepipe import plan
from icepipe.errors import ConfigError
from icepipe.model import FileSchema, TargetSchema, VariableSchema
from icepipe.spec import CHUNK_RULES, pipeline_from_dict

UNITS = "days since 1999-12-01"
CALENDARS = ("standard", "proleptic_gregorian", "noleap", "all_leap", "360_day", "julian")


def _pipeline(chunks: object, **top: object) -> object:
    raw = {
        "name": "p",
        "mode": "native",
        "source": {"urls": ["a.nc"], "concat_dim": "time"},
        "target": {"repo": "r"},
        "chunks": chunks,
        **top,
    }
    return pipeline_from_dict(raw, Path("/tmp"))


# ----------------------------------------------------------------------------------------------
# spec
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", CHUNK_RULES)
def test_spec_accepts_rules_on_the_concat_dim(rule: str) -> None:
    p = _pipeline({"time": rule, "lat": 10})
    assert p.native.chunks == {"time": rule, "lat": 10}  # type: ignore[attr-defined]


def test_spec_refuses_rules_elsewhere_and_unknown_rules() -> None:
    with pytest.raises(ConfigError, match="concat dimension") as e:
        _pipeline({"lat": "month"})
    assert e.value.field == "chunks.lat"
    with pytest.raises(ConfigError, match="file, day, month, year") as e:
        _pipeline({"time": "monthly"})
    assert e.value.field == "chunks.time"
    with pytest.raises(ConfigError, match="positive integer; got") as e:
        _pipeline({"lat": "big"})
    assert e.value.field == "chunks.lat"
    with pytest.raises(ConfigError, match="mode: native only"):
        _pipeline({"time": "month"}, mode="virtual")


def test_spec_refuses_shards_with_rules() -> None:
    with pytest.raises(ConfigError, match="rectilinear grid, which Zarr cannot shard") as e:
        _pipeline({"time": "month", "lat": 2}, shards={"lat": 4})
    assert e.value.field == "shards"


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------


def _schema(url: str, values: list[float], calendar: str, units: str = UNITS) -> FileSchema:
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


def _target(values: list[float], calendar: str) -> TargetSchema:
    var = VariableSchema(("time",), (len(values),), "int64", (1,), UNITS, calendar)
    return TargetSchema(
        variables={"time": var},
        dims={"time": len(values)},
        concat_first=values[0],
        concat_last=values[-1],
        order_values=tuple(values),
    )


def _runs(values: list[float], cuts: list[int], calendar: str, rule: str) -> tuple[int, ...]:
    """Edges after ingesting ``values`` as one file per piece between ``cuts``, one file per
    run, each run planned against what the previous ones stored."""
    bounds = [0, *sorted(set(cuts)), len(values)]
    edges: tuple[int, ...] = ()
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        target = _target(values[:a], calendar) if a else TargetSchema()
        p = plan.plan_edges(
            rule, [_schema(f"f{a}", values[a:b], calendar)], target, "time", stored_edges=edges
        )
        assert p.rewrite_from <= a and sum(p.edges) == b
        edges = p.edges
    return edges


def test_month_edges_of_a_leap_year_and_noleap() -> None:
    days = [float(d) for d in range(31, 31 + 366)]  # 2000-01-01 .. 2000-12-31
    one = plan.plan_edges("month", [_schema("a", days, "standard")], TargetSchema(), "time")
    assert one.edges == (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    assert one.rewrite_from == 0
    noleap = plan.plan_edges("month", [_schema("a", days[:365], "noleap")], TargetSchema(), "time")
    assert noleap.edges == (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    d360 = plan.plan_edges(
        "month", [_schema("a", [d - 1 for d in days[:360]], "360_day")], TargetSchema(), "time"
    )
    assert d360.edges == (30,) * 12
    year = plan.plan_edges(
        "year",
        [_schema("a", [*days, *(d + 366 for d in days[:34])], "standard")],
        TargetSchema(),
        "time",
    )
    assert year.edges == (366, 34)


def test_append_completing_a_month_rewrites_the_stored_last_chunk() -> None:
    days = [float(d) for d in range(31, 31 + 60)]  # 2000-01-01 .. 2000-02-29
    first = plan.plan_edges("month", [_schema("a", days[:40], "standard")], TargetSchema(), "time")
    assert first.edges == (31, 9)
    then = plan.plan_edges(
        "month",
        [_schema("b", days[40:], "standard")],
        _target(days[:40], "standard"),
        "time",
        stored_edges=first.edges,
    )
    assert then == plan.EdgePlan(edges=(31, 29), rewrite_from=31)
    # An append that starts a new month leaves the stored chunks alone.
    after = plan.plan_edges(
        "month",
        [_schema("c", [91.0, 92.0], "standard")],
        _target(days, "standard"),
        "time",
        stored_edges=then.edges,
    )
    assert after == plan.EdgePlan(edges=(31, 29, 2), rewrite_from=60)


def test_file_edges_follow_the_files() -> None:
    files = [_schema("a", [0.0, 1.0, 2.0], "standard"), _schema("b", [3.0], "standard")]
    assert plan.plan_edges("file", files, TargetSchema(), "time").edges == (3, 1)
    again = plan.plan_edges("file", files[1:], TargetSchema(), "time", stored_edges=(3,))
    assert again == plan.EdgePlan(edges=(3, 1), rewrite_from=3)


def test_calendar_rules_need_time_values() -> None:
    with pytest.raises(ConfigError, match="'month' chunks need a time coordinate") as e:
        plan.plan_edges("month", [_schema("a", [1.0], "standard", "m")], TargetSchema(), "time")
    assert e.value.field == "chunks.time"
    bare = FileSchema(url="x", format="netcdf4", dims={"time": 2}, variables={})
    with pytest.raises(ConfigError, match="x: 'year' chunks need the time values"):
        plan.plan_edges("year", [bare], TargetSchema(), "time")
    with pytest.raises(ConfigError, match="do not decode"):
        plan.plan_edges(
            "month",
            [_schema("a", [1.0], "standard", "months since 2000-01-01")],
            TargetSchema(),
            "time",
        )


@st.composite
def _series(draw: st.DrawFn) -> tuple[list[float], str, float]:
    calendar = draw(st.sampled_from(CALENDARS))
    start = draw(st.integers(0, 800))
    n = draw(st.integers(1, 500))
    step = draw(st.sampled_from([1.0, 0.25, 0.5, 3.0]))  # daily, 6-hourly, 12-hourly, 3-daily
    return [start + i * step for i in range(n)], calendar, step


@settings(max_examples=60, deadline=None)
@given(_series(), st.sampled_from(["day", "month", "year"]), st.data())
def test_calendar_edges_properties(
    series: tuple[list[float], str, float], rule: str, data: st.DataObject
) -> None:
    values, calendar, _ = series
    one = plan.plan_edges(rule, [_schema("a", values, calendar)], TargetSchema(), "time")
    # The edges tile the series.
    assert sum(one.edges) == len(values) and all(e > 0 for e in one.edges)
    # Every boundary falls at the start of a period, and every chunk holds one period.
    dates = cftime.num2date(values, UNITS, calendar)
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
    assert _runs(values, cuts, calendar, rule) == one.edges


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=12), st.data())
def test_file_edges_any_split(lengths: list[int], data: st.DataObject) -> None:
    values = [float(i) for i in range(sum(lengths))]
    starts = list(itertools.accumulate(lengths, initial=0))
    files = [
        _schema(f"f{i}", values[a:b], "standard")
        for i, (a, b) in enumerate(itertools.pairwise(starts))
    ]
    one = plan.plan_edges("file", files, TargetSchema(), "time")
    assert one.edges == tuple(lengths)
    k = data.draw(st.integers(0, len(files)))
    first = plan.plan_edges("file", files[:k], TargetSchema(), "time") if k else None
    stored = first.edges if first else ()
    rest = plan.plan_edges(
        "file", files[k:], _target(values, "standard"), "time", stored_edges=stored
    )
    assert rest.edges == one.edges and rest.rewrite_from == sum(stored)


def test_month_boundaries_of_daily_data_fall_on_the_first() -> None:
    values = [float(v) for v in range(0, 1200)]
    for calendar in CALENDARS:
        p = plan.plan_edges("month", [_schema("a", values, calendar)], TargetSchema(), "time")
        dates = cftime.num2date(values, UNITS, calendar)
        for b in itertools.accumulate(p.edges[:-1]):
            assert dates[b].day == 1
