"""CF rules that the scan of a source file and the summary of a repository must apply alike.

A file and the repository it is appended to are compared variable by variable (dtype, time
``units``/``calendar``). Both sides store CF helper variables exactly as the source files do:
bounds (``time_bnds``) and climatology bounds usually carry no ``units`` or ``calendar`` of
their own and inherit their parent coordinate's. Comparing them needs the inherited encoding on
*both* sides, computed by the one function here: otherwise a first ingest and the next append
disagree about what is stored (the repository's bounds "have no units", the file's "inherit
days since ...") and every append fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "PACKING_KEYS",
    "effective_time_encoding",
    "grid_of",
    "is_time_units",
    "packing_of",
    "rounded_exactly",
]

#: The attributes that decide how a variable's raw values decode (masking, unpacking).
PACKING_KEYS = ("_FillValue", "missing_value", "scale_factor", "add_offset")


def is_time_units(units: object) -> bool:
    """Whether ``units`` are CF time units (``<unit> since <epoch>``)."""
    return isinstance(units, str) and " since " in units


def effective_time_encoding(
    attrs: Mapping[str, Mapping[str, Any]],
) -> dict[str, tuple[str | None, str | None]]:
    """``(units, calendar)`` of every variable, with CF inheritance applied.

    A variable named by a time coordinate's ``bounds`` or ``climatology`` attribute takes the
    coordinate's ``units`` and ``calendar`` where it has none of its own, attribute by
    attribute. That is how xarray decodes ``bounds`` (``conventions._update_bounds_attributes``);
    CF says the same of climatology bounds, which xarray leaves undecoded: inheriting them here
    makes time conversions rewrite them along with their coordinate instead of leaving them in
    another file's epoch.

    Parameters
    ----------
    attrs
        Each variable's attributes, by name.
    """
    out: dict[str, tuple[str | None, str | None]] = {
        name: (_text(a.get("units")), _text(a.get("calendar"))) for name, a in attrs.items()
    }
    for a in attrs.values():
        units = a.get("units")
        if not is_time_units(units):
            continue
        for key in ("bounds", "climatology"):
            child = a.get(key)
            if not isinstance(child, str) or child not in out:
                continue
            own_units, own_calendar = out[child]
            out[child] = (
                own_units if own_units is not None else str(units),
                own_calendar if own_calendar is not None else _text(a.get("calendar")),
            )
    return out


def _text(value: object) -> str | None:
    return str(value) if value is not None else None


def packing_of(attrs: Mapping[str, Any], dtype: str) -> tuple[tuple[str, float | str], ...]:
    """The :data:`PACKING_KEYS` of ``attrs`` as comparable values, sorted by key.

    Zarr stores a float ``_FillValue`` as the base64 of its bytes (VirtualiZarr and xarray
    both write it so): decoded here (for float ``dtype``), so that a source file and a
    repository compare by value. Values that are not numbers are compared as text. A NaN
    ``_FillValue``/``missing_value`` is left out: masking NaN changes nothing.
    """
    out: list[tuple[str, float | str]] = []
    for key in PACKING_KEYS:
        if key not in attrs:
            continue
        value = _number(attrs[key], dtype)
        if key in ("_FillValue", "missing_value") and isinstance(value, float) and value != value:
            continue  # a NaN fill value masks nothing: the same as none
        out.append((key, value))
    return tuple(out)


def _number(value: Any, dtype: str) -> float | str:
    if isinstance(value, str):
        text: str = value
        if text in ("NaN", "Infinity", "-Infinity"):  # Zarr v3's JSON for these floats
            return float(text.replace("inity", ""))
        import base64
        import binascii

        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text
        # Written as float64 bytes for float32 variables too: the length tells.
        floats: dict[int, np.dtype[Any]] = {4: np.dtype("<f4"), 8: np.dtype("<f8")}
        if np.dtype(dtype).kind != "f" or len(raw) not in floats:
            return text
        value = np.frombuffer(raw, dtype=floats[len(raw)])[0]
    try:
        number = np.asarray(value).ravel()
    except (TypeError, ValueError):
        return str(value)
    if number.size != 1 or number.dtype.kind not in "iufb":
        return str(value)
    return float(number[0])


def rounded_exactly(values: np.ndarray) -> tuple[np.ndarray, Any]:
    """``values`` rounded to whole numbers, and one value rounding changed (``None`` when it
    changed none): time values stored in an integer encoding must be whole numbers there."""
    rounded = np.round(values)
    changed = rounded != values
    return rounded, (values[changed][0] if changed.any() else None)


def grid_of(attrs: Mapping[str, Any], width: int, height: int) -> str | None:
    """A raster's grid as one comparable, readable text: the CRS of a CF grid mapping written
    as rioxarray writes it (``crs_wkt``: its name, and a digest telling WKTs of one name
    apart), its ``GeoTransform`` and the size; ``None`` without a ``GeoTransform``.

    The same text is made of a source file's ``spatial_ref`` and of the stored one, so that
    files on another grid are refused both within a run and against the repository.
    """
    import hashlib
    import re

    transform = attrs.get("GeoTransform")
    if transform is None:
        return None
    wkt = str(attrs.get("crs_wkt") or "")
    name = re.match(r'^\w+\["([^"]*)"', wkt)
    crs = "no CRS"
    if wkt:
        digest = hashlib.sha256(wkt.encode()).hexdigest()[:8]
        crs = f"{name.group(1) if name else 'CRS'} (WKT {digest})"
    return f"{crs}, GeoTransform [{transform}], {width}x{height} pixels"
