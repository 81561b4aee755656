"""A separate writer process for the concurrency tests of ``icepipe.to_icechunk``.

Usage: ``python concurrent_writer.py '<json job>'``; prints one JSON line per round.

The job names a repository, a group, this writer's ``name``, a ``barrier`` folder shared with
the other writers, and ``rounds``: each round is ``{"op": "append", "start": int, "n": int}``
or ``{"op": "region", "start": int, "stop": int, "value": float}``. Before each round every
writer waits for all the others at the barrier, so that their writes overlap; each write
computes Dask blocks slowly (``delay`` seconds) so both sessions start from the same tip.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _barrier(folder: Path, name: str, round_no: int, parties: int, timeout: float = 60) -> None:
    (folder / f"{round_no}-{name}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob(f"{round_no}-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {round_no}: the other writers never arrived")
        time.sleep(0.005)


def main(job: dict[str, Any]) -> None:
    import dask
    import dask.array as da
    import numpy as np
    import xarray as xr

    import icepipe

    blocks = 0
    delay = float(job.get("delay", 0.3))

    def slow(block: np.ndarray) -> np.ndarray:
        nonlocal blocks
        blocks += 1
        time.sleep(delay)
        return block

    def lazy(values: np.ndarray) -> da.Array:
        return da.from_array(values, chunks=job["chunk"]).map_blocks(
            slow, meta=np.array((), dtype=values.dtype)
        )

    for i, rnd in enumerate(job["rounds"]):
        if rnd["op"] == "append":
            coords = np.arange(rnd["start"], rnd["start"] + rnd["n"], dtype="i8")
            ds = xr.Dataset({"a": (("x",), lazy(coords.astype("f8")))}, coords={"x": coords})
            kwargs: dict[str, Any] = {"append_dim": "x"}
        else:
            n = rnd["stop"] - rnd["start"]
            ds = xr.Dataset({"a": (("x",), lazy(np.full(n, float(rnd["value"]))))})
            kwargs = {"region": {"x": slice(rnd["start"], rnd["stop"])}}
        _barrier(Path(job["barrier"]), job["name"], i, job["parties"])
        before, t0 = blocks, time.monotonic()
        try:
            with dask.config.set(scheduler="threads"):
                snap = icepipe.to_icechunk(ds, job["repo"], group=job["group"], **kwargs)
            out: dict[str, Any] = {"ok": snap}
        except icepipe.IcepipeError as exc:
            out = {"error": type(exc).__name__, "message": str(exc), "conflicts": exc.__dict__}
        out.update(round=i, blocks=blocks - before, seconds=time.monotonic() - t0)
        print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
