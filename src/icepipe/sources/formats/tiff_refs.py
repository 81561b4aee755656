"""Virtual references to the tiles (or strips) of a GeoTIFF image, from ``virtual-tiff``.

Each tile becomes one chunk, referenced where it lies in the file and decoded by Zarr codecs:
the TIFF's compression (``numcodecs.zlib``, ``imagecodecs_*`` codecs registered by
``virtual-tiff``'s entry points), its predictor (``HorizontalDeltaCodec``, registered when
``virtual_tiff`` is imported, which :func:`icepipe.open_dataset` does) and the layout of the
samples. The array is always ``(band, y, x)``, as rioxarray reads the file.

virtual-tiff 0.5 builds pixel-interleaved images (the GDAL default for several bands) with a
codec of its own (``ChunkyCodec``) that cannot be created with zarr 3.4 (it calls zarr's
``Endian`` enum, now a deprecated shim). The same bytes are exactly a ``transpose`` to
``(y, x, band)`` followed by zarr's ``bytes`` codec: icepipe stores that instead, so these
chunks need no codec of virtual-tiff's to be read.

Strips that do not divide the height (virtual-tiff refuses them) are built too: libtiff and
GDAL store the last strip with only the rows left, which a regular grid would decode at the
full strip shape; icepipe's ``icepipe.short_strip`` codec pads that one strip (and only a
strip of exactly that length) before the other codecs decode it.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.storage import WrapperStore

from icepipe.errors import SourceError
from icepipe.storage import reference_url, scheme_of

if TYPE_CHECKING:
    from icepipe.sources.formats.base import ScanOptions
    from icepipe.sources.formats.geotiff import TiffGrid

__all__ = ["add_time_axis", "tiff_store", "virtual_image"]


def virtual_image(url: str, grid: TiffGrid, options: ScanOptions, registry: Any) -> Any:
    """The image of ``url`` at ``source.geotiff.overview`` as a ``(band, y, x)``
    ``ManifestArray``.

    Raises
    ------
    SourceError
        virtual-tiff cannot express the image's layout as Zarr chunks (JPEG tables,
        sub-IFDs ...): ``mode: native`` reads it.
    """
    from virtual_tiff import VirtualTIFF

    _allow_pixel_interleaved()
    _allow_short_strips()
    ifd = _ifd_of_overview(url, options)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Imagecodecs codecs are not in the Zarr")
            store = VirtualTIFF(ifd=ifd)(url=reference_url(url), registry=registry)
            array = store.to_virtual_dataset()[str(ifd)].data
    except (ValueError, NotImplementedError) as exc:
        raise _not_virtual(url, options, exc) from exc
    array = _standard_codecs(array)
    array = _padded_last_strip(url, options, ifd, array)
    if array.ndim == 2:
        array = _leading_axis(array, "band")
    elif not array.metadata.dimension_names:
        array = _with_metadata(array)  # named: xarray reads the Zarr view by these names
    if tuple(array.shape) != (grid.count, grid.height, grid.width):
        raise SourceError(
            f"{url}: virtual-tiff reads image {ifd} as {tuple(array.shape)} but GDAL as "
            f"{(grid.count, grid.height, grid.width)}; use mode: native",
            url=url,
        )
    return array


def _not_virtual(url: str, options: ScanOptions, exc: BaseException) -> SourceError:
    """The error for an image virtual-tiff cannot express as Zarr chunks, with the way out:
    ``mode: native`` (local files; on object storage native reads go through the same
    references), or a rewrite as a COG."""
    way = (
        "copy it to a local disk and ingest it with mode: native (native reads of files on "
        "object storage go through the same references)"
        if scheme_of(url) != "file" or options.mode == "native"
        else "use mode: native"
    )
    return SourceError(
        f"{url}: its layout cannot be expressed as virtual references ({exc}); {way}, or "
        "rewrite it as a tiled Cloud-Optimized GeoTIFF (gdal_translate -of COG)",
        url=url,
    )


def _allow_short_strips() -> None:
    """Let virtual-tiff build images whose strips do not divide the height (it refuses them
    because a regular grid cannot decode the short last strip): :func:`_padded_last_strip`
    adds the codec that makes them decode."""
    import virtual_tiff.parser

    parser: Any = virtual_tiff.parser
    parser.check_no_partial_strips = _no_check


def _no_check(**_: Any) -> None:
    return None


def _padded_last_strip(url: str, options: ScanOptions, ifd: int, array: Any) -> Any:
    """``array`` with :class:`~icepipe.codecs.ShortStripCodec` after its array-to-bytes codec
    when the image is in strips that do not divide its height (libtiff and GDAL write the
    last strip with only the rows left; a padded last strip passes the codec unchanged)."""
    y, x = array.ndim - 2, array.ndim - 1
    rows, height = int(array.metadata.chunks[y]), int(array.shape[y])
    if height % rows == 0 or array.metadata.chunks[x] != array.shape[x]:
        return array  # strips dividing the height, or tiles (stored whole, padded)
    if _short_strips(url, options, ifd) != (rows, height):
        return array
    from zarr.abc.codec import ArrayBytesCodec

    from icepipe.codecs import ShortStripCodec

    codecs = list(array.metadata.codecs)
    at = next(i for i, c in enumerate(codecs) if isinstance(c, ArrayBytesCodec)) + 1
    codecs.insert(at, ShortStripCodec(rows=height % rows, of=rows))
    return _with_metadata(array, codecs=codecs)


def _short_strips(url: str, options: ScanOptions, ifd: int) -> tuple[int, int] | None:
    """``(rows per strip, height)`` of image ``ifd`` when it is in strips that do not divide
    its height, else ``None``."""
    image = _open_tiff(url, options).ifds[ifd]
    rows, height = int(image.rows_per_strip or 0), int(image.image_height)
    if image.tile_height or not rows or rows >= height or height % rows == 0:
        return None
    return rows, height


def _open_tiff(url: str, options: ScanOptions) -> Any:
    """The file's TIFF header, opened with async-tiff as virtual-tiff opens it."""
    from async_tiff import TIFF
    from zarr.core.sync import sync

    from icepipe.sources.stores import registry_for

    store, path = registry_for(url, options.storage).resolve(reference_url(url))

    async def _open() -> Any:  # inside zarr's event loop, as virtual-tiff does
        return await TIFF.open(path, store=store)

    return sync(_open())


def _ifd_of_overview(url: str, options: ScanOptions) -> int:
    """The IFD holding overview ``source.geotiff.overview``: the full-resolution image is the
    first; overviews follow it (GDAL and COG layout), masks are skipped."""
    level = options.geotiff.overview if options.geotiff else 0
    if level == 0:
        return 0
    tiff = _open_tiff(url, options)
    reduced = [i for i, d in enumerate(tiff.ifds) if (d.new_subfile_type or 0) & 1]
    reduced = [i for i in reduced if not (tiff.ifds[i].new_subfile_type or 0) & 4]
    if level > len(reduced):
        raise SourceError(
            f"{url}: has {len(reduced)} overview(s) but source.geotiff.overview is {level}",
            url=url,
        )
    return int(reduced[level - 1])


def _allow_pixel_interleaved() -> None:
    """Make virtual-tiff build pixel-interleaved images with zarr 3.4 (see the module doc):
    its ``ChunkyCodec`` is replaced, in its parser only, by :class:`_Interleaved`, which
    :func:`_standard_codecs` then rewrites. Nothing changes where ``ChunkyCodec`` works."""
    import virtual_tiff.parser

    parser: Any = virtual_tiff.parser

    if parser.ChunkyCodec is _interleaved_class():
        return
    try:
        parser.ChunkyCodec(endian="little")
    except TypeError:
        parser.ChunkyCodec = _interleaved_class()


def _interleaved_class() -> Any:
    global _INTERLEAVED
    if _INTERLEAVED is None:
        from zarr.codecs import BytesCodec

        class _Interleaved(BytesCodec):
            """Stands for virtual-tiff's ``ChunkyCodec`` until rewritten."""

        _INTERLEAVED = _Interleaved
    return _INTERLEAVED


_INTERLEAVED: Any = None

#: The dimensions of virtual-tiff's arrays, which it names but VirtualiZarr does not keep.
_DIMS = {2: ("y", "x"), 3: ("band", "y", "x")}


def _standard_codecs(array: Any) -> Any:
    """``array`` with virtual-tiff's pixel-interleaved pair (``transpose(0, 2, 1)`` then
    ``ChunkyCodec``, which reads the bytes in Fortran order) written as Zarr's own
    ``transpose(1, 2, 0)`` then ``bytes``: both read ``(y, x, band)``-ordered bytes.

    Zarr re-parses the codecs of new metadata from their JSON, so the stand-in of
    :func:`_allow_pixel_interleaved` arrives as a plain ``bytes`` codec: virtual-tiff emits a
    ``transpose`` for this layout only, so a ``transpose(0, 2, 1)`` before ``bytes`` is it.
    """
    from zarr.codecs import BytesCodec, TransposeCodec

    codecs = list(array.metadata.codecs)
    out: list[Any] = []
    for codec in codecs:
        chunky = type(codec).__name__ == "ChunkyCodec" or isinstance(codec, BytesCodec)
        after = out[-1] if out else None
        if chunky and isinstance(after, TransposeCodec) and tuple(after.order) == (0, 2, 1):
            out[-1] = TransposeCodec(order=(1, 2, 0))
            endian = getattr(codec, "endian", None)
            out.append(BytesCodec(endian=getattr(endian, "value", endian) or "little"))
        else:
            out.append(codec)
    if out == codecs:
        return array
    return _with_metadata(array, codecs=out)


def _leading_axis(array: Any, name: str = "band") -> Any:
    """``array`` with a new first axis ``name`` of length 1: one chunk along it, the same
    references (a ``(y, x)`` image as ``(band, y, x)``; a file as one ``time`` step)."""
    from virtualizarr.manifests import ChunkManifest
    from zarr.codecs import TransposeCodec

    manifest = array.manifest
    refs = ChunkManifest.from_arrays(
        paths=manifest._paths[np.newaxis],
        offsets=manifest._offsets[np.newaxis],
        lengths=manifest._lengths[np.newaxis],
        validate_paths=False,
    )
    # A transpose keeps the new axis first and moves the others as before.
    codecs = [
        TransposeCodec(order=(0, *(int(i) + 1 for i in c.order)))
        if isinstance(c, TransposeCodec)
        else c
        for c in array.metadata.codecs
    ]
    names = array.metadata.dimension_names or _DIMS[array.ndim]
    return _with_metadata(
        array,
        manifest=refs,
        shape=(1, *array.shape),
        chunks=(1, *array.metadata.chunks),
        codecs=codecs,
        dimension_names=(name, *names),
    )


def add_time_axis(array: Any) -> Any:
    """``array`` as one step of ``time`` (references and codecs adjusted)."""
    return _leading_axis(array, "time")


def _with_metadata(array: Any, *, manifest: Any = None, **changes: Any) -> Any:
    """``array`` with its Zarr metadata rebuilt with ``changes`` (``shape``, ``chunks``,
    ``codecs``, ``dimension_names``); attributes are left to the dataset built around it."""
    from virtualizarr.manifests import ManifestArray
    from zarr.core.metadata.v3 import ArrayV3Metadata

    m = array.metadata
    metadata = ArrayV3Metadata(
        shape=changes.get("shape", m.shape),
        data_type=m.data_type,
        chunk_grid={
            "name": "regular",
            "configuration": {"chunk_shape": changes.get("chunks", m.chunks)},
        },
        chunk_key_encoding={"name": "default"},
        fill_value=m.fill_value,
        codecs=changes.get("codecs", m.codecs),
        attributes={},
        dimension_names=changes.get("dimension_names", m.dimension_names or _DIMS[len(m.shape)]),
    )
    return ManifestArray(metadata=metadata, chunkmanifest=manifest or array.manifest)


def tiff_store(url: str, options: ScanOptions) -> Any:
    """A read-only Zarr view of a GeoTIFF on object storage (its image as the array
    ``image``, through the same references virtual ingests store), that pickles as
    ``(url, options)``: native reads of remote files, on whichever worker reads, with its own
    credentials (GDAL's file-object openers do not follow Dask's threads)."""
    return _TiffStore(url, options)


@functools.lru_cache(maxsize=32)
def _parsed(url: str, options: ScanOptions) -> Any:
    # One header parse per file and process, however many tasks unpickle the view.
    from virtualizarr.manifests import ManifestGroup, ManifestStore

    from icepipe.sources.formats.geotiff import read_grid
    from icepipe.sources.stores import registry_for

    registry = registry_for(url, options.storage)
    image = virtual_image(url, read_grid(url, options), options, registry)
    return ManifestStore(registry=registry, group=ManifestGroup(arrays={"image": image}))


class _TiffStore(WrapperStore):  # type: ignore[type-arg]
    def __init__(self, url: str, options: ScanOptions) -> None:
        super().__init__(_parsed(url, options))
        self._icepipe_location = (url, options)

    def __reduce__(self) -> Any:
        return (_TiffStore, self._icepipe_location)
