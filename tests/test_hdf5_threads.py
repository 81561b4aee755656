"""icepipe's own h5py calls (``hdf5_index``: layouts, chunk tables, raw values) run without
xarray's ``HDF5_LOCK``, in the client process of small runs, while other threads may be inside
netCDF-C (netCDF4-python, as xarray's ``netcdf4`` engine or a user's code) or h5py.

Neither libhdf5 the wheels bundle is built thread-safe (``H5is_library_threadsafe``: h5py's
HDF5 2.0.0 and netCDF4's 2.2.0 are both false), but they are two libraries (two files, two
sonames: each wheel's extensions resolve HDF5 to their own copy, whatever the import order),
and h5py serialises every call into its copy with its own lock (``h5py._objects.phil``). So
h5py and netCDF-C may run at once, and that is what this stress checks: in a child process,
for ``SECONDS``, a thread doing what ``hdf5_index`` does, a thread reading through
netCDF4-python without any lock, and a thread reading through h5py, every result compared
with the expected one.

The stress has teeth: run with one libhdf5 shared by both (as when h5py and netCDF4 are built
against one non-thread-safe system HDF5: ``LD_PRELOAD=.../h5py.libs/libhdf5-*.so python
tests/test_hdf5_threads.py 3``) it crashed (SIGSEGV) or raised HDF5 errors within 3 s in 4
runs of 4; two netCDF-C threads without a lock crash the same way.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SECONDS = 2.0


def _files(folder: Path) -> list[Path]:
    import numpy as np
    import xarray as xr

    paths = []
    for i in range(3):
        path = folder / f"f{i}.nc"
        ds = xr.Dataset(
            {"tas": (("time", "y", "x"), np.arange(4 * 20 * 20, dtype="f4").reshape(4, 20, 20))},
            coords={"time": np.arange(4) + 4 * i},
        )
        ds["tas"] += i
        ds.to_netcdf(
            path, engine="netcdf4", encoding={"tas": {"zlib": True, "chunksizes": (1, 20, 20)}}
        )
        paths.append(path)
    return paths


def stress(folder: Path, seconds: float) -> list[str]:
    """Run the three threads for ``seconds``; the problems they met."""
    import h5py
    import netCDF4
    import numpy as np

    from icepipe.sources.formats import hdf5_index

    paths = [str(p) for p in _files(folder)]

    def index(path: str) -> tuple[Any, ...]:
        layout = hdf5_index.layout_of(path, None, None)
        assert layout is not None
        try:
            table = hdf5_index.chunk_table(layout.datasets["tas"], (1, 20, 20))
            assert table is not None
            raw = hdf5_index.read_raw(layout.datasets["time"])
            return layout.key, table[1].tobytes(), table[2].tobytes(), raw.tobytes()
        finally:
            hdf5_index.discard(layout)

    expected = {p: (index(p), netCDF4.Dataset(p)["tas"][:].data.copy()) for p in paths}
    problems: list[str] = []
    stop = time.monotonic() + seconds

    def loop(name: str, step: Any) -> None:
        n = 0
        try:
            while time.monotonic() < stop:
                path = paths[n % len(paths)]
                if not step(path):
                    problems.append(f"{name}: wrong result for {path}")
                n += 1
        except Exception as exc:  # an HDF5 error raised in a thread is a failure too
            problems.append(f"{name}: {type(exc).__name__}: {exc}")

    def with_netcdf4(path: str) -> bool:
        with netCDF4.Dataset(path) as nc:
            return bool(np.array_equal(nc["tas"][:].data, expected[path][1]))

    def with_h5py(path: str) -> bool:
        with h5py.File(path, "r") as f:
            return bool(np.array_equal(f["tas"][:], expected[path][1]))

    threads = [
        threading.Thread(target=loop, args=("hdf5_index", lambda p: index(p) == expected[p][0])),
        threading.Thread(target=loop, args=("netCDF4", with_netcdf4)),
        threading.Thread(target=loop, args=("h5py", with_h5py)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return problems


def test_icepipe_h5py_calls_beside_netcdf_c_and_h5py_threads(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, __file__, str(SECONDS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert done.stdout.strip().endswith("ok"), done.stdout[-2000:]


if __name__ == "__main__":
    import tempfile

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        found = stress(Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tmp), seconds)
    print("\n".join(found) or "ok")
    sys.exit(1 if found else 0)
