"""Combine scanned virtual datasets along the concat dimension (no I/O: references only)."""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr

from icepipe.errors import SchemaMismatchError
from icepipe.sources.scan import ScannedFile

__all__ = ["combine_virtual"]


def combine_virtual(files: Sequence[ScannedFile], concat_dim: str) -> xr.Dataset:
    """Concatenate virtual datasets, already ordered, along ``concat_dim``.

    Variables without ``concat_dim`` (grids, masks, static fields) are taken from the first file;
    index coordinates of the other dimensions must be equal in every file.

    Raises
    ------
    SchemaMismatchError
        An index coordinate of another dimension differs between two files.
    """
    if not files:
        raise ValueError("combine_virtual needs at least one file")
    first = files[0]
    for other in files[1:]:
        for name, index in first.dataset.indexes.items():
            if name == concat_dim or name not in other.dataset.indexes:
                continue
            if not index.equals(other.dataset.indexes[name]):
                raise SchemaMismatchError(
                    f"coordinate {name!r} differs between {first.source.url} and "
                    f"{other.source.url}; files combined along {concat_dim!r} must share every "
                    "other coordinate: fix or remove the file",
                    urls=(other.source.url, first.source.url),
                )
    if len(files) == 1:
        return first.dataset
    return xr.concat(
        [f.dataset for f in files],
        dim=concat_dim,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
        join="override",
    )
