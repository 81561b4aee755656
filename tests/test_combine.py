"""Combining files: merge (variables in separate files), two combine dims, preprocess hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import icepipe
from icepipe.errors import ConfigError, SourceError
from tests.conftest import write_pipeline


def _field(var: str, t0: int, n: int, *, member: int | None = None, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    times = pd.date_range("2020-01-01", periods=t0 + n, freq="D")[t0:]
    dims: tuple[str, ...] = ("time", "lat")
    shape: tuple[int, ...] = (n, 3)
    coords: dict[str, Any] = {"time": times, "lat": np.array([-10.0, 0.0, 10.0])}
    if member is not None:
        dims, shape = ("member", *dims), (1, *shape)
        coords["member"] = [member]
    ds = xr.Dataset({var: (dims, rng.random(shape).astype("f4"))}, coords=coords)
    ds.attrs["title"] = "combine test"
    return ds


def _save(ds: xr.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = {"time": {"units": "days since 2000-01-01", "dtype": "i8"}}
    enc.update({v: {"chunksizes": ds[v].shape, "zlib": True} for v in ds.data_vars})
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_merge_variables_from_separate_files(tmp_path: Path, client: Any, mode: str) -> None:
    parts = []
    for i in range(3):
        for j, var in enumerate(("tas", "pr")):
            ds = _field(var, 4 * i, 4, seed=10 * i + j)
            _save(ds, tmp_path / "src" / f"{var}_{i}.nc")
            parts.append(ds)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    spec.write_text(
        spec.read_text().replace("  concat_dim: time\n", "  concat_dim: time\n  merge: true\n")
    )
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert len(result.files_new) == 6
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    expected = xr.combine_by_coords(parts, combine_attrs="override")
    xr.testing.assert_equal(stored, expected)
    assert stored.sizes["time"] == 12 and set(stored.data_vars) == {"tas", "pr"}

    # The next period arrives: both of its files are appended as one step.
    for j, var in enumerate(("tas", "pr")):
        ds = _field(var, 12, 4, seed=99 + j)
        _save(ds, tmp_path / "src" / f"{var}_3.nc")
        parts.append(ds)
    again = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert len(again.files_new) == 2
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, xr.combine_by_coords(parts, combine_attrs="override"))


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_two_combine_dims_time_and_member(tmp_path: Path, client: Any, mode: str) -> None:
    parts = []
    for i in range(2):
        for m in (0, 1, 2):
            ds = _field("tas", 4 * i, 4, member=m, seed=7 * i + m)
            _save(ds, tmp_path / "src" / f"m{m}_t{i}.nc")
            parts.append(ds)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
    spec.write_text(
        spec.read_text().replace("  concat_dim: time\n", "  concat_dims: [time, member]\n")
    )
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert len(result.files_new) == 6
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    xr.testing.assert_equal(stored, xr.combine_by_coords(parts, combine_attrs="override"))
    assert dict(stored["tas"].sizes) == {"member": 3, "time": 8, "lat": 3}


def test_preprocess_hook_runs_on_workers(tmp_path: Path, client: Any) -> None:
    for i in range(2):
        _save(_field("tas", 4 * i, 4, seed=i), tmp_path / "src" / f"f{i}.nc")
    (tmp_path / "fixes.py").write_text(
        "def to_celsius(ds):\n"
        "    ds = ds.rename({'tas': 'temperature'})\n"
        "    ds['temperature'].attrs['note'] = 'renamed by preprocess'\n"
        "    return ds\n"
    )
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    spec.write_text(
        spec.read_text().replace(
            "  concat_dim: time\n", "  concat_dim: time\n  preprocess: fixes:to_celsius\n"
        )
    )
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g")
    assert "temperature" in stored and "tas" not in stored
    assert stored["temperature"].attrs["note"] == "renamed by preprocess"


def test_preprocess_errors(tmp_path: Path, client: Any) -> None:
    _save(_field("tas", 0, 4), tmp_path / "src" / "f0.nc")
    (tmp_path / "broken.py").write_text("def hook(ds):\n    raise RuntimeError('boom')\n")
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    text = spec.read_text()
    spec.write_text(
        text.replace("  concat_dim: time\n", "  concat_dim: time\n  preprocess: broken:hook\n")
    )
    with pytest.raises(
        SourceError, match=r"f0\.nc: preprocess hook 'broken:hook' raised RuntimeError"
    ):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    spec.write_text(
        text.replace("  concat_dim: time\n", "  concat_dim: time\n  preprocess: nope:hook\n")
    )
    with pytest.raises(ConfigError, match="cannot import module 'nope'"):
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    spec.write_text(
        text.replace("  concat_dim: time\n", "  concat_dim: time\n  preprocess: no-colon\n")
    )
    with pytest.raises(ConfigError, match="module:function"):
        icepipe.load_pipeline(spec)
