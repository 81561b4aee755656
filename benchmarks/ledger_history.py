"""The ledger read of a run on a long history: 1,000 commits of one file each.

A pipeline ingests one generated netCDF4 file (a real run: its commit carries a real ledger
record); then ``--commits - 1`` more commits are made with Icechunk directly, each carrying
that record with its one file renamed and placed after the previous one, as nightly runs of one
file each would leave (the data are not rewritten: only the history matters here). Timed,
medians of ``--repeats``, in this process:

* ``ancestry``: walking the branch's history with Icechunk (``repo.ancestry``), records
  untouched;
* ``ancestry + parse``: the same, each commit's record parsed (``read_record``);
* ``read_ledger``: what a run reads (``icepipe.repository.read_ledger``);
* ``icepipe run, nothing new``: a whole run in this process (listing, ledger, selection).

Usage::

    .venv/bin/python benchmarks/ledger_history.py [--commits 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icepipe  # first: loads pyproj before ecCodes (see icepipe/__init__.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nightly import write_file  # the nightly benchmark's small netCDF4 file
from run import write_results  # benchmarks/run.py: the shared JSON writer

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_history(work: Path, commits: int) -> tuple[Path, Any]:
    """A repository whose ``main`` holds ``commits`` ingest commits of one file each."""
    import icechunk

    from icepipe.repository import METADATA_KEY

    write_file(work / "src", 0)
    spec = work / "p.yaml"
    spec.write_text(
        "name: long\nsource:\n  urls: src/*.nc\n  concat_dim: time\n  format: netcdf4\n"
        "target:\n  repo: repo\n  group: g\n"
    )
    icepipe.run(icepipe.load_pipeline(spec), report=False)
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(work / "repo")))
    template = next(iter(repo.ancestry(branch="main"))).metadata[METADATA_KEY]
    (first,) = template["files"]
    for i in range(1, commits):
        record = copy.deepcopy(template)
        record["files"][0].update(
            url=first["url"].replace("f000000.nc", f"h{i:06d}.nc"),
            start=first["start"] + i * first["length"],
        )
        session = repo.writable_session("main")
        session.commit(f"ingest h{i:06d}.nc", metadata={METADATA_KEY: record}, allow_empty=True)
    return spec, repo


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(round(time.perf_counter() - t0, 5))
    return statistics.median(samples), samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "ledger_history.json"
    )
    args = parser.parse_args(argv)
    from icepipe.repository import history
    from icepipe.repository.ledger import read_record

    out: dict[str, Any] = {"benchmark": "ledger_history", "commits": args.commits}
    with tempfile.TemporaryDirectory(prefix="icepipe-ledger-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        spec, repo = make_history(work, args.commits)
        out["generate_seconds"] = round(time.perf_counter() - t0, 2)
        tip = repo.lookup_branch("main")
        pipeline = icepipe.load_pipeline(spec)

        def walk() -> None:
            for snap in repo.ancestry(snapshot_id=tip):
                snap.metadata  # noqa: B018  (what a ledger read touches)

        def walk_parse() -> None:
            for snap in repo.ancestry(snapshot_id=tip):
                read_record(snap.metadata, snapshot_id=snap.id)

        def ledger() -> None:
            assert len(history.read_ledger(repo, tip, "g")) == args.commits

        def nothing_new() -> None:
            result = icepipe.run(pipeline, report=False)
            assert result.status == "nothing-new", result.status

        methods = {
            "ancestry": walk,
            "ancestry + parse": walk_parse,
            "read_ledger": ledger,
            "icepipe run, nothing new": nothing_new,
        }
        medians: dict[str, float] = {}
        for name, fn in methods.items():
            fn()  # untimed warm-up
            medians[name], out.setdefault("samples", {})[name] = timed(fn, args.repeats)
            print(f"{name:<28} {medians[name]:>8.3f} s", flush=True)
        out["median_seconds"] = medians
    write_results(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
