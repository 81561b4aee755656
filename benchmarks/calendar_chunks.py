"""Native monthly chunks (``chunks: {time: month}``, a rectilinear grid) vs native regular chunks.

A year of daily 2-D data (2000, a leap year: 366 x 90 x 180 float32, 23.7 MB) generated as
netCDF4 files, ingested by ``icepipe.run`` in ``mode: native`` into fresh repositories on one
2-worker ``LocalCluster``, both layouts in the same run, interleaved:

* ``first run``: twelve monthly files in one run (``month`` vs ``time: 31``);
* ``nightly``: the year's last ``--nights`` days as one file per day, one run per file, after
  the rest was ingested (``month`` rewrites the stored December chunk every night, since a
  chunk cannot grow in place; ``31`` writes into the partial chunk as xarray's append does);
* ``read``: the whole stored variable read back with xarray.

Medians of ``--repeats``; the stored data are checked equal to the source files once.

Usage::

    .venv/bin/python benchmarks/calendar_chunks.py [--repeats 3] [--nights 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import icepipe

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

LAYOUTS = {"month": "chunks: {time: month}", "regular-31": "chunks: {time: 31}"}


def _files(folder: Path, nights: int) -> tuple[list[Path], list[Path]]:
    """Monthly files for the year but its last ``nights`` days, and one file per such day."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    folder.mkdir(parents=True)
    times = pd.date_range("2000-01-01", "2000-12-31", freq="D")
    rng = np.random.default_rng(0)
    data = rng.random((len(times), 90, 180), dtype=np.float32)
    cut = len(times) - nights
    pieces = [
        list(g.index) for _, g in pd.Series(range(cut), index=range(cut)).groupby(times[:cut].month)
    ]
    pieces += [[i] for i in range(cut, len(times))]
    monthly, daily = [], []
    for k, idx in enumerate(pieces):
        ds = xr.Dataset(
            {"tas": (("time", "lat", "lon"), data[idx[0] : idx[-1] + 1])},
            coords={
                "time": times[idx[0] : idx[-1] + 1],
                "lat": np.linspace(-89, 89, 90),
                "lon": np.arange(180) * 2.0,
            },
        )
        path = folder / f"f{k:03d}.nc"
        ds.to_netcdf(path, encoding={"time": {"units": "days since 2000-01-01", "dtype": "i8"}})
        (monthly if len(idx) > 1 else daily).append(path)
    return monthly, daily


def _pipeline(folder: Path, layout: str, src: Path) -> Path:
    spec = folder / f"{layout}.yaml"
    spec.write_text(
        f"name: bench-{layout}\nsource:\n  urls: {src}/*.nc\n  concat_dim: time\n"
        f"target:\n  repo: {folder}/{layout}-repo\n  group: g\nmode: native\n{LAYOUTS[layout]}\n"
    )
    return spec


def _one(
    client: Any, work: Path, monthly: list[Path], daily: list[Path], layout: str
) -> dict[str, float]:
    from icepipe.repository.grids import rectilinear_enabled

    src = work / f"src-{layout}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(work / f"{layout}-repo", ignore_errors=True)
    src.mkdir()
    for f in monthly:
        (src / f.name).symlink_to(f)
    pipeline = icepipe.load_pipeline(_pipeline(work, layout, src))
    t0 = time.perf_counter()
    icepipe.run(pipeline, client=client)
    first = time.perf_counter() - t0
    nights = []
    for f in daily:
        (src / f.name).symlink_to(f)
        t0 = time.perf_counter()
        icepipe.run(pipeline, client=client)
        nights.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with rectilinear_enabled():
        icepipe.open_dataset(str(work / f"{layout}-repo"), group="g", chunks={}).tas.load()
    read = time.perf_counter() - t0
    return {"first run": first, "nightly (median)": statistics.median(nights), "read": read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/calendar_chunks.json"))
    args = parser.parse_args()
    import xarray as xr

    from icepipe.execute import open_client
    from icepipe.repository.grids import rectilinear_enabled

    work = Path(tempfile.mkdtemp(prefix="icepipe-bench-cal-"))
    try:
        monthly, daily = _files(work / "files", args.nights)
        samples: dict[str, list[dict[str, float]]] = {k: [] for k in LAYOUTS}
        with open_client(workers=2) as (client, _):
            for r in range(args.repeats):
                order = list(LAYOUTS) if r % 2 == 0 else list(reversed(LAYOUTS))
                for layout in order:
                    samples[layout].append(_one(client, work, monthly, daily, layout))
            expected = xr.open_mfdataset(sorted(monthly + daily), combine="by_coords").load()
            for layout in LAYOUTS:
                with rectilinear_enabled():
                    got = icepipe.open_dataset(str(work / f"{layout}-repo"), group="g").load()
                xr.testing.assert_equal(got, expected)
        table = {
            layout: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
            for layout, runs in samples.items()
        }
        print(f"{'layout':<12} " + " ".join(f"{k:>18}" for k in table["month"]))
        for layout, row in table.items():
            print(f"{layout:<12} " + " ".join(f"{v:>17.2f}s" for v in row.values()))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "medians": table,
                    "samples": samples,
                    "repeats": args.repeats,
                    "nights": args.nights,
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
