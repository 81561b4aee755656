"""``scripts/derive_samples.py calendar-split``: real daily files cut at calendar boundaries
keep their values bit for bit, and a part that differs is caught."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import netCDF4
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "derive_samples.py"


@pytest.fixture(scope="module")
def derive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive_samples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("derive_samples", module)
    spec.loader.exec_module(module)
    return module


def test_monthly_split_of_a_real_daily_file(
    derive: ModuleType, sample_data: Path, tmp_path: Path
) -> None:
    source = sample_data / "ncarg" / "cdf" / "chi200_ud_smooth.nc"
    info = derive.calendar_split(source, tmp_path, by="month")  # dates from its 'date' variable
    assert info["sizes"] == [31, 31, 28, 31, 30, 31]
    assert info["parts"][0] == "chi200_ud_smooth_195012.nc"
    parts = [tmp_path / p for p in info["parts"]]
    with netCDF4.Dataset(parts[2]) as nc:
        assert int(nc["date"][0]) == 19510201 and nc.data_model == "NETCDF3_CLASSIC"
    with netCDF4.Dataset(parts[2], "a") as nc:
        nc["CHI"][3, 5] = nc["CHI"][3, 5] + 1
    with pytest.raises(SystemExit, match="CHI: the parts differ"):
        derive._check_bytes(source, parts, "time")


def test_yearly_split_follows_the_file_calendar(
    derive: ModuleType, sample_data: Path, tmp_path: Path
) -> None:
    source = sample_data / "corpus" / "cf-python" / "test_file2.nc"  # 360_day, from 2005-12
    info = derive.calendar_split(source, tmp_path, by="year")
    assert info["sizes"] == [30, 360, 360, 360, 360, 330]
    assert info["values"] == "bit-identical"
