"""GeoTIFF / COG sources: virtual references and native reads equal rioxarray's reading of the
same files (values, x/y, CRS), stacked along time or band; the failures name the file."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from rasterio.transform import from_origin

import icepipe
from icepipe.errors import ConfigError, SchemaMismatchError, SourceError
from icepipe.sources import ScanOptions, list_sources, scan_file
from icepipe.sources.formats import detect_head
from icepipe.spec import GeoTiffSpec, pipeline_from_dict
from tests.conftest import S3Server

DAYS = ("20240101", "20240102", "20240103")


def write_tiff(
    path: Path,
    *,
    dtype: str = "uint16",
    bands: int = 3,
    compress: str | None = "deflate",
    tiled: bool = True,
    nodata: float | None = None,
    predictor: int | None = None,
    interleave: str = "pixel",
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 4600000.0),
    seed: int = 0,
    shape: tuple[int, int] = (100, 90),
) -> Path:
    """A GeoTIFF written by rasterio (GDAL): tiled 32x32 (a COG's layout) or in strips."""
    rng = np.random.default_rng(seed)
    data = (rng.random((bands, *shape)) * 200).astype(dtype)
    if nodata is not None:
        data[:, :3, :4] = nodata
    profile: dict[str, Any] = dict(
        driver="GTiff",
        height=shape[0],
        width=shape[1],
        count=bands,
        dtype=dtype,
        crs=crs,
        transform=from_origin(*origin, 30, 30),
        nodata=nodata,
        interleave=interleave,
    )
    if tiled:
        profile.update(tiled=True, blockxsize=32, blockysize=32)
    else:
        profile.update(blockysize=10)  # strips of 10 rows, dividing the height
    if compress:
        profile["compress"] = compress
    if predictor:
        profile["predictor"] = predictor
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


LAYOUTS = {
    "cog-deflate-pixel-pred2": dict(dtype="uint16", bands=3, predictor=2, nodata=0),
    "cog-lzw-1band-int16": dict(dtype="int16", bands=1, compress="lzw", nodata=-9999),
    "cog-none-uint8": dict(dtype="uint8", bands=2, compress=None),
    "cog-float32-pred3-band": dict(dtype="float32", bands=2, predictor=3, interleave="band"),
    "strips-float64-deflate": dict(dtype="float64", bands=1, tiled=False),
    "cog-zstd-float32-nan": dict(dtype="float32", bands=2, compress="zstd", nodata=float("nan")),
}


def _pipeline(tmp: Path, urls: str, mode: str, **geotiff: Any) -> icepipe.Pipeline:
    concat = "band" if "band_from_filename" in geotiff else "time"
    return pipeline_from_dict(
        {
            "name": "tiffs",
            "mode": mode,
            "source": {"urls": urls, "format": "geotiff", "concat_dim": concat, "geotiff": geotiff},
            "target": {"repo": str(tmp / f"repo-{mode}")},
        },
        base_dir=tmp,
    )


def _rioxarray(paths: list[Path], dim: str) -> xr.DataArray:
    return xr.concat([rioxarray.open_rasterio(p, mask_and_scale=True) for p in paths], dim=dim)


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_time_series_equals_rioxarray(tmp_path: Path, client: Any, layout: str, mode: str) -> None:
    paths = [
        write_tiff(tmp_path / f"tile_{d}.tif", seed=i, **LAYOUTS[layout])
        for i, d in enumerate(DAYS)
    ]
    pipeline = _pipeline(
        tmp_path, str(tmp_path / "tile_*.tif"), mode, time_from_filename=r"_(\d{8})\.tif$"
    )
    assert icepipe.run(pipeline, client=client).status == "committed"
    stored = icepipe.open_dataset(pipeline.target.repo)
    ref = _rioxarray(paths, "time")
    got = stored["band_data"]
    assert got.dims == ("time", "band", "y", "x")
    np.testing.assert_array_equal(got.values, ref.values.astype(got.dtype))
    np.testing.assert_array_equal(stored.x.values, ref.x.values)  # pixel centres, to the bit
    np.testing.assert_array_equal(stored.y.values, ref.y.values)
    assert stored.spatial_ref.attrs == ref.spatial_ref.attrs  # CF grid mapping, crs_wkt
    assert got.attrs["grid_mapping"] == "spatial_ref"
    assert [str(t)[:10] for t in stored.time.values] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    if mode == "virtual" and LAYOUTS[layout].get("tiled", True):
        # A COG is one chunk per tile.
        assert stored["band_data"].encoding["chunks"][-2:] == (32, 32)
    assert icepipe.run(pipeline, client=client).status == "nothing-new"


def test_a_new_day_appends(tmp_path: Path, client: Any) -> None:
    write_tiff(tmp_path / "tile_20240101.tif", nodata=0, predictor=2)
    pipeline = _pipeline(
        tmp_path, str(tmp_path / "tile_*.tif"), "virtual", time_from_filename=r"_(\d{8})"
    )
    icepipe.run(pipeline, client=client)
    paths = [
        tmp_path / "tile_20240101.tif",
        write_tiff(tmp_path / "tile_20240102.tif", seed=5, nodata=0, predictor=2),
    ]
    assert icepipe.run(pipeline, client=client).status == "committed"
    stored = icepipe.open_dataset(pipeline.target.repo)
    np.testing.assert_array_equal(
        stored.band_data.values, _rioxarray(paths, "time").values.astype("float32")
    )


def test_virtual_chunks_read_in_a_fresh_process(tmp_path: Path, client: Any) -> None:
    """Predictor-2 tiles use virtual-tiff's HorizontalDeltaCodec, registered by icepipe's entry
    point: a reader that never imports virtual_tiff decodes them (zarr loads the entry point)."""
    paths = [write_tiff(tmp_path / f"t_{d}.tif", predictor=2, seed=i) for i, d in enumerate(DAYS)]
    pipeline = _pipeline(
        tmp_path, str(tmp_path / "t_*.tif"), "virtual", time_from_filename=r"_(\d+)"
    )
    icepipe.run(pipeline, client=client)
    code = (
        "import sys, numpy as np, icepipe\n"
        "assert 'virtual_tiff' not in sys.modules  # icepipe itself does not import it\n"
        f"ds = icepipe.open_dataset({pipeline.target.repo!r})\n"
        "np.save(sys.stdout.buffer, ds.band_data.values)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    import io

    values = np.load(io.BytesIO(out.stdout))
    np.testing.assert_array_equal(values, _rioxarray(paths, "time").values.astype("float32"))


def test_single_band_files_stack_along_band(tmp_path: Path, client: Any) -> None:
    paths = [write_tiff(tmp_path / f"scene_B{b}.tif", bands=1, seed=b) for b in (3, 1, 2)]
    for mode in ("virtual", "native"):
        pipeline = _pipeline(
            tmp_path, str(tmp_path / "scene_B*.tif"), mode, band_from_filename=r"_B(\d+)\.tif$"
        )
        icepipe.run(pipeline, client=client)
        stored = icepipe.open_dataset(pipeline.target.repo)
        assert stored.band.values.tolist() == [1, 2, 3]
        ref = _rioxarray(sorted(paths), "band")
        np.testing.assert_array_equal(stored.band_data.values, ref.values.astype("uint16"))


def test_real_landsat_bands_virtually(sample_data: Path, tmp_path: Path, client: Any) -> None:
    """The example pipeline's real files: r-cran-stars' Landsat 7 scene, one tiled file per
    band with overviews (ignored), equal to rioxarray's read of the published 6-band file."""
    pipeline = icepipe.load_pipeline(Path(__file__).parents[2] / "pipelines/landsat-bands.yaml")
    pipeline = dataclasses.replace(
        pipeline, target=dataclasses.replace(pipeline.target, repo=str(tmp_path / "repo"))
    )
    icepipe.run(pipeline, client=client)
    stored = icepipe.open_dataset(pipeline.target.repo)
    whole = rioxarray.open_rasterio(sample_data / "geotiff/stars/L7_ETMs.tif")
    assert stored.reflectance.shape == whole.shape  # level 0: full resolution
    np.testing.assert_array_equal(stored.reflectance.values, whole.values)
    np.testing.assert_array_equal(stored.x.values, whole.x.values)
    assert stored.spatial_ref.attrs["crs_wkt"] == whole.spatial_ref.attrs["crs_wkt"]


def test_real_strip_file_scans_both_ways(sample_data: Path, tmp_path: Path) -> None:
    """L7_ETMs.tif is in strips of 3 rows that do not divide its 352 rows: the virtual scan
    pads the short last strip (tests/sources/test_geotiff_strips.py), the native one reads it
    as rioxarray does."""
    url = f"file://{sample_data / 'geotiff/stars/L7_ETMs.tif'}"
    (src,) = list_sources([url], is_glob=False)
    virtual = scan_file(src, ScanOptions(format="geotiff", concat_dim="band"))
    assert virtual.schema.format == "geotiff"
    scanned = scan_file(src, ScanOptions(format="auto", concat_dim="band", mode="native"))
    assert scanned.schema.format == "geotiff"
    ref = rioxarray.open_rasterio(url.removeprefix("file://"), mask_and_scale=False)
    np.testing.assert_array_equal(scanned.dataset.band_data.values, ref.values)
    assert pickle.loads(pickle.dumps(scanned)).schema == scanned.schema


def test_rotated_grid_is_refused(sample_data: Path) -> None:
    url = f"file://{sample_data / 'geotiff/stars/geomatrix.tif'}"
    (src,) = list_sources([url], is_glob=False)
    with pytest.raises(SourceError, match=r"rotated or sheared.*gdalwarp"):
        scan_file(src, ScanOptions(format="geotiff", concat_dim="band"))


def test_magic_bytes_name_geotiff() -> None:
    assert detect_head(b"II*\x00" + bytes(8), "file:///x") == "geotiff"
    assert detect_head(b"MM\x00*" + bytes(8), "file:///x") == "geotiff"
    assert detect_head(b"II+\x00" + bytes(8), "file:///x") == "geotiff"  # BigTIFF


def test_truncated_file_names_it(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "tile_20240101.tif", tiled=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (src,) = list_sources([f"file://{path}"], is_glob=False)
    options = ScanOptions(format="geotiff", geotiff=GeoTiffSpec(time_from_filename=r"_(\d{8})"))
    with pytest.raises(SourceError, match="truncated") as err:
        scan_file(src, options)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("change", ["crs", "origin"])
def test_another_grid_in_the_series_is_refused(tmp_path: Path, client: Any, change: str) -> None:
    write_tiff(tmp_path / "tile_20240101.tif")
    odd = {"crs": {"crs": "EPSG:32632"}, "origin": {"origin": (500030.0, 4600000.0)}}[change]
    bad = write_tiff(tmp_path / "tile_20240102.tif", **odd)  # type: ignore[arg-type]
    pipeline = _pipeline(
        tmp_path, str(tmp_path / "tile_*.tif"), "virtual", time_from_filename=r"_(\d{8})"
    )
    with pytest.raises(SchemaMismatchError, match=r"another CRS or grid.*gdalwarp") as err:
        icepipe.run(pipeline, client=client)
    assert str(bad) in str(err.value)


def test_a_later_file_on_another_grid_is_refused(tmp_path: Path, client: Any) -> None:
    """Nightly runs compare a new file with the grid stored by the first run."""
    write_tiff(tmp_path / "tile_20240101.tif")
    pipeline = _pipeline(
        tmp_path, str(tmp_path / "tile_*.tif"), "virtual", time_from_filename=r"_(\d{8})"
    )
    icepipe.run(pipeline, client=client)
    bad = write_tiff(tmp_path / "tile_20240102.tif", origin=(500000.0, 4600030.0))
    with pytest.raises(SchemaMismatchError, match="another CRS or grid than the repository"):
        icepipe.run(pipeline, client=client)
    bad.unlink()
    write_tiff(tmp_path / "tile_20240103.tif", seed=3)
    assert icepipe.run(pipeline, client=client).status == "committed"


def test_time_from_a_name_that_does_not_match(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "tile_latest.tif")
    (src,) = list_sources([f"file://{path}"], is_glob=False)
    spec = GeoTiffSpec(time_from_filename=r"_(\d{8})\.tif$")
    with pytest.raises(SourceError, match=r"does not match source\.geotiff\.time_from_filename"):
        scan_file(src, ScanOptions(format="geotiff", geotiff=spec))
    spec = GeoTiffSpec(time_from_filename=r"_(\w+)\.tif$")
    with pytest.raises(SourceError, match="time_format"):
        scan_file(src, ScanOptions(format="geotiff", geotiff=spec))


def test_time_from_the_datetime_tag(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "scene.tif")
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2024:03:05 10:30:00")
    (src,) = list_sources([f"file://{path}"], is_glob=False)
    spec = GeoTiffSpec(time_from_tag="TIFFTAG_DATETIME")
    scanned = scan_file(src, ScanOptions(format="geotiff", geotiff=spec))
    time = xr.decode_cf(scanned.dataset[["time"]]).time.values  # type: ignore[union-attr]
    assert str(time[0]).startswith("2024-03-05T10:30:00")


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"format": "geotiff"}, "source.geotiff"),  # time needs a source
        ({"format": "netcdf4", "geotiff": {}}, "source.geotiff"),
        (
            {"format": "geotiff", "geotiff": {"time_from_filename": "(["}},
            "source.geotiff.time_from_filename",
        ),
        (
            {"format": "geotiff", "geotiff": {"time_from_filename": r"\d+"}},
            "source.geotiff.time_from_filename",
        ),
        (
            {"format": "geotiff", "geotiff": {"overview": -1, "time_from_tag": "X"}},
            "source.geotiff.overview",
        ),
        ({"format": "geotiff", "geotiff": {"colour": 1}}, "source.geotiff.colour"),
    ],
)
def test_spec_refuses(tmp_path: Path, source: dict[str, Any], field: str) -> None:
    raw = {"name": "t", "source": {"urls": "x/*.tif", "concat_dim": "time", **source}}
    raw["target"] = {"repo": "r"}
    with pytest.raises(ConfigError) as err:
        pipeline_from_dict(raw, base_dir=tmp_path)
    assert err.value.field == field


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_cogs_in_a_bucket(tmp_path: Path, s3: S3Server, s3_client: Any, mode: str) -> None:
    """COGs on S3 (moto): headers and pixels read through obstore with the workers' own
    credentials (rasterio through a file object, virtual-tiff through the registry)."""
    paths = [
        write_tiff(tmp_path / f"tile_{d}.tif", seed=i, nodata=0, predictor=2)
        for i, d in enumerate(DAYS)
    ]
    bucket = s3.bucket("tiffs")
    s3.upload(paths, bucket, "cogs")
    pipeline = pipeline_from_dict(
        {
            "name": "s3tiffs",
            "mode": mode,
            "source": {
                "urls": f"s3://{bucket}/cogs/tile_*.tif",
                "format": "geotiff",
                "concat_dim": "time",
                "geotiff": {"time_from_filename": r"_(\d{8})\.tif$"},
                "storage": s3.options(),
            },
            "target": {"repo": str(tmp_path / "repo")},
        },
        base_dir=tmp_path,
    )
    assert icepipe.run(pipeline, client=s3_client).status == "committed"
    stored = icepipe.open_dataset(pipeline.target.repo, source_storage=s3.options())
    np.testing.assert_array_equal(stored.band_data.values, _rioxarray(paths, "time").values)
    np.testing.assert_array_equal(stored.x.values, _rioxarray(paths[:1], "time").x.values)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_overview_when_asked(sample_data: Path, tmp_path: Path, client: Any, mode: str) -> None:
    """Overviews are ignored by default (level 0, checked above); ``overview: 1`` ingests
    the first reduced level, equal to rioxarray's ``overview_level=0``."""
    pipeline = pipeline_from_dict(
        {
            "name": "ov",
            "mode": mode,
            "source": {
                "urls": str(sample_data / "geotiff/l7-bands/L7_ETMs_B*.tif"),
                "format": "geotiff",
                "concat_dim": "band",
                "geotiff": {"band_from_filename": r"_B(\d+)\.tif$", "overview": 1},
            },
            "target": {"repo": str(tmp_path / "repo")},
        },
        base_dir=tmp_path,
    )
    icepipe.run(pipeline, client=client)
    stored = icepipe.open_dataset(pipeline.target.repo)
    paths = sorted((sample_data / "geotiff/l7-bands").glob("L7_ETMs_B*.tif"))
    ref = xr.concat([rioxarray.open_rasterio(p, overview_level=0) for p in paths], "band")
    assert stored.band_data.shape == (6, 176, 175)
    np.testing.assert_array_equal(stored.band_data.values, ref.values)
    np.testing.assert_array_equal(stored.x.values, ref.x.values)
    np.testing.assert_array_equal(stored.y.values, ref.y.values)
