"""A zarr array as a lazily indexed xarray variable, for arrays xarray's zarr backend will
not open (no dimension names): xarray's backend API (``BackendArray`` and
``LazilyIndexedArray``), so an indexing reads only the chunks it needs, in the calling
thread (no Dask: a distributed client in the process is never asked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

__all__ = ["lazy_variable"]


class _ZarrArray(BackendArray):  # type: ignore[misc]
    """A zarr array read by orthogonal selections."""

    def __init__(self, arr: Any) -> None:
        self.arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype

    def __getitem__(self, key: Any) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._get
        )

    def _get(self, key: tuple[Any, ...]) -> Any:
        return np.asarray(self.arr.get_orthogonal_selection(key))


def lazy_variable(arr: Any, dims: Sequence[str]) -> xr.Variable:
    """The zarr array ``arr`` as an xarray variable along ``dims``, nothing read yet (its
    attributes but xarray's ``_ARRAY_DIMENSIONS``)."""
    attrs = {k: v for k, v in arr.attrs.items() if k != "_ARRAY_DIMENSIONS"}
    return xr.Variable(tuple(dims), indexing.LazilyIndexedArray(_ZarrArray(arr)), attrs=attrs)
