"""Make kerchunk reference sets over the NEMO sample files, for pipelines/nemo-kerchunk.yaml.

Usage::

    make_kerchunk_refs.py [--relative-to FINAL_DIR] OUT_DIR NEMO_FILE...

One set per file, made by kerchunk itself (``SingleHdf5ToZarr``, small chunks inlined), in the
three forms icepipe reads: the first as JSON, the second as gzip-compressed JSON, the others as
Parquet reference directories (``kerchunk.df.refs_to_dataframe``). The references name each file
relative to the folder the sets will live in (``--relative-to``, default OUT_DIR: written to a
staging folder, they are moved there), e.g. ``../nemo/<file>.nc``, so the sets keep working
wherever ``data/`` is; icepipe resolves a relative path against the folder of the set holding
it. Run by ``scripts/fetch_data.sh`` (``make data``); never committed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path
from typing import Any

import icepipe  # noqa: F401  (loads pyproj before ecCodes: see icepipe/__init__.py)


def relative_refs(path: Path, out_dir: Path) -> dict[str, Any]:
    """kerchunk's references to ``path``, its URL made relative to ``out_dir``."""
    from kerchunk.hdf import SingleHdf5ToZarr

    refs: dict[str, Any] = SingleHdf5ToZarr(str(path), inline_threshold=300).translate()
    relative = os.path.relpath(path.resolve(), out_dir.resolve())
    for value in refs["refs"].values():
        if isinstance(value, list) and value:
            value[0] = relative
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relative-to", type=Path, default=None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("paths", type=Path, nargs="+")
    args = parser.parse_args()
    from kerchunk.df import refs_to_dataframe

    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(args.paths)):
        refs = relative_refs(path, args.relative_to or out)
        if i == 0:
            (out / f"{path.stem}.json").write_text(json.dumps(refs))
        elif i == 1:
            (out / f"{path.stem}.json.gz").write_bytes(gzip.compress(json.dumps(refs).encode()))
        else:
            refs_to_dataframe(refs, str(out / f"{path.stem}.parq"))
    print(f"{out}: {len(args.paths)} reference sets")


if __name__ == "__main__":
    main()
