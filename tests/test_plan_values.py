"""Planning reads every stored value of the ordering variable only when it needs them
(issue 14: nightly runs at O(new files)): ``plan.needs_order_values`` decides, and a plan made
without them is the plan made with them whenever it says they are not needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st

import icepipe
from icepipe import repository
from icepipe.errors import IcepipeError
from icepipe.model import TargetSchema
from icepipe.plan import AppendPlan, needs_order_values, plan_append
from tests.conftest import write_series
from tests.test_plan import PROPERTY_SETTINGS, file_schema, increasing, target_of


def _with_values(target: TargetSchema, values: list[int]) -> TargetSchema:
    return dataclasses.replace(target, order_values=tuple(float(v) for v in values))


def test_appends_after_the_stored_end_need_only_the_end() -> None:
    target = target_of(file_schema("file:///old.nc", [0, 1, 2]))
    assert not needs_order_values([file_schema("file:///new.nc", [3, 4])], 0, target, "time")
    assert not needs_order_values([file_schema("file:///a.nc", [5])], 0, TargetSchema(), "time")


def test_late_changed_or_differently_encoded_files_need_every_value() -> None:
    target = target_of(file_schema("file:///old.nc", [0, 1, 2]))
    late = file_schema("file:///late.nc", [2, 3])
    assert needs_order_values([late], 0, target, "time")
    assert needs_order_values([], 1, target, "time")  # a changed file goes back in place
    hours = file_schema("file:///h.nc", [100], units="hours since 2000-01-01")
    assert needs_order_values([hours], 0, target, "time")  # compared once converted


@PROPERTY_SETTINGS
@given(
    ranges=st.lists(increasing(), min_size=1, max_size=4),
    ingested=increasing(),
)
def test_a_plan_without_the_values_is_the_plan_with_them(
    ranges: list[list[int]], ingested: list[int]
) -> None:
    files = [file_schema(f"file:///data/f{i}.nc", r) for i, r in enumerate(ranges)]
    ends = target_of(file_schema("file:///data/old.nc", ingested))
    full = _with_values(ends, ingested)

    def outcome(target: TargetSchema) -> AppendPlan | str:
        try:
            return plan_append(files, target, "time")
        except IcepipeError as exc:
            return f"{type(exc).__name__}: {exc}"

    if not needs_order_values(files, 0, ends, "time"):
        assert outcome(ends) == outcome(full)


def test_read_target_schema_reads_only_what_is_asked(tmp_path: Path, client: Any) -> None:
    write_series(tmp_path / "src", 3, steps=2)
    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"name: p\nsource:\n  urls: {tmp_path}/src/*.nc\n  concat_dim: time\n"
        f"target:\n  repo: {tmp_path}/repo\n"
    )
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    session = repository.open_repo(str(tmp_path / "repo")).readonly_session(branch="main")
    stored = np.asarray(zarr.open_array(session.store, path="time", mode="r")[:])
    full = repository.read_target_schema(session, None, "time", values="all")
    assert full.order_values == tuple(float(v) for v in stored)
    ends = repository.read_target_schema(session, None, "time")
    assert (ends.concat_first, ends.concat_last) == (float(stored[0]), float(stored[-1]))
    assert ends.order_values is None
    assert dataclasses.replace(ends, order_values=full.order_values) == full
    none = repository.read_target_schema(session, None, "time", values="none")
    assert none.concat_last is None and none.order_values is None
    assert (none.variables, none.dims) == (full.variables, full.dims)
    assert np.all(np.diff(stored) > 0)


@pytest.mark.parametrize("n_changed", [0, 1])
def test_needs_nothing_without_stored_values(n_changed: int) -> None:
    # A target whose ordering variable is not numeric (or absent) has no ends either.
    target = dataclasses.replace(
        target_of(file_schema("file:///old.nc", [0, 1])), concat_first=None, concat_last=None
    )
    assert not needs_order_values([file_schema("file:///n.nc", [0])], n_changed, target, "time")
