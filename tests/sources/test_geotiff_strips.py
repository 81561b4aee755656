"""GeoTIFFs in strips that do not divide the image height: libtiff and GDAL store the last strip
with only the rows left, which a regular Zarr grid decodes at the full strip shape. icepipe's
``icepipe.short_strip`` codec pads that one strip, so such files are ingested virtually; the
values equal rasterio's, for every layout and codec, and for real files."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

import icepipe
from icepipe.codecs import ShortStripCodec
from icepipe.sources import ScanOptions
from icepipe.sources.formats.tiff_refs import tiff_store
from tests.sources.test_geotiff import _pipeline, _rioxarray, write_tiff

SHAPE = (23, 17)  # write_tiff's strips hold 10 rows: 10, 10 and a short 3

LAYOUTS = {
    "deflate-pred2-pixel": dict(dtype="uint16", bands=3, predictor=2),
    "lzw-int16": dict(dtype="int16", bands=1, compress="lzw", nodata=-9999),
    "raw-band-interleaved": dict(dtype="uint8", bands=2, compress=None, interleave="band"),
    "raw-pixel": dict(dtype="uint8", bands=2, compress=None),
    "deflate-pred3-float32": dict(dtype="float32", bands=1, predictor=3),
    "zstd-float64": dict(dtype="float64", bands=1, compress="zstd"),
}


def _through_references(url: str, **options: Any) -> np.ndarray:
    """The image read through the references a virtual ingest stores (zarr decoding them)."""
    opts = ScanOptions(format="geotiff", concat_dim="band", **options)
    ds = xr.open_zarr(tiff_store(url, opts), consolidated=False, zarr_format=3, chunks=None)
    return np.asarray(ds["image"].values)


def _short_strip_codecs(url: str) -> list[Any]:
    arr = zarr.open_array(tiff_store(url, ScanOptions(format="geotiff")), path="image")
    return [c for c in arr.metadata.codecs if isinstance(c, ShortStripCodec)]


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_short_strips_read_through_references_as_rasterio(tmp_path: Path, layout: str) -> None:
    path = write_tiff(tmp_path / "s.tif", tiled=False, shape=SHAPE, **LAYOUTS[layout])
    with rasterio.open(path) as ds:
        assert ds.block_shapes[0] == (10, SHAPE[1])
        truth = ds.read()
    np.testing.assert_array_equal(_through_references(f"file://{path}"), truth)
    assert _short_strip_codecs(f"file://{path}") == [ShortStripCodec(rows=3, of=10)]


@pytest.mark.parametrize("name", ["L7_ETMs.tif", "olinda_dem_utm25s.tif"])
def test_real_files_in_short_strips(sample_data: Path, name: str) -> None:
    """r-cran-stars' files in strips that do not divide their height."""
    path = sample_data / "geotiff/stars" / name
    with rasterio.open(path) as ds:
        assert ds.height % ds.block_shapes[0][0] != 0
        truth = ds.read()
    np.testing.assert_array_equal(_through_references(f"file://{path}"), truth)


def test_dividing_strips_and_tiles_get_no_padding_codec(tmp_path: Path) -> None:
    strips = write_tiff(tmp_path / "d.tif", tiled=False, shape=(20, 17), bands=1)
    tiles = write_tiff(tmp_path / "t.tif", shape=(40, 32), bands=1)  # 32x32 tiles, partial
    for path in (strips, tiles):
        assert _short_strip_codecs(f"file://{path}") == []


def test_a_series_in_short_strips_ingests_virtually_and_appends(
    tmp_path: Path, client: Any
) -> None:
    layout = dict(tiled=False, shape=SHAPE, predictor=2, nodata=0)
    paths = [write_tiff(tmp_path / "t_20240101.tif", seed=1, **layout)]
    p = _pipeline(tmp_path, str(tmp_path / "t_*.tif"), "virtual", time_from_filename=r"_(\d{8})")
    assert icepipe.run(p, client=client).status == "committed"
    paths.append(write_tiff(tmp_path / "t_20240102.tif", seed=2, **layout))
    assert len(icepipe.run(p, client=client).files_new) == 1
    stored = icepipe.open_dataset(p.target.repo)
    assert stored["band_data"].encoding["chunks"][-2:] == (10, SHAPE[1])  # one per strip
    ref = _rioxarray(paths, "time")
    np.testing.assert_array_equal(stored["band_data"].values, ref.values.astype("float32"))


def test_a_damaged_strip_is_an_error_not_zeros() -> None:
    """Only a strip of exactly the short length is padded."""
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.dtype import UInt8
    from zarr.core.sync import sync

    codec = ShortStripCodec(rows=3, of=10)
    spec = ArraySpec(
        shape=(10, 4),
        dtype=UInt8(),
        fill_value=0,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )
    buffer = default_buffer_prototype().buffer
    short = sync(codec._decode_single(buffer.from_bytes(b"\x07" * 12), spec))
    assert short.to_bytes() == b"\x07" * 12 + b"\x00" * 28
    whole = buffer.from_bytes(bytes(range(40)))
    assert sync(codec._decode_single(whole, spec)).to_bytes() == bytes(range(40))
    with pytest.raises(ValueError, match="decodes to 13 bytes, neither a whole strip"):
        sync(codec._decode_single(buffer.from_bytes(b"\x07" * 13), spec))
    assert ShortStripCodec.from_dict(codec.to_dict()) == codec
    with pytest.raises(ValueError, match="rows=10 must be between"):
        ShortStripCodec(rows=10, of=10)
    # Readers find the codec without importing icepipe: zarr loads the entry point.
    assert "icepipe.short_strip" in {e.name for e in entry_points(group="zarr.codecs")}
