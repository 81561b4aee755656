"""Shared fixtures: generated netCDF series, real sample data, a small Dask cluster.

No mocks: every test writes real files and real Icechunk repositories.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ICEPIPE_DATA", REPO_ROOT / "data"))


def write_series(
    folder: Path,
    n_files: int,
    *,
    fmt: str = "netcdf4",
    steps: int | list[int] = 4,
    start: str = "2020-01-01",
    freq: str = "D",
    ny: int = 5,
    nx: int = 6,
    prefix: str = "f",
    time_units: str = "days since 2000-01-01",
    time_chunk: int | None = 1,
    seed: int = 0,
    variables: tuple[str, ...] = ("tas",),
    dtype: str = "f4",
    calendar: str | None = None,
) -> list[Path]:
    """Write ``n_files`` consecutive files of a gridded time series; return their paths.

    ``fmt`` is ``netcdf4`` (HDF5, zlib-compressed, chunked along time) or ``netcdf3``
    (classic, time as the record dimension).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = [steps] * n_files if isinstance(steps, int) else list(steps)
    t0 = pd.Timestamp(start)
    offset = 0
    paths = []
    for i, n in enumerate(lengths):
        times = pd.date_range(t0, periods=offset + n, freq=freq)[offset:]
        offset += n
        data_vars = {
            v: (("time", "lat", "lon"), rng.random((n, ny, nx)).astype(dtype)) for v in variables
        }
        ds = xr.Dataset(
            data_vars,
            coords={
                "time": times,
                "lat": np.linspace(-60, 60, ny),
                "lon": np.linspace(0, 350, nx),
            },
            attrs={"title": f"test series file {i}"},
        )
        for v in variables:
            ds[v].attrs.update(units="K", long_name=f"variable {v}")
        path = folder / f"{prefix}{i:03d}.nc"
        encoding: dict[str, Any] = {"time": {"units": time_units, "dtype": "i8"}}
        if calendar:
            encoding["time"]["calendar"] = calendar
        if fmt == "netcdf4":
            for v in variables:
                encoding[v] = {
                    "zlib": True,
                    "complevel": 1,
                    "chunksizes": (time_chunk or n, ny, nx),
                }
            ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
        elif fmt == "netcdf3":
            encoding["time"]["dtype"] = "i4"
            ds.to_netcdf(
                path,
                engine="netcdf4",
                format="NETCDF3_64BIT",
                encoding=encoding,
                unlimited_dims=["time"],
            )
        else:
            raise ValueError(fmt)
        paths.append(path)
    return paths


def write_pipeline(
    folder: Path,
    *,
    name: str = "test",
    urls: Any,
    concat_dim: str = "time",
    repo: str = "repo",
    group: str | None = "g",
    fmt: str | None = None,
    extra: str = "",
) -> Path:
    """Write a pipeline YAML into ``folder`` and return its path."""
    import yaml

    source: dict[str, Any] = {"urls": urls, "concat_dim": concat_dim}
    if fmt:
        source["format"] = fmt
    tgt: dict[str, Any] = {"repo": repo}
    if group:
        tgt["group"] = group
    doc = {"name": name, "source": source, "target": tgt}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False) + extra)
    return path


@pytest.fixture
def series(tmp_path: Path) -> Callable[..., list[Path]]:
    """``series(n, **kw)`` writes a generated series under ``tmp_path/src``."""

    def make(n: int, **kw: Any) -> list[Path]:
        return write_series(kw.pop("folder", tmp_path / "src"), n, **kw)

    return make


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    """A 2-worker LocalCluster shared by the whole session (start-up costs seconds)."""
    from icepipe.execute import open_client

    with open_client(workers=2) as (c, _info):
        yield c


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real sample files fetched by ``make data`` (never skipped: CI fetches them)."""
    if not (DATA_DIR / "nemo").is_dir():
        pytest.fail(f"sample data missing under {DATA_DIR}: run `make data` first")
    return DATA_DIR


def branch_tip(repo: Path, branch: str = "main") -> str | None:
    """The snapshot id of ``branch``, or None when the repository does not exist."""
    import icechunk

    storage = icechunk.local_filesystem_storage(str(repo))
    if not icechunk.Repository.exists(storage):
        return None
    return icechunk.Repository.open(storage).lookup_branch(branch)
