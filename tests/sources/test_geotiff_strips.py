"""GeoTIFFs in strips that do not divide the image height (the last strip is short).

Virtual references are refused, naming the strips and the ways out; native ingests read them
as rioxarray does. The tests also pin why no virtual route is built: on a rectilinear grid
along ``y`` the same references read back equal to rasterio, except with the floating-point
predictor, whose codec is configured with the full strip shape (the write side is the other
reason: see docs/geotiff.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr

from icepipe.errors import SourceError
from icepipe.sources import ScanOptions, list_sources, scan_file
from tests.sources.test_geotiff import write_tiff

SHAPE = (23, 17)  # write_tiff's strips hold 10 rows: 10, 10 and a short 3


def _scan(path: Path, mode: str) -> Any:
    (src,) = list_sources([f"file://{path}"], is_glob=False)
    return scan_file(src, ScanOptions(format="geotiff", concat_dim="band", mode=mode))


def test_the_virtual_scan_names_the_strips_and_the_ways_out(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "s.tif", tiled=False, shape=SHAPE, bands=1)
    with pytest.raises(SourceError) as info:
        _scan(path, "virtual")
    message = str(info.value)
    assert f"file://{path}: is stored in strips of 10 rows, which do not divide its 23" in message
    assert "its last strip holds 3" in message
    assert "ingest it with mode: native" in message
    assert "gdal_translate -of COG" in message and "-co BLOCKYSIZE=1 " in message
    assert info.value.exit_code == 3


def test_the_native_scan_reads_short_strips_as_rioxarray(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "s.tif", tiled=False, shape=SHAPE, predictor=2)
    scanned = _scan(path, "native")
    expected = rioxarray.open_rasterio(path, mask_and_scale=False).values
    np.testing.assert_array_equal(scanned.dataset["band_data"].values, expected)


@pytest.mark.parametrize(
    ("layout", "reads"),
    [
        (dict(dtype="uint16", bands=3, predictor=2), True),  # deflate, pixel-interleaved
        (dict(dtype="int16", bands=1, compress="lzw"), True),
        (dict(dtype="uint8", bands=2, compress=None, interleave="band"), True),
        (dict(dtype="float32", bands=1, predictor=3), False),
    ],
    ids=["deflate-pred2-pixel", "lzw", "raw-band", "deflate-pred3"],
)
def test_short_strips_on_a_rectilinear_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: dict[str, Any], reads: bool
) -> None:
    """The references virtual-tiff would make (its partial-strip check lifted), written to
    Icechunk as VirtualiZarr writes them, then given a rectilinear grid along y (10, 10, 3)."""
    import icechunk
    import virtual_tiff.parser
    import zarr
    from virtual_tiff import VirtualTIFF

    from icepipe.repository.grids import rectilinear_enabled, set_chunk_grid
    from icepipe.sources.formats.tiff_refs import _allow_pixel_interleaved, _standard_codecs
    from icepipe.sources.stores import registry_for
    from icepipe.storage import reference_url

    path = write_tiff(tmp_path / "s.tif", tiled=False, shape=SHAPE, **layout)
    with rasterio.open(path) as ds:
        truth = ds.read()
    monkeypatch.setattr(virtual_tiff.parser, "check_no_partial_strips", lambda **_: None)
    _allow_pixel_interleaved()
    url = f"file://{path}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = VirtualTIFF(ifd=0)(url=reference_url(url), registry=registry_for(url))
        array = _standard_codecs(parsed.to_virtual_dataset()["0"].data)
    prefix = f"file://{tmp_path}/"
    container = icechunk.VirtualChunkContainer(
        prefix, icechunk.local_filesystem_store(str(tmp_path))
    )
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    config = icechunk.RepositoryConfig(virtual_chunk_containers={prefix: container})
    icechunk.Repository.create(storage, config=config)
    repo = icechunk.Repository.open(
        storage, authorize_virtual_chunk_access=icechunk.containers_credentials({prefix: None})
    )
    session = repo.writable_session("main")
    dims = ("band", "y", "x")[-array.ndim :]
    xr.Dataset({"img": (dims, array)}).vz.to_icechunk(session.store)
    with pytest.raises(ValueError, match="cannot reshape"):  # the regular grid: never silent
        zarr.open_array(session.store, path="img")[...]
    grid = list(array.metadata.chunks)
    grid[dims.index("y")] = (10, 10, 3)
    with rectilinear_enabled():
        set_chunk_grid(session.store, "img", shape=array.shape, grid=tuple(grid))
        if not reads:
            with pytest.raises(
                ValueError, match=r"cannot reshape array of size 51 into shape \(10, ?17\)"
            ):
                zarr.open_array(session.store, path="img")[...]
            return
        got = zarr.open_array(session.store, path="img")[...]
    np.testing.assert_array_equal(got.reshape(truth.shape), truth)
