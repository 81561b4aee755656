"""GeoTIFF and Cloud-Optimized GeoTIFF files: virtual references through VirtualiZarr's
``virtual-tiff`` parser (one chunk per tile, or per strip), lazy opens through rioxarray.

Both routes give the same dataset, the one rioxarray gives (``mask_and_scale=False``): one
variable (``source.geotiff.variable``, ``band_data`` by default) along ``(band, y, x)``, ``x``
and ``y`` the pixel centres from the GeoTIFF transform, ``band`` numbered from 1, and the CRS
in a CF grid-mapping variable ``spatial_ref`` (``crs_wkt``, ``GeoTransform`` and the CF
parameters, as rioxarray writes them). Files are stacked along ``time`` (taken from each file
name or a TIFF tag) or along ``band`` (single-band files, numbered from their names).

The header (CRS, transform, nodata, tags) is read with rasterio, which bundles GDAL. Only the
full-resolution image is read unless ``source.geotiff.overview`` asks for an overview.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from icepipe.cf import grid_of
from icepipe.errors import SourceError, short_message
from icepipe.model import SourceFile
from icepipe.sources.formats.base import Opened, ScanOptions
from icepipe.sources.formats.common import is_virtual
from icepipe.sources.stores import RemoteFile, registry_for
from icepipe.spec import GeoTiffSpec
from icepipe.storage import scheme_of

__all__ = ["TIFF_MAGIC", "GeoTiffReader", "TiffGrid", "read_grid"]

#: Classic TIFF and BigTIFF, little- and big-endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: How times are stored: whole seconds since the epoch, exact for any file-name timestamp.
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
TIME_CALENDAR = "proleptic_gregorian"


@dataclass(frozen=True)
class TiffGrid:
    """What the header of one GeoTIFF image says (picklable; no pixel data)."""

    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs_wkt: str | None
    #: The affine transform, in rasterio's order ``(a, b, c, d, e, f)``.
    transform: tuple[float, float, float, float, float, float]
    tags: tuple[tuple[str, str], ...]
    overviews: int

    def coords(self, url: str) -> dict[str, np.ndarray[Any, Any]]:
        """``x`` and ``y`` at the pixel centres, as rioxarray computes them.

        Raises
        ------
        SourceError
            The image is rotated or sheared: its pixels have no 1-D ``x``/``y`` coordinates.
        """
        a, b, c, d, e, f = self.transform
        if b or d:
            raise SourceError(
                f"{url}: its geotransform is rotated or sheared ({self.transform}), so its "
                "pixels have no 1-D x/y coordinates; warp it to a north-up grid first "
                "(gdalwarp), or remove it from source.urls",
                url=url,
            )
        from affine import Affine

        # rioxarray's arithmetic, step by step, so that the values are equal to the last bit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)  # affine 3: prefers @
            centre: Any = Affine(a, b, c, d, e, f) * Affine.translation(0.5, 0.5)
            x, _ = centre * (np.arange(self.width), np.zeros(self.width))
            _, y = centre * (np.zeros(self.height), np.arange(self.height))
        return {"x": np.asarray(x, dtype="float64"), "y": np.asarray(y, dtype="float64")}


@contextmanager
def _rasterio_open(url: str, options: ScanOptions) -> Iterator[Any]:
    """``rasterio.open`` of a local path, or of an object through a file object (GDAL never
    sees credentials: obstore reads with this process's)."""
    import rasterio

    try:
        if scheme_of(url) == "file":
            ds = rasterio.open(url.removeprefix("file://"))
        else:
            ds = rasterio.open(RemoteFile(url, options.storage))
    except Exception as exc:
        raise SourceError(
            f"{url}: cannot be opened as a GeoTIFF ({short_message(exc)}); the file may be "
            "truncated or corrupt: replace it, or remove it from source.urls",
            url=url,
        ) from exc
    with ds:
        yield ds


def read_grid(url: str, options: ScanOptions) -> TiffGrid:
    """The header of ``url``'s image at ``source.geotiff.overview`` (0: full resolution).

    Raises
    ------
    SourceError
        The file cannot be opened, or has no such overview.
    """
    spec = _spec(options)
    with _rasterio_open(url, options) as ds:
        levels = ds.overviews(1) if ds.count else []
        if spec.overview > len(levels):
            raise SourceError(
                f"{url}: has {len(levels)} overview(s) but source.geotiff.overview is "
                f"{spec.overview}; lower it, or remove the file",
                url=url,
            )
        dtypes = set(ds.dtypes)
        if len(dtypes) != 1:
            raise SourceError(
                f"{url}: its bands have different data types ({', '.join(sorted(dtypes))}), "
                "which one array cannot hold; split it into one file per data type",
                url=url,
            )
        transform = ds.transform
        width, height = ds.width, ds.height
        if spec.overview:
            factor = levels[spec.overview - 1]
            width, height = -(-ds.width // factor), -(-ds.height // factor)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PendingDeprecationWarning)  # affine 3: @
                transform = transform * transform.scale(ds.width / width, ds.height / height)
        return TiffGrid(
            width=int(width),
            height=int(height),
            count=int(ds.count),
            dtype=str(ds.dtypes[0]),
            nodata=None if ds.nodata is None else float(ds.nodata),
            crs_wkt=ds.crs.to_wkt() if ds.crs else None,
            transform=tuple(float(v) for v in transform)[:6],  # type: ignore[arg-type]
            tags=tuple(sorted((str(k), str(v)) for k, v in ds.tags().items())),
            overviews=len(levels),
        )


def _spec(options: ScanOptions) -> GeoTiffSpec:
    return options.geotiff or GeoTiffSpec()


class GeoTiffReader:
    """GeoTIFF / COG files (classic TIFF and BigTIFF); they hold no groups."""

    name: ClassVar[str] = "geotiff"
    has_groups: ClassVar[bool] = False
    # rioxarray reads what the virtual parser refuses (JPEG tables, sub-IFDs, ...).
    plain_fallback: ClassVar[bool] = True

    def detect(self, head: bytes, url: str) -> bool:
        return head[:4] in TIFF_MAGIC

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        url = source.url
        _no_group(url, options)
        grid = read_grid(url, options)
        if options.mode == "native":
            # Rewritten anyway: the file as rioxarray reads it (every layout, no references).
            # Lazily (Dask): adding the time axis to a plain lazy array would read it whole.
            ds = self._dataset(url, grid, None, options, chunks={})
            return [Opened("", ds, self.name)]
        from icepipe.sources.formats.tiff_refs import virtual_image

        data = virtual_image(url, grid, options, registry_for(url, options.storage))
        return [Opened("", self._dataset(url, grid, data, options, chunks=None), self.name)]

    def open_native(
        self, url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
    ) -> xr.Dataset:
        _no_group(url, options)
        return self._dataset(url, read_grid(url, options), None, options, chunks=chunks)

    def open_plain(self, url: str, options: ScanOptions) -> xr.Dataset | None:
        try:
            # Dask: a plain lazy array would be read whole when the time axis is added.
            ds = self.open_native(url, self.name, options, {})
        except SourceError:
            return None
        for name, var in ds.variables.items():
            if name != _spec(options).variable:
                var.load()
        return ds

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        return []

    def _dataset(
        self,
        url: str,
        grid: TiffGrid,
        data: Any,
        options: ScanOptions,
        *,
        chunks: Mapping[str, int] | None,
    ) -> xr.Dataset:
        """The file's dataset around ``data`` (virtual references), or around rioxarray's
        lazy read when ``data`` is None."""
        spec = _spec(options)
        coords = grid.coords(url)
        if data is None:
            data = _native_data(url, options, chunks)
        attrs: dict[str, Any] = {"grid_mapping": "spatial_ref"}
        if grid.nodata is not None and np.isfinite(grid.nodata):
            attrs["_FillValue"] = np.array(grid.nodata).astype(grid.dtype)[()]
        ds = xr.Dataset(
            {spec.variable: (("band", "y", "x"), data, attrs)},
            coords={
                "band": ("band", np.arange(1, grid.count + 1, dtype="int64")),
                "y": ("y", coords["y"]),
                "x": ("x", coords["x"]),
                "spatial_ref": ((), np.int64(0), _spatial_ref_attrs(grid)),
            },
        )
        ds = _stacked(ds, url, grid, options)
        for name, var in ds.variables.items():
            if name != spec.variable:
                # Stored as the file has them: xarray would give float coordinates a NaN fill.
                var.encoding["_FillValue"] = None
        ds.encoding["source"] = url
        # Compared between the files of a series, and with the stored grid, by the plan
        # (FileSchema.grid), in the form the repository's spatial_ref gives too.
        ds.encoding["grid"] = grid_of(ds["spatial_ref"].attrs, grid.width, grid.height)
        return ds


def _no_group(url: str, options: ScanOptions) -> None:
    if options.group is not None:
        raise SourceError(
            f"{url}: is a GeoTIFF, which has no groups, but source.group is "
            f"{options.group!r}; remove source.group",
            url=url,
        )


def _native_data(url: str, options: ScanOptions, chunks: Mapping[str, int] | None) -> Any:
    """rioxarray's lazy read of the image (Dask when ``chunks``), raw values; on object
    storage, the Zarr view of the image's references (:func:`tiff_refs.tiff_store`)."""
    spec = _spec(options)
    dask_chunks: Any = None
    if chunks is not None:
        dask_chunks = {d: n for d, n in chunks.items() if d in ("band", "y", "x")} or True
    try:
        if scheme_of(url) != "file":
            return _remote_data(url, options, dask_chunks)
        import rioxarray

        kwargs: dict[str, Any] = {}
        if spec.overview:
            kwargs["overview_level"] = spec.overview - 1
        da: Any = rioxarray.open_rasterio(
            url.removeprefix("file://"),
            chunks=dask_chunks,
            mask_and_scale=False,
            lock=False,
            cache=False,
            **kwargs,
        )
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(
            f"{url}: cannot be opened as a GeoTIFF ({short_message(exc)}); the file may be "
            "truncated or corrupt: replace it, or remove it from source.urls",
            url=url,
        ) from exc
    return da.variable.data


def _remote_data(url: str, options: ScanOptions, dask_chunks: Any) -> Any:
    """The image of a file on object storage through its references: GDAL's file-object
    openers live in one thread's context, while Dask reads chunks in others."""
    from icepipe.sources.formats.tiff_refs import tiff_store

    ds = xr.open_zarr(
        tiff_store(url, options),
        consolidated=False,
        zarr_format=3,
        chunks={} if dask_chunks is True else dask_chunks,
        mask_and_scale=False,
        decode_times=False,
    )
    return ds["image"].variable.data


def _spatial_ref_attrs(grid: TiffGrid) -> dict[str, Any]:
    """The CF grid mapping rioxarray writes: the CRS's CF parameters, ``crs_wkt``,
    ``spatial_ref`` (the same WKT, for GDAL) and ``GeoTransform``."""
    attrs: dict[str, Any] = {}
    if grid.crs_wkt:
        from pyproj import CRS

        crs = CRS.from_wkt(grid.crs_wkt)
        attrs.update(crs.to_cf())
        attrs["crs_wkt"] = grid.crs_wkt
        attrs["spatial_ref"] = grid.crs_wkt
    a, b, c, d, e, f = grid.transform
    attrs["GeoTransform"] = " ".join(repr(float(v)) for v in (c, a, b, f, d, e))
    return attrs


def _stacked(ds: xr.Dataset, url: str, grid: TiffGrid, options: ScanOptions) -> xr.Dataset:
    """``ds`` with the dimension files are stacked along: a ``time`` of one step (from the file
    name or a tag), or the single band numbered from the file name."""
    spec = _spec(options)
    if spec.band_from_filename:
        number = _from_name(url, spec.band_from_filename, "band_from_filename", "band")
        if grid.count != 1 or not number.isdigit():
            raise SourceError(
                f"{url}: source.geotiff.band_from_filename needs single-band files named with "
                f"a band number, but this file has {grid.count} band(s) and its name gives "
                f"{number!r}; fix the pattern, or split the file into one file per band",
                url=url,
            )
        ds = ds.assign_coords(band=("band", np.array([int(number)], dtype="int64")))
    if not (spec.time_from_filename or spec.time_from_tag):
        return ds
    seconds = _time_of(url, grid, spec)
    time = xr.Variable(
        ("time",),
        np.array([seconds], dtype="int64"),
        {"standard_name": "time", "units": TIME_UNITS, "calendar": TIME_CALENDAR},
    )
    name = spec.variable
    var = ds[name].variable
    if not is_virtual(var):
        return ds.expand_dims(time=1, axis=0).assign_coords(time=time)
    # xarray cannot add a dimension to references: the array gets its time axis itself.
    from icepipe.sources.formats.tiff_refs import add_time_axis

    stacked = xr.Variable(("time", *var.dims), add_time_axis(var.data), var.attrs, var.encoding)
    ds = ds.drop_vars(name).expand_dims(time=1).assign_coords(time=time)
    ds[name] = stacked
    return ds


def _from_name(url: str, pattern: str, key: str, group: str) -> str:
    """The text ``pattern`` captures in ``url``'s file name (its group ``group``, or its
    first group)."""
    name = url.rstrip("/").rpartition("/")[2]
    match = re.search(pattern, name)
    if match is None:
        raise SourceError(
            f"{url}: its name {name!r} does not match source.geotiff.{key} {pattern!r}; fix "
            "the pattern, or remove the file from source.urls",
            url=url,
        )
    return str(match.group(group) if group in match.re.groupindex else match.group(1))


def _time_of(url: str, grid: TiffGrid, spec: GeoTiffSpec) -> int:
    """Seconds since 1970 of the file's time (file name or tag)."""
    import pandas as pd

    if spec.time_from_filename:
        text = _from_name(url, spec.time_from_filename, "time_from_filename", "time")
        where = f"its name matched by source.geotiff.time_from_filename gives {text!r}"
        fmt = spec.time_format
    else:
        tags = dict(grid.tags)
        if spec.time_from_tag not in tags:
            raise SourceError(
                f"{url}: has no tag {spec.time_from_tag!r} for source.geotiff.time_from_tag "
                f"(tags: {', '.join(tags) or 'none'}); use time_from_filename, or fix the file",
                url=url,
            )
        text = tags[str(spec.time_from_tag)]
        where = f"its tag {spec.time_from_tag} is {text!r}"
        # TIFF's own DateTime tag is "YYYY:MM:DD HH:MM:SS".
        fmt = spec.time_format or (
            "%Y:%m:%d %H:%M:%S" if spec.time_from_tag == "TIFFTAG_DATETIME" else None
        )
    try:
        stamp = pd.to_datetime(text, format=fmt) if fmt else pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise SourceError(
            f"{url}: {where}, which is not a time ({short_message(exc)}); set "
            "source.geotiff.time_format (a strptime format such as '%Y%m%d')",
            url=url,
        ) from exc
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return int(stamp.value // 1_000_000_000)
