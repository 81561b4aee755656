"""Open source files lazily with xarray + Dask, for native (data-rewriting) ingests.

Only metadata is read here, on the coordinator; the data is read by the Dask tasks that write
the target chunks, on the workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import xarray as xr

from icepipe.errors import SchemaMismatchError, SourceError, short_message

__all__ = ["ENGINES", "open_lazy"]

#: xarray engine per detected format.
# netCDF4-python reads every netCDF3 variant (CDF-1, CDF-2 and CDF-5; scipy misses CDF-5).
ENGINES = {"netcdf4": "h5netcdf", "netcdf3": "netcdf4", "zarr": "zarr"}


def _open_one(
    url: str,
    fmt: str,
    *,
    variables: tuple[str, ...] | None,
    drop_variables: tuple[str, ...],
    keep: tuple[str, ...],
) -> xr.Dataset:
    path = url.removeprefix("file://")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=xr.SerializationWarning)
            ds = xr.open_dataset(
                path, engine=ENGINES[fmt], chunks={}, decode_times=False, cache=False
            )
    except Exception as exc:
        raise SourceError(
            f"{url}: cannot be opened as {fmt} ({short_message(exc)}); replace it, or remove it "
            "from source.urls",
            url=url,
        ) from exc
    if variables is not None:
        ds = ds[list(dict.fromkeys([*variables, *(k for k in keep if k in ds.variables)]))]
    if drop_variables:
        ds = ds.drop_vars(list(drop_variables))
    return ds


def open_lazy(
    urls: Sequence[str],
    formats: Sequence[str],
    concat_dim: str,
    *,
    variables: tuple[str, ...] | None = None,
    drop_variables: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
) -> xr.Dataset:
    """Open ``urls`` (already in concat order) as one Dask-backed dataset along ``concat_dim``.

    Times stay undecoded (raw values with ``units``), exactly as in virtual mode, so appends and
    every CF calendar round-trip; packed data keep their encoding (re-packed on write).

    Raises
    ------
    SourceError
        A file cannot be opened.
    SchemaMismatchError
        The files cannot be combined.
    """
    parts = [
        _open_one(u, f, variables=variables, drop_variables=drop_variables, keep=keep)
        for u, f in zip(urls, formats, strict=True)
    ]
    if len(parts) == 1:
        return parts[0]
    try:
        return xr.concat(
            parts,
            dim=concat_dim,
            data_vars="minimal",
            coords="minimal",
            compat="override",
            combine_attrs="override",
            join="override",
        )
    except ValueError as exc:
        raise SchemaMismatchError(
            f"the files cannot be combined along {concat_dim!r}: {exc}", urls=list(urls)
        ) from exc
