"""Small runs scan in process, files after the first of a layout through the template route
(``sources/quick.py``): split over runs, in any order of arrival, with odd names and per-file
time epochs, they store what one run stores and what ``xarray.open_mfdataset`` reads; re-runs
change nothing (``tests/test_rerun_property.py`` checks the same on a cluster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import icepipe
from icepipe.errors import SchemaMismatchError
from icepipe.sources import quick
from tests.conftest import branch_tip, write_pipeline, write_series
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


def test_a_skipped_file_repaired_after_later_files_does_not_block_the_nightly(
    tmp_path: Path,
) -> None:
    """``on_error: skip`` leaves out a file that cannot be read and tries it again next run.
    Once later files are appended, the repaired file has no room left on the axis: with
    ``skip`` it is left out again, naming why, and the next files keep arriving, instead of
    every later run failing on it (the series stopped at the repaired file)."""
    files = write_series(tmp_path / "src", 4, steps=2)
    good = files[1].read_bytes()
    files[1].write_bytes(good[:200])  # unreadable while the first run reads it
    pipeline = icepipe.load_pipeline(
        write_pipeline(tmp_path, urls="src/*.nc", extra="on_error: skip\n")
    )
    first = icepipe.run(pipeline)
    assert first.files_new == tuple(url(f) for f in (files[0], files[2], files[3]))
    assert list(first.files_skipped) == [url(files[1])]

    files[1].write_bytes(good)  # repaired, after later files were appended
    tomorrow = write_series(tmp_path / "more", 5, steps=2)[4]
    tomorrow = tomorrow.rename(tmp_path / "src" / tomorrow.name)
    second = icepipe.run(pipeline)
    assert second.status == "committed"
    assert second.files_new == (url(tomorrow),)
    assert list(second.files_skipped) == [url(files[1])]
    assert "no room" in second.files_skipped[url(files[1])]
    again = icepipe.run(pipeline)
    assert again.status == "nothing-new" and list(again.files_skipped) == [url(files[1])]

    repo = tmp_path / "repo"
    records = check_tip(repo, "g", branch_tip(repo) or "")
    assert [r["url"] for r in records] == [url(f) for f in (files[0], files[2], files[3], tomorrow)]


def test_skip_leaves_out_a_file_of_another_schema_but_not_a_disagreeing_pair(
    tmp_path: Path,
) -> None:
    """A new file whose dtype differs from the stored one is refused on its own: skipped, the
    others ingested. Two new files that disagree with each other in a first run name both:
    which one is wrong is not known, and the run fails as without ``skip``."""
    skip = "on_error: skip\n"
    pair = write_series(tmp_path / "pair", 1, steps=2)
    pair += [write_series(tmp_path / "f8", 2, steps=2, dtype="f8")[1]]
    pair[1] = pair[1].rename(tmp_path / "pair" / pair[1].name)
    with pytest.raises(SchemaMismatchError):
        icepipe.run(
            icepipe.load_pipeline(
                write_pipeline(tmp_path, name="pair", urls="pair/*.nc", repo="p", extra=skip)
            )
        )

    first = write_series(tmp_path / "src", 2, steps=2)
    pipeline = icepipe.load_pipeline(write_pipeline(tmp_path, urls="src/*.nc", extra=skip))
    icepipe.run(pipeline)
    odd = write_series(tmp_path / "odd", 3, steps=2, dtype="f8")[2]
    odd = odd.rename(tmp_path / "src" / odd.name)
    later = write_series(tmp_path / "later", 4, steps=2)[3]
    later = later.rename(tmp_path / "src" / later.name)
    result = icepipe.run(pipeline)
    assert result.files_new == (url(later),)
    assert list(result.files_skipped) == [url(odd)]
    records = check_tip(tmp_path / "repo", "g", branch_tip(tmp_path / "repo") or "")
    assert [r["url"] for r in records] == [url(f) for f in (*first, later)]
