"""What the readers share: virtual datasets from a VirtualiZarr parser, lazy xarray opens, and
:class:`XarrayOpens` (``open_native``/``open_plain`` of formats xarray opens directly)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import xarray as xr

from icepipe.cf import is_time_units
from icepipe.errors import IcepipeError, SourceError, short_message
from icepipe.storage import reference_url

if TYPE_CHECKING:
    from icepipe.sources.formats.base import ScanOptions

__all__ = [
    "XarrayOpens",
    "carry_close",
    "is_virtual",
    "load_for_schema",
    "open_virtual",
    "open_xarray",
]


def is_virtual(var: xr.Variable) -> bool:
    """Whether ``var`` holds chunk references (not loaded values)."""
    from virtualizarr.manifests import ManifestArray

    return isinstance(var.data, ManifestArray)


def open_virtual(url: str, parser: Any, registry: Any, order_by: str | None) -> xr.Dataset:
    """The virtual dataset ``parser`` makes of ``url``: data variables as references, index
    coordinates, scalars, the ``order_by`` variable and time bounds loaded."""
    # The references carry reference_url(url): the file's own name, whatever its characters.
    manifest_store = parser(url=reference_url(url), registry=registry)
    ds = manifest_store.to_virtual_dataset(decode_times=False)
    # Read too: the ordering variable, the bounds of loaded time coordinates (a few
    # numbers per step), so that a time encoding drifting between files is converted in them
    # as in their coordinate instead of refusing the file.
    # Scalars too (a height coordinate): one number, and VirtualiZarr cannot append next to
    # a stored scalar reference (it compares dimension names () with None).
    extra = [order_by] if order_by is not None and order_by in ds.variables else []
    extra += [str(k) for k, v in ds.variables.items() if v.ndim == 0]
    for var in list(ds.variables.values()):
        if not is_virtual(var) and is_time_units(var.attrs.get("units")):
            extra += [str(var.attrs[k]) for k in ("bounds", "climatology") if k in var.attrs]
    extra = [n for n in dict.fromkeys(extra) if n in ds.variables and is_virtual(ds[n].variable)]
    if extra:
        # Keep the default (index) coordinates loaded.
        loaded = [str(k) for k, v in ds.variables.items() if not is_virtual(v)]
        ds = manifest_store.to_virtual_dataset(
            loadable_variables=[*loaded, *extra], decode_times=False
        )
    ds.encoding["source"] = url
    # Loaded coordinates are lazily indexed: read them now, on the worker, so that the
    # coordinator never touches the file again.
    for var in ds.variables.values():
        if not is_virtual(var):
            var.load()
            if "_FillValue" not in var.encoding and "_FillValue" not in var.attrs:
                # Stored as the source has it: xarray would give floats a NaN fill value.
                var.encoding["_FillValue"] = None
    out: xr.Dataset = ds
    return out


def open_xarray(
    url: str,
    fmt: str,
    source: Any,
    engine: str,
    *,
    chunks: Mapping[str, int] | None,
    raw: bool = False,
    **kwargs: Any,
) -> xr.Dataset:
    """``xr.open_dataset(source, engine=...)`` with times undecoded, Dask chunks ``chunks``
    (``None``: no Dask), and values raw (``_FillValue``/``scale_factor`` as attributes) when
    ``raw``.

    Raises
    ------
    SourceError
        The file cannot be opened.
    """
    opened: xr.Dataset | None = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=xr.SerializationWarning)
            # Splitting stored chunks is deliberate: it aligns reads with the target grid.
            warnings.filterwarnings("ignore", message="The specified chunks separate")
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            ds = opened = xr.open_dataset(
                source,
                engine=engine,
                # Chunked below: decoding removes dimensions the grid may name (the string
                # length of netCDF char arrays), which xarray refuses as chunk keys.
                chunks=None if chunks or raw else {},
                decode_times=False,
                mask_and_scale=not raw,
                cache=False,
                **kwargs,
            )
            if chunks:
                # A token of this open: without one, Dask names each variable by pickling its
                # lazily indexed data, and unpickling it (to check the pickle) reopens a file
                # given as a file object (xarray's PickleableFileManager opens on unpickle):
                # ~50 requests per variable for a netCDF4 file on object storage.
                ds = ds.chunk(
                    {d: n for d, n in chunks.items() if d in ds.dims}, token=uuid.uuid4().hex
                )
            for name, var in ds.variables.items():
                if var.dtype.kind == "U" and name not in ds.indexes:
                    # netCDF strings are variable-length (h5netcdf gives them a fixed width):
                    # as objects, xarray stores them as Zarr variable-length strings, which
                    # later files with longer strings append to.
                    ds[name] = var.astype(object)
                    ds[name].encoding = {k: v for k, v in var.encoding.items() if k != "dtype"}
    except IcepipeError:
        _close_opened(opened)
        raise
    except Exception as exc:
        _close_opened(opened)
        raise SourceError(
            f"{url}: cannot be opened as {fmt} ({short_message(exc)}); replace it, or remove it "
            "from source.urls",
            url=url,
        ) from exc
    assert opened is not None
    return carry_close(ds, opened)


def carry_close(ds: xr.Dataset, opened: xr.Dataset) -> xr.Dataset:
    """``ds``, derived from ``opened``, closing ``opened``'s files when closed.

    Most xarray operations (``chunk``, selection, ``copy``) return a dataset that forgets how
    to close the files it reads: the caller must be able to close them in its own thread (the
    C libraries under netCDF and HDF5 are not thread-safe, and a file manager dropped by
    another thread -- the Dask client's event loop releasing a sent graph -- closes its file
    there)."""
    if ds is not opened:
        ds.set_close(opened.close)
    return ds


def _close_opened(opened: xr.Dataset | None) -> None:
    if opened is not None:
        opened.close()


def load_for_schema(ds: xr.Dataset, order_by: str | None) -> xr.Dataset:
    """Read what a schema needs of a plainly opened file (indexes, scalars, ``order_by``);
    the data stays in the file."""
    for name, var in ds.variables.items():
        if name in ds.indexes or var.ndim == 0 or name == order_by:
            var.load()
    return ds


class XarrayOpens:
    """``open_native`` and ``open_plain`` for a reader whose files xarray opens itself (netCDF3,
    netCDF4): the reader gives :meth:`open_dataset`, one xarray open of a file."""

    def open_dataset(
        self, url: str, options: ScanOptions, *, chunks: Mapping[str, int] | None, raw: bool
    ) -> xr.Dataset:
        """``url`` through :func:`open_xarray`, values ``raw`` or decoded.

        Raises
        ------
        SourceError
            The file cannot be opened.
        """
        raise NotImplementedError

    def open_native(
        self, url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
    ) -> xr.Dataset:
        return self.open_dataset(url, options, chunks=chunks, raw=False)

    def open_plain(self, url: str, options: ScanOptions) -> xr.Dataset | None:
        try:
            ds = self.open_dataset(url, options, chunks=None, raw=True)
        except IcepipeError:
            return None
        return load_for_schema(ds, options.order_by)
