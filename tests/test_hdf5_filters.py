"""netCDF4 files compressed with HDF5 filter plugins (netCDF-C 4.9's ``compression=``:
zstd, bzip2, blosc, ...): ingested virtually where a Zarr codec exists, natively always,
and refused by name with the fix where they cannot be read -- never as "transient, retry"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

import icepipe
from icepipe.errors import SourceError
from icepipe.worker_setup import PLUGIN_NAME
from tests.conftest import write_pipeline


def _write(folder: Path, compression: str, n: int = 2) -> list[Path]:
    """``n`` consecutive files of a (time, x) series compressed with ``compression``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        path = folder / f"{compression}{i}.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("time", None)
            ds.createDimension("x", 50)
            t = ds.createVariable("time", "i8", ("time",))
            t.units = "days since 2000-01-01"
            v = ds.createVariable("tas", "f4", ("time", "x"), compression=compression)
            t[0:3] = np.arange(3 * i, 3 * i + 3)
            v[0:3, :] = np.round(rng.random((3, 50)) * 100, 1)
        paths.append(path)
    return paths


def _expected(files: list[Path]) -> xr.Dataset:
    import hdf5plugin  # noqa: F401  (the test process reads the files too)

    parts = [xr.load_dataset(f, engine="h5netcdf") for f in files]
    return xr.concat(parts, dim="time")


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_zstd_compressed_netcdf4_is_ingested(tmp_path: Path, client: Any, mode: str) -> None:
    files = _write(tmp_path / "src", "zstd")
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, _expected(files))
    # Every worker, present and future, registers the filters (native reads may run on a
    # worker that never scanned a file).
    has = client.run(lambda dask_worker: PLUGIN_NAME in dask_worker.plugins)
    assert has and all(has.values())


def test_bzip2_is_refused_virtually_naming_the_fix_and_ingested_natively(
    tmp_path: Path, client: Any
) -> None:
    files = _write(tmp_path / "src", "bzip2")
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    with pytest.raises(SourceError, match=rf"{files[0].name}: .*no Zarr codec.*mode: native"):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    assert icepipe.run(icepipe.load_pipeline(spec), client=client).status == "committed"
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, _expected(files))


def test_a_filter_without_its_plugin_is_a_named_source_error(tmp_path: Path) -> None:
    """Without the filter's plugin (hdf5plugin not importable), a native scan names the file
    and the fix instead of failing as an unexpected (retried) error."""
    (path,) = _write(tmp_path, "zstd", n=1)
    code = f"""
import sys
sys.modules["hdf5plugin"] = None  # not installed
from icepipe.model import SourceFile
from icepipe.sources import ScanOptions, scan_files
from icepipe.errors import SourceError
(result,) = scan_files(
    [SourceFile("file://{path}", {path.stat().st_size}, "0")],
    ScanOptions(concat_dim="time", mode="native"),
)
assert isinstance(result, SourceError), result
print(result)
"""
    # No plugin folder either (netCDF4-python points HDF5 at the plugins its wheel bundles,
    # when imported before h5py reads: an accident of import order, not something to rely on).
    env = {**os.environ, "HDF5_PLUGIN_PATH": str(tmp_path / "no-plugins")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{path}: its values cannot be read" in out.stdout
    assert "install its plugin (hdf5plugin" in out.stdout
