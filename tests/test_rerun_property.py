"""Property: an ingest split over several runs equals one run, and re-running changes nothing.

Hypothesis draws a series (file lengths, a storage mode), file names unrelated to time order, a
split of the series into consecutive batches and an order of arrival inside each batch; every
batch is ingested by its own run, some runs are repeated. Runs are in-process on the session's
``LocalCluster``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import icepipe
from tests.conftest import branch_tip, write_pipeline, write_series
from tests.ingest_checks import check_tip, sources, url

MODES = {"virtual": "", "native": "mode: native\nchunks: {time: 3}\n"}


@dataclass(frozen=True)
class Scenario:
    mode: str
    steps: list[int]  # time steps of each file, in time order
    names: list[int]  # file i is called f"x{names[i]:02d}.nc"
    batches: list[list[int]]  # consecutive files, each list in order of arrival
    rerun: list[bool]  # re-run right after the batch's run


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 5))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1)))
    bounds = list(zip([0, *cuts], [*cuts, n], strict=True))
    return Scenario(
        mode=draw(st.sampled_from(sorted(MODES))),
        steps=draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)),
        names=draw(st.permutations(range(n))),
        batches=[draw(st.permutations(range(a, b))) for a, b in bounds],
        rerun=draw(st.lists(st.booleans(), min_size=len(bounds), max_size=len(bounds))),
    )


def _nothing_new(pipeline: icepipe.Pipeline, repo: Path, client: Any) -> None:
    tip = branch_tip(repo)
    again = icepipe.run(pipeline, client=client)
    assert again.status == "nothing-new" and again.files_new == ()
    assert branch_tip(repo) == tip


@settings(max_examples=10, deadline=None)
@given(scenario=scenarios())
def test_ingest_in_batches_equals_one_run_and_reruns_change_nothing(
    tmp_path_factory: pytest.TempPathFactory, client: Any, scenario: Scenario
) -> None:
    base = tmp_path_factory.mktemp("rerun")
    extra = MODES[scenario.mode]
    written = write_series(base / "pool", len(scenario.steps), steps=scenario.steps)
    pool = [
        f.rename(f.with_name(f"x{n:02d}.nc")) for f, n in zip(written, scenario.names, strict=True)
    ]
    src = base / "src"
    src.mkdir()
    pipeline = icepipe.load_pipeline(write_pipeline(base, urls="src/*.nc", extra=extra))
    repo = base / "repo"
    for batch, rerun in zip(scenario.batches, scenario.rerun, strict=True):
        for i in batch:  # arrival order
            pool[i] = pool[i].rename(src / pool[i].name)
        result = icepipe.run(pipeline, client=client)
        assert result.status == "committed"
        assert sorted(result.files_new) == sorted(url(pool[i]) for i in batch)
        if rerun:
            _nothing_new(pipeline, repo, client)
    _nothing_new(pipeline, repo, client)

    tip = branch_tip(repo)
    assert tip is not None
    records = check_tip(repo, "g", tip)
    assert sorted(r["url"] for r in records) == sorted(url(f) for f in pool)
    stored = icepipe.open_dataset(str(repo), group="g").load()
    xr.testing.assert_identical(stored, sources(pool))
    one = write_pipeline(base, name="one", urls="src/*.nc", repo="one", extra=extra)
    icepipe.run(icepipe.load_pipeline(one), client=client)
    xr.testing.assert_identical(stored, icepipe.open_dataset(str(base / "one"), group="g").load())
