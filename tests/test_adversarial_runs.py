"""Small runs scan in process, files after the first of a layout through the template route
(``sources/quick.py``): split over runs, in any order of arrival, with odd names and per-file
time epochs, they store what one run stores and what ``xarray.open_mfdataset`` reads; re-runs
change nothing (``tests/test_rerun_property.py`` checks the same on a cluster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import icepipe
from icepipe.sources import quick
from tests.conftest import branch_tip, write_pipeline
from tests.ingest_checks import check_tip, sources, url

NAMES = ["z%20.nc", "y #1.nc", "x?.nc", "é[2].nc", "a b.nc"]  # not in time order


def _series(folder: Path) -> list[Path]:
    """File i: days 2i and 2i+1, counted from its own first day (the units differ per file,
    the layout does not); file 3 also has a global attribute the others lack (another
    layout: scanned the usual way)."""
    folder.mkdir(parents=True)
    paths = []
    for i, name in enumerate(NAMES):
        start = pd.Timestamp("2000-01-01") + pd.Timedelta(days=2 * i)
        ds = xr.Dataset(
            {"v": (("time", "x"), np.full((2, 3), float(i), dtype="f4"))},
            coords={"time": pd.date_range(start, periods=2)},
            attrs={"title": f"file {i}", **({"comment": "reprocessed"} if i == 3 else {})},
        )
        encoding = {
            "time": {"units": f"days since {start:%Y-%m-%d}", "dtype": "f8"},
            "v": {"zlib": True, "chunksizes": (1, 3)},
        }
        ds.to_netcdf(folder / name, engine="netcdf4", encoding=encoding)
        paths.append(folder / name)
    return paths


def test_in_process_runs_in_batches_equal_one_run(tmp_path: Path) -> None:
    quick.forget()
    pool = _series(tmp_path / "pool")
    src = tmp_path / "src"
    src.mkdir()
    pipeline = icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc"))
    repo = tmp_path / "repo"
    for batch in ([1, 0], [2], [4, 3]):  # consecutive in time; arrival order inside a batch
        for i in batch:
            pool[i] = pool[i].rename(src / pool[i].name)
        result = icepipe.run(pipeline)
        assert result.status == "committed", result
        assert result.cluster["address"] == "in-process"
        assert sorted(result.files_new) == sorted(url(pool[i]) for i in batch)
        tip = branch_tip(repo)
        again = icepipe.run(pipeline)
        assert again.status == "nothing-new" and branch_tip(repo) == tip

    # The files after the first of their layout took its template.
    assert any(t is not None for t in quick._templates.values())
    tip = branch_tip(repo)
    assert tip is not None
    records = check_tip(repo, "g", tip)
    assert sorted(r["url"] for r in records) == sorted(url(f) for f in pool)
    stored = icepipe.open_dataset(str(repo), group="g").load()
    xr.testing.assert_identical(stored, sources(pool))
    one = write_pipeline(tmp_path, name="one", urls="src/*.nc", repo="one")
    icepipe.run(icepipe.load_pipeline(one))
    xr.testing.assert_identical(
        stored, icepipe.open_dataset(str(tmp_path / "one"), group="g").load()
    )
