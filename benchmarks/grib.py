"""GRIB benchmark: reading real GRIB data through an icepipe virtual repository vs cfgrib.

For each sample (ERA5 GRIB1 split into 4 files, 160 messages; NCEP GFS GRIB2 awp211, 17
hypercubes, 403 messages), measured side by side in one run, medians of ``--repeats``:

* ``ingest``: icepipe's virtual ingest into a fresh repository (scan on 2 Dask workers, one commit);
* ``read icepipe``: every data variable of every cube read back through Icechunk (each chunk one
  GRIB message, decoded by the ``icepipe.grib`` codec), in this process;
* ``read cfgrib``: the same variables read by ``cfgrib.open_datasets`` (index in a temporary
  folder, as a user without an index file would), in this process.

The read ratio (icepipe / cfgrib) is the number to watch; values are checked equal once.
Prints a table and writes JSON (default ``benchmarks/results/grib.json``).

Usage::

    .venv/bin/python benchmarks/grib.py [--repeats 3] [--out benchmarks/results/grib.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import icepipe

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "data"
SAMPLES = {
    "era5-series (GRIB1, 4 files)": ("era5-series/*.grib", None),
    "gfs-awp211 (GRIB2, 17 cubes)": ("ncarg/grb/fh.0012_tl.press_gr.awp211.grb2", "all"),
}


def _cfgrib_read(paths: list[Path]) -> dict[str, np.ndarray]:
    import cfgrib

    out = {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            for i, ds in enumerate(
                cfgrib.open_datasets(
                    str(path),
                    backend_kwargs={
                        "indexpath": f"{folder}/{path.name}.{{short_hash}}.idx",
                        "squeeze": False,
                    },
                )
            ):
                for name in ds.data_vars:
                    out[f"{path.name}/{i}/{name}"] = ds[name].values
    return out


def _icepipe_read(repo: str, groups: list[str | None]) -> dict[str, np.ndarray]:

    out = {}
    for group in groups:
        ds = icepipe.open_dataset(repo, group=group)
        for name in ds.data_vars:
            out[f"{group}/{name}"] = ds[name].values
    return out


def _ingest(pattern: str, cubes: str | None, folder: Path, client: Any) -> tuple[float, Any]:

    source: dict[str, Any] = {"urls": str(DATA / pattern), "format": "grib", "concat_dim": "time"}
    if cubes:
        source["grib_cubes"] = cubes
    doc = {"name": "bench", "source": source, "target": {"repo": str(folder / "repo")}}
    (folder / "p.yaml").write_text(yaml.safe_dump(doc))
    t0 = time.perf_counter()
    result = icepipe.run(icepipe.load_pipeline(folder / "p.yaml"), client=client)
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "grib.json"
    )
    args = parser.parse_args(argv)
    from icepipe.execute import open_client

    rows = []
    with open_client(workers=2) as (client, _), tempfile.TemporaryDirectory() as tmp:
        for label, (pattern, cubes) in SAMPLES.items():
            paths = sorted(DATA.glob(pattern))
            ingest, read_ip, read_cf = [], [], []
            for r in range(args.repeats):
                folder = Path(tmp) / f"{len(rows)}-{r}"
                folder.mkdir()
                seconds, result = _ingest(pattern, cubes, folder, client)
                ingest.append(seconds)
                groups: list[str | None] = list(result.groups) or [None]
                t0 = time.perf_counter()
                mine = _icepipe_read(str(folder / "repo"), groups)
                read_ip.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                theirs = _cfgrib_read(paths)
                read_cf.append(time.perf_counter() - t0)
                if r == 0:  # same values, in the same total amount
                    a = np.sort(np.concatenate([v.ravel() for v in mine.values()]))
                    b = np.sort(np.concatenate([v.ravel() for v in theirs.values()]))
                    assert a.shape == b.shape and np.array_equal(a, b, equal_nan=True), label
            n_values = int(sum(v.size for v in mine.values()))
            rows.append(
                {
                    "sample": label,
                    "files": len(paths),
                    "values": n_values,
                    "ingest_s": statistics.median(ingest),
                    "read_icepipe_s": statistics.median(read_ip),
                    "read_cfgrib_s": statistics.median(read_cf),
                    "read_ratio": statistics.median(read_ip) / statistics.median(read_cf),
                    "runs": {"ingest": ingest, "read_icepipe": read_ip, "read_cfgrib": read_cf},
                }
            )
    header = f"{'sample':32} {'values':>9} {'ingest s':>9} {'read icepipe s':>15} "
    header += f"{'read cfgrib s':>14} {'ratio':>6}"
    print(header)
    for row in rows:
        print(
            f"{row['sample']:32} {row['values']:>9} {row['ingest_s']:>9.2f} "
            f"{row['read_icepipe_s']:>15.2f} {row['read_cfgrib_s']:>14.2f} "
            f"{row['read_ratio']:>6.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "grib",
        "when": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
