"""cf.py: the CF rules a source file's scan and a repository's summary apply alike."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from icepipe.cf import effective_time_encoding, is_time_units, packing_of, rounded_exactly

DAYS = "days since 1850-01-01"


@pytest.mark.parametrize(
    ("units", "expected"),
    [(DAYS, True), ("hours since 0000-01-01", True), ("K", False), (None, False), (3, False)],
)
def test_time_units(units: object, expected: bool) -> None:
    assert is_time_units(units) is expected


def test_bounds_and_climatology_inherit_their_coordinates_time_encoding() -> None:
    attrs = {
        "time": {"units": DAYS, "calendar": "noleap", "bounds": "time_bnds"},
        "time_bnds": {},
        "clim": {"units": "hours since 2000-01-01", "climatology": "clim_bnds"},
        "clim_bnds": {},
        "tas": {"units": "K"},
    }
    assert effective_time_encoding(attrs) == {
        "time": (DAYS, "noleap"),
        "time_bnds": (DAYS, "noleap"),
        "clim": ("hours since 2000-01-01", None),
        "clim_bnds": ("hours since 2000-01-01", None),
        "tas": ("K", None),
    }


def test_inheritance_is_attribute_by_attribute_and_own_values_win() -> None:
    attrs = {
        "time": {"units": DAYS, "calendar": "360_day", "bounds": "time_bnds"},
        "time_bnds": {"calendar": "360_day", "units": "days since 2000-01-01"},
        "t2": {"units": DAYS, "calendar": "noleap", "bounds": "t2_bnds"},
        "t2_bnds": {"calendar": "standard"},
    }
    out = effective_time_encoding(attrs)
    assert out["time_bnds"] == ("days since 2000-01-01", "360_day")
    assert out["t2_bnds"] == (DAYS, "standard")


def test_only_time_coordinates_pass_their_encoding_on() -> None:
    attrs = {
        "lat": {"units": "degrees_north", "bounds": "lat_bnds"},
        "lat_bnds": {},
        "time": {"units": DAYS, "bounds": "missing_bnds"},  # names no variable: ignored
    }
    out = effective_time_encoding(attrs)
    assert out["lat_bnds"] == (None, None)
    assert "missing_bnds" not in out


def _b64(value: float, dtype: str) -> str:
    return base64.b64encode(np.array(value, dtype=dtype).tobytes()).decode()


@pytest.mark.parametrize("stored", ["<f8", "<f4"])
def test_a_base64_float_fill_value_compares_by_value(stored: str) -> None:
    # How Zarr stores a float _FillValue (float64 bytes for float32 variables too).
    repo = {"_FillValue": _b64(-999.0, stored), "scale_factor": 0.5}
    source = {"scale_factor": np.float32(0.5), "_FillValue": np.float32(-999.0)}
    assert packing_of(repo, "float32") == packing_of(source, "float32")
    assert packing_of(source, "float32") == (("_FillValue", -999.0), ("scale_factor", 0.5))


def test_nan_fill_values_mask_nothing() -> None:
    for fill in (float("nan"), "NaN", np.float32("nan"), _b64(float("nan"), "<f8")):
        assert packing_of({"_FillValue": fill, "missing_value": fill}, "float64") == ()
    assert packing_of({"_FillValue": "Infinity"}, "float64") == (("_FillValue", float("inf")),)


def test_values_that_are_not_numbers_compare_as_text() -> None:
    b64 = _b64(1.0, "<f8")
    assert packing_of({"_FillValue": b64}, "int16") == (("_FillValue", b64),)  # not a float
    assert packing_of({"_FillValue": "n/a"}, "float32") == (("_FillValue", "n/a"),)
    assert packing_of({"add_offset": [1, 2]}, "float32") == (("add_offset", "[1, 2]"),)
    assert packing_of({"add_offset": [273.15]}, "float32") == (("add_offset", 273.15),)
    assert packing_of({"units": "K", "add_offset": 1}, "int8") == (("add_offset", 1.0),)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20))
def test_rounded_exactly_names_a_value_rounding_changed(values: list[float]) -> None:
    array = np.array(values)
    rounded, changed = rounded_exactly(array)
    np.testing.assert_array_equal(rounded, np.round(array))
    if np.all(array == np.round(array)):
        assert changed is None
    else:
        assert changed in array and changed != np.round(changed)
