"""Survey: every real GRIB sample file through a virtual icepipe pipeline, against cfgrib.

For each file: run a pipeline (``grib_cubes: all``, ``mode: virtual``) into a fresh repository,
read every variable of every hypercube group back through Icechunk and compare it with
``cfgrib.open_datasets`` (values, NaN equal). Prints a Markdown table: file, hypercubes,
variables stored virtually / as native fallback, the outcome, and the reason where not virtual.

Usage: .venv/bin/python scripts/grib_survey.py [DATA_DIR]   (default: data/)
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml

import icepipe
from icepipe.execute import open_client

FOLDERS = ("cfgrib-samples", "ncarg/grb")
SUFFIXES = (".grib", ".grib2", ".grb", ".grb2")


def _cfgrib(path: Path) -> tuple[list[object] | None, str]:
    import cfgrib

    try:
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cubes = cfgrib.open_datasets(
                str(path),
                backend_kwargs={"indexpath": folder + "/{short_hash}.idx", "squeeze": False},
            )
            return [c.load() for c in cubes], ""
    except Exception as exc:  # a survey: report whatever cfgrib says
        return None, f"{type(exc).__name__}: {str(exc)[:80]}"


def survey_file(path: Path, client: object, work: Path) -> tuple[str, ...]:
    from icepipe.sources.formats.grib_index import scan_grib

    refs, cf_error = _cfgrib(path)
    cf = f"{len(refs)} cubes" if refs is not None else f"fails ({cf_error})"
    doc = {
        "name": "survey",
        "source": {
            "urls": [str(path)],
            "format": "grib",
            "concat_dim": "time",
            "grib_cubes": "all",
        },
        "target": {"repo": str(work / "repo"), "group": "g"},
    }
    (work / "p.yaml").write_text(yaml.safe_dump(doc))
    try:
        result = icepipe.run(icepipe.load_pipeline(work / "p.yaml"), client=client)
    except icepipe.IcepipeError as exc:
        reason = str(exc).replace(f"file://{path}: ", "").split("; replace ")[0][:140]
        return (path.name, "-", "-", "-", "error", cf, reason.replace("|", "/"))
    names = [c.name for c in scan_grib("file://" + str(path), squeeze=False)]
    n_fallback = len(result.native_fallback)
    n_virtual = n_compared = 0
    differ: list[str] = []
    for name, ref in zip(names, refs or [], strict=False):
        stored = icepipe.open_dataset(str(work / "repo"), group=f"g/{name}")
        for var in ref.data_vars:  # type: ignore[attr-defined]
            n_compared += 1
            if f"{name}/{var}" not in result.native_fallback:
                n_virtual += 1
            a, b = stored[var].values, ref[var].values  # type: ignore[index]
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                differ.append(f"{name}/{var}")
    if refs is None:
        outcome = "virtual (cfgrib fails: not compared)"
    elif differ:
        outcome = f"differs from cfgrib: {', '.join(differ[:3])}"
    else:
        outcome = f"equal to cfgrib ({n_compared} variables)"
    reasons = sorted(set(result.native_fallback.values()))
    return (
        path.name,
        str(len(result.groups)),
        str(n_virtual),
        str(n_fallback),
        outcome,
        cf,
        "; ".join(r[:90] for r in reasons).replace("|", "/"),
    )


def main() -> int:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "data").resolve()
    files = sorted(
        p for folder in FOLDERS for p in (data / folder).glob("*") if p.suffix in SUFFIXES
    )
    rows = []
    with open_client(workers=2) as (client, _), tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(files):
            work = Path(tmp) / str(i)
            work.mkdir()
            rows.append(survey_file(path, client, work))
            print(" | ".join(rows[-1]), file=sys.stderr)
    header = ("file", "cubes", "virtual vars", "native fallback", "icepipe", "cfgrib", "reason")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
