"""Appends of variables whose stored time units xarray cannot decode.

Real files carry time units xarray's decoder refuses: Ferret's ``hour since 0000-01-01`` (year
zero in the default calendar), ``months since 1958-1-1`` in the standard calendar. icepipe reads
such files undecoded and stores the raw values with their units, exactly as the files hold them.
xarray's append (``to_zarr(append_dim=...)``) however decodes every stored variable it appends
to, to copy its encoding, and fails with "unable to decode time units". These variables are
therefore appended here, undecoded: the stored array is resized and the new raw values written,
cast exactly to the stored dtype (masked values as the stored ``_FillValue``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr

from icepipe.cf import _number, is_time_units, rounded_exactly
from icepipe.errors import SchemaMismatchError
from icepipe.repository.write import storage_errors

__all__ = ["append_raw", "split_undecodable"]


def _decodes(values: np.ndarray[Any, Any], attrs: dict[str, Any]) -> bool:
    var = xr.Variable(
        ("t",), values.ravel(), {k: attrs[k] for k in ("units", "calendar") if k in attrs}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xr.conventions.decode_cf_variable("t", var, decode_times=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def split_undecodable(
    session: Any, ds: xr.Dataset, group: str | None, append_dim: str
) -> tuple[xr.Dataset, dict[str, xr.Variable]]:
    """``ds`` without the loaded variables along ``append_dim`` whose stored time units
    xarray cannot decode, and those variables (raw values), to append with :func:`append_raw`.
    """
    try:
        g = zarr.open_group(session.store, path=group or "", mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return ds, {}
    raw: dict[str, xr.Variable] = {}
    for name, var in ds.variables.items():
        if append_dim not in var.dims or type(var.data).__name__ == "ManifestArray":
            continue
        arr = g.get(str(name))
        if not isinstance(arr, zarr.Array):
            continue
        attrs = arr.attrs.asdict()
        if not is_time_units(attrs.get("units")) or var.dtype.kind not in "iuf":
            continue
        sample = np.asarray(arr[:1] if arr.shape and arr.shape[0] else np.zeros(1, arr.dtype))
        if not _decodes(sample, attrs):
            raw[str(name)] = var
    if not raw:
        return ds, {}
    return ds.drop_vars(list(raw)), raw


def append_raw(
    session: Any, raw: dict[str, xr.Variable], group: str | None, append_dim: str, urls: list[str]
) -> None:
    """Append the raw values of ``raw`` to their stored arrays along ``append_dim``.

    Raises
    ------
    SchemaMismatchError
        A value is not exactly representable in the stored dtype (names ``urls``).
    """
    if not raw:
        return
    g = zarr.open_group(session.store, path=group or "", mode="r+")
    for name, var in raw.items():
        arr = g[name]
        assert isinstance(arr, zarr.Array)
        axis = var.dims.index(append_dim)
        values = np.asarray(var.values, dtype="float64" if var.dtype.kind == "f" else None)
        target = arr.dtype.to_native_dtype() if hasattr(arr.dtype, "to_native_dtype") else arr.dtype
        fill = arr.attrs.get("_FillValue")
        if values.dtype.kind == "f" and fill is not None and np.isnan(values).any():
            number = _number(fill, str(target))
            if isinstance(number, float) and number == number:
                values = np.where(np.isnan(values), number, values)
        if np.dtype(target).kind in "iu":
            values, inexact = rounded_exactly(values)
            if inexact is not None:
                raise SchemaMismatchError(
                    f"{', '.join(urls[:3])}: {name!r} values cannot be stored exactly as the "
                    f"repository's {target} (e.g. {inexact!r}); rewrite "
                    "the file with the same time encoding",
                    urls=urls,
                )
        values = values.astype(target)
        old = arr.shape[axis]
        shape = list(arr.shape)
        shape[axis] = old + values.shape[axis]
        where = tuple(
            slice(old, shape[axis]) if i == axis else slice(None) for i in range(arr.ndim)
        )
        with storage_errors(f"{name!r} of {', '.join(urls[:3])} into {group or '/'!r}"):
            arr.resize(tuple(shape))
            arr[where] = values
