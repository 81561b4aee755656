"""GRIB as virtual references: every real sample file, written to Icechunk and read back.

The reference is cfgrib (``cfgrib.open_datasets``), except where cfgrib is shown wrong
(alternative row scanning on 1-D grids, columns-first storage): those tests say so.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from icepipe.codecs import GRIB_CODEC_NAME, GribCodec, GribDecodeError, decode_grib_message
from icepipe.errors import SourceError
from icepipe.sources.formats.grib_index import GribCube, open_grib_native, scan_grib

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

#: Sample files whose every variable goes virtual and reads back equal to cfgrib, bit for bit.
VIRTUAL = [
    "cfgrib-samples/alternate-scanning.grib",
    "cfgrib-samples/cams-egg4-monthly.grib",
    "cfgrib-samples/cfrzr_and_cprat.grib",
    "cfgrib-samples/cfrzr_and_cprat_0s.grib",
    "cfgrib-samples/era5-levels-members.grib",
    "cfgrib-samples/era5-single-level-scalar-time.grib",
    "cfgrib-samples/fields_with_missing_values.grib",
    "cfgrib-samples/forecast_monthly_ukmo.grib",
    "cfgrib-samples/hpa_and_pa.grib",
    "cfgrib-samples/lambert_grid.grib",
    "cfgrib-samples/multi_param_on_multi_dims.grib",
    "cfgrib-samples/ncep-seasonal-monthly.grib",
    "cfgrib-samples/reduced_gg.grib",
    "cfgrib-samples/regular_gg_ml.grib",
    "cfgrib-samples/regular_gg_ml_g2.grib",
    "cfgrib-samples/regular_gg_pl.grib",
    "cfgrib-samples/regular_gg_sfc.grib",
    "cfgrib-samples/regular_ll_msl.grib",
    "cfgrib-samples/regular_ll_sfc.grib",
    "cfgrib-samples/regular_ll_wrong_increment.grib",
    "cfgrib-samples/scanning_mode_64.grib",
    "cfgrib-samples/single_gridpoint.grib",
    "cfgrib-samples/soil-surface-level-mix.grib",
    "cfgrib-samples/spherical_harmonics.grib",
    "cfgrib-samples/step_60m.grib",
    "cfgrib-samples/t_analysis_and_fc_0.grib",
    "cfgrib-samples/t_on_different_level_types.grib",
    "cfgrib-samples/tp_on_different_grid_resolutions.grib",
    "cfgrib-samples/uv_on_different_levels.grib",
    "ncarg/grb/MET9_IR108_cosmode_0909210000.grb2",
    "ncarg/grb/fh.0012_tl.press_gr.awp211.grb2",
    "ncarg/grb/wafsgfs_L_t06z_intdsk60.grib2",
]
#: Virtual too, but cfgrib leaves alternate rows reversed on this 1-D (Mercator) grid.
NDFD = "cfgrib-samples/ds.waveh.5.grib"
#: Files no route can ingest as they are (cfgrib fails on or skips part of them too).
UNREADABLE = {
    "cfgrib-samples/era5-levels-corrupted.grib": "corrupt",
    "cfgrib-samples/regular_gg_wrong_increment.grib": "Grid description is wrong",
    "ncarg/grb/ced1.lf00.t00z.eta.grb": "cannot be mapped",
}
#: A chunk grid larger than this is compared at its messages only (the rest must be NaN).
SPARSE = 5000


def _url(path: Path) -> str:
    return "file://" + str(path)


def _cfgrib(path: Path, **kwargs: Any) -> list[xr.Dataset]:
    import cfgrib

    # An index file in a temporary folder: without one cfgrib re-indexes per variable (slow).
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out: list[xr.Dataset] = cfgrib.open_datasets(
            str(path), backend_kwargs={"indexpath": folder + "/{short_hash}.idx", **kwargs}
        )
    return out


def _make_repo(path: Path, folders: list[Path]) -> Any:
    import icechunk

    prefixes = [_url(f) + "/" for f in folders]
    config = icechunk.RepositoryConfig.default()
    for prefix in prefixes:
        config.set_virtual_chunk_container(
            icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(prefix[7:]))
        )
    creds = icechunk.containers_credentials(
        {p: icechunk.credentials.LocalFileSystemAccess for p in prefixes}
    )
    return icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(path)),
        config=config,
        authorize_virtual_chunk_access=creds,
    )


def _group(rel: str, cube: GribCube) -> str:
    return rel.replace("/", "__") + "/" + cube.name


@pytest.fixture(scope="session")
def grib_repo(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Icechunk repository holding every virtual cube of every sample file."""
    folders = [sample_data / "cfgrib-samples", sample_data / "ncarg" / "grb"]
    path = tmp_path_factory.mktemp("grib") / "repo"
    repo = _make_repo(path, folders)
    session = repo.writable_session("main")
    scanned: dict[str, list[GribCube]] = {}
    for rel in [*VIRTUAL, NDFD]:
        cubes = scan_grib(_url(sample_data / rel))
        scanned[rel] = cubes
        for cube in cubes:
            cube.dataset.vz.to_icechunk(session.store, group=_group(rel, cube))
    session.commit("all virtual GRIB samples")
    yield path, repo, scanned


def _read_back(repo: Any, group: str) -> xr.Dataset:
    session = repo.readonly_session("main")
    return xr.open_dataset(
        session.store, engine="zarr", group=group, consolidated=False, zarr_format=3, chunks=None
    )


def _assert_equal_values(cube: GribCube, back: xr.Dataset, ref: xr.Dataset, name: str) -> None:
    got, expected = back[name], ref[name]
    assert got.dims == expected.dims
    assert got.shape == expected.shape
    manifest = cube.dataset[name].data.manifest
    if manifest.shape_chunk_grid and np.prod(manifest.shape_chunk_grid) > SPARSE:
        # A sparse cube (ncep-seasonal: 372 messages in 124 x 124 x 92 combinations): reading
        # every empty chunk is slow for both readers, so compare where the messages are.
        chunks = cube.dataset[name].data.metadata.chunks
        paths = np.asarray(manifest._paths)

        def at(pos: np.ndarray) -> dict[str, int]:
            return {str(d): int(i) for d, i, c in zip(got.dims, pos, chunks, strict=True) if c == 1}

        for pos in np.argwhere(paths != ""):
            np.testing.assert_array_equal(got.isel(at(pos)).values, expected.isel(at(pos)).values)
        for pos in np.argwhere(paths == "")[:3]:
            sel = at(pos)
            assert np.isnan(got.isel(sel).values).all()
            assert np.isnan(expected.isel(sel).values).all()
        return
    # Exact: the codec decodes like cfgrib (ecCodes doubles cast to float32, NaN where missing).
    np.testing.assert_array_equal(got.values, expected.values)


def _assert_same_metadata(back: xr.Dataset, ref: xr.Dataset) -> None:
    assert set(back.data_vars) <= set(ref.data_vars)
    assert {k: v for k, v in ref.attrs.items() if k != "history"} == back.attrs
    for name in back.data_vars:
        assert set(back[name].coords) == set(ref[name].coords)
        for coord in ref[name].coords:
            a, b = back[name].coords[coord], ref[name].coords[coord]
            assert a.dtype == b.dtype, coord
            np.testing.assert_array_equal(a.values, b.values)
        expected_attrs = {
            k: v.tolist() if isinstance(v, np.ndarray | np.generic) else v
            for k, v in ref[name].attrs.items()
            if not (isinstance(v, float) and np.isnan(v))
        }
        assert dict(back[name].attrs) == expected_attrs


@pytest.mark.parametrize("rel", VIRTUAL)
def test_virtual_read_back_equals_cfgrib(rel: str, grib_repo: Any, sample_data: Path) -> None:
    _, repo, scanned = grib_repo
    cubes = scanned[rel]
    refs = _cfgrib(sample_data / rel)
    # The same split as cfgrib, in the same order.
    assert [sorted(c.variables) for c in cubes] == [sorted(r.data_vars) for r in refs]
    assert len({c.name for c in cubes}) == len(cubes)
    for cube, ref in zip(cubes, refs, strict=True):
        assert cube.fallback == {}
        back = _read_back(repo, _group(rel, cube))
        _assert_same_metadata(back, ref)
        for name in cube.virtual:
            _assert_equal_values(cube, back, ref, name)


def test_alternate_rows_on_a_1d_grid_are_undone_where_cfgrib_does_not(
    grib_repo: Any, sample_data: Path
) -> None:
    """NDFD Mercator field, rows scanned in alternate directions, 1-D ``values`` in cfgrib.

    cfgrib reverses every second row only for 2-D grids, so on this one it pairs half of the
    values with the wrong longitudes. Reversing them back gives a smooth field (mean absolute
    north-south difference 0.013 vs 0.65), and ecCodes' own geo-iterator returns that order.
    """
    _, repo, scanned = grib_repo
    (cube,) = scanned[NDFD]
    (ref,) = _cfgrib(sample_data / NDFD)
    back = _read_back(repo, _group(NDFD, cube))
    _assert_same_metadata(back, ref)
    import eccodes

    with open(sample_data / NDFD, "rb") as fh:
        handle = eccodes.codes_grib_new_from_file(fh)
    ny, nx = eccodes.codes_get(handle, "Ny"), eccodes.codes_get(handle, "Nx")
    assert eccodes.codes_get(handle, "alternativeRowScanning") == 1
    eccodes.codes_release(handle)
    rows = ref.shww.values.reshape(ny, nx).copy()
    rows[1::2] = rows[1::2, ::-1]
    np.testing.assert_array_equal(back.shww.values, rows.reshape(-1))

    def roughness(a: np.ndarray) -> float:
        return float(np.nanmean(np.abs(np.diff(a.reshape(ny, nx), axis=0))))

    assert roughness(back.shww.values) < roughness(ref.shww.values) / 10


def test_era5_members_times_levels_map_like_cfgrib(grib_repo: Any, sample_data: Path) -> None:
    _, _, scanned = grib_repo
    rel = "cfgrib-samples/era5-levels-members.grib"
    (cube,) = scanned[rel]
    (ref,) = _cfgrib(sample_data / rel)
    ds = cube.dataset
    assert cube.name == "isobaricInhPa"
    assert sorted(ds.data_vars) == ["t", "z"]
    assert ds.t.dims == ("number", "time", "isobaricInhPa", "latitude", "longitude")
    assert ds.t.shape == (10, 4, 2, 61, 120)
    # One chunk per message (= one 2-D field); 2 variables x 80 messages.
    assert ds.t.data.metadata.chunks == (1, 1, 1, 61, 120)
    assert cube.variables["t"].messages == 80
    for name in ("number", "time", "step", "isobaricInhPa", "latitude", "longitude", "valid_time"):
        assert ds[name].dims == ref[name].dims
        assert ds[name].dtype == ref[name].dtype
        np.testing.assert_array_equal(ds[name].values, ref[name].values)
        assert ds[name].attrs == ref[name].attrs
    refs = list(ds.t.data.manifest.dict().values())
    assert {r["path"] for r in refs} == {_url(sample_data / rel)}
    # GRIB1 message lengths (kerchunk reads them at the GRIB2 offset, and gets them wrong).
    with open(sample_data / rel, "rb") as fh:
        for r in refs[:5]:
            fh.seek(r["offset"])
            msg = fh.read(r["length"])
            assert msg[:4] == b"GRIB"
            assert msg[-4:] == b"7777"


def test_native_route_returns_the_same_cubes_in_the_same_order(
    grib_repo: Any, sample_data: Path
) -> None:
    rel = "ncarg/grb/fh.0012_tl.press_gr.awp211.grb2"
    cubes = grib_repo[2][rel]
    native = open_grib_native(_url(sample_data / rel))
    assert [sorted(c.variables) for c in cubes] == [sorted(n.data_vars) for n in native]
    # Lazy: nothing read until asked.
    assert all(not v._in_memory for n in native for v in n.data_vars.values())


def test_unsqueezed_cubes_keep_length_one_dims(sample_data: Path, tmp_path: Path) -> None:
    """``squeeze=False`` keeps time/step/level of length 1, to concatenate files along them."""
    path = sample_data / "cfgrib-samples/era5-single-level-scalar-time.grib"
    (cube,) = scan_grib(_url(path), squeeze=False)
    (ref,) = _cfgrib(path, squeeze=False)
    assert (
        cube.dataset.t2m.dims
        == ref.t2m.dims
        == ("number", "time", "step", "surface", "latitude", "longitude")
    )
    repo = _make_repo(tmp_path / "repo", [path.parent])
    session = repo.writable_session("main")
    cube.dataset.vz.to_icechunk(session.store, group="g")
    session.commit("one")
    np.testing.assert_array_equal(_read_back(repo, "g").t2m.values, ref.t2m.values)
    # Files of a series concatenate virtually along time.
    both = xr.concat([cube.dataset, cube.dataset], dim="time", coords="minimal", compat="override")
    assert both.t2m.shape[1] == 2


@pytest.fixture(scope="session")
def generated_grib(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GRIB files made with ecCodes' own samples for cases no sample file covers."""
    import eccodes

    folder = tmp_path_factory.mktemp("generated-grib")

    def field(edition: int, values: np.ndarray | None = None, **keys: Any) -> bytes:
        handle = eccodes.codes_grib_new_from_samples(f"regular_ll_sfc_grib{edition}")
        try:
            grid = dict(
                Ni=4,
                Nj=3,
                latitudeOfFirstGridPointInDegrees=10.0,
                latitudeOfLastGridPointInDegrees=8.0,
                longitudeOfFirstGridPointInDegrees=0.0,
                longitudeOfLastGridPointInDegrees=3.0,
                iDirectionIncrementInDegrees=1.0,
                jDirectionIncrementInDegrees=1.0,
            )
            for key, value in {**grid, **keys}.items():
                eccodes.codes_set(handle, key, value)
            eccodes.codes_set_values(handle, np.zeros(12))
            if values is None:  # value = 100 * latitude + longitude of its point
                lats = eccodes.codes_get_array(handle, "latitudes")
                lons = eccodes.codes_get_array(handle, "longitudes")
                values = lats * 100 + lons
            eccodes.codes_set_values(handle, values)
            return bytes(eccodes.codes_get_message(handle))
        finally:
            eccodes.codes_release(handle)

    out = {}
    for edition in (1, 2):
        out[f"columns{edition}"] = folder / f"columns_first_grib{edition}.grib"
        out[f"columns{edition}"].write_bytes(field(edition, jPointsAreConsecutive=1))
    # A GRIB2 message holding two fields (sections 4-7 repeated), as NCEP sends u/v wind.
    a = field(2, np.arange(12.0), shortName="10u")
    b = field(2, np.arange(12.0) + 100, shortName="10v")
    body = _grib2_sections(a)
    fields_b = [s for s in _grib2_sections(b) if s[4] in (4, 5, 6, 7)]
    sections = [s for s in body if s[4] in (1, 2, 3)] + [s for s in body if s[4] in (4, 5, 6, 7)]
    payload = b"".join(sections + fields_b) + b"7777"
    total = 16 + len(payload)
    multi = a[:8] + total.to_bytes(8, "big") + payload
    # One variable whose messages cover different areas with the same number of points.
    out["moving"] = folder / "moving_area.grib2"
    out["moving"].write_bytes(
        field(2, np.arange(12.0), shortName="2t", step=0)
        + field(
            2,
            np.arange(12.0),
            shortName="2t",
            step=6,
            latitudeOfFirstGridPointInDegrees=20.0,
            latitudeOfLastGridPointInDegrees=18.0,
        )
    )
    out["multi"] = folder / "multi_field.grib2"
    out["multi"].write_bytes(multi + field(2, np.arange(12.0) + 7, shortName="2t"))
    return out


def _grib2_sections(message: bytes) -> list[bytes]:
    sections, pos = [], 16
    while message[pos : pos + 4] != b"7777":
        length = int.from_bytes(message[pos : pos + 4], "big")
        sections.append(message[pos : pos + length])
        pos += length
    return sections


@pytest.mark.parametrize("edition", [1, 2])
def test_columns_first_storage_is_transposed_where_cfgrib_scrambles_it(
    edition: int, generated_grib: dict[str, Path]
) -> None:
    """``jPointsAreConsecutive=1``: ecCodes' geo-iterator walks columns first; cfgrib reshapes
    the values as rows, so its field does not match its own coordinates. icepipe transposes."""
    path = generated_grib[f"columns{edition}"]
    (cube,) = scan_grib(_url(path))
    (ref,) = _cfgrib(path)
    name = next(iter(cube.variables))
    assert cube.variables[name].decodable
    with open(path, "rb") as fh:
        values = decode_grib_message(fh.read())
    expected = ref.latitude.values[:, None] * 100 + ref.longitude.values[None, :]
    np.testing.assert_array_equal(values, expected.astype(np.float32))
    assert not np.array_equal(ref[name].values, expected)  # cfgrib's is scrambled


def test_multi_field_message_is_reported_for_native_fallback(
    generated_grib: dict[str, Path],
) -> None:
    path = generated_grib["multi"]
    cubes = scan_grib(_url(path))
    native = open_grib_native(_url(path))
    assert [sorted(c.variables) for c in cubes] == [sorted(n.data_vars) for n in native]
    fallback = {n: (c.index, r) for c in cubes for n, r in c.fallback.items()}
    assert sorted(fallback) == ["u10", "v10"]
    for name, (index, reason) in fallback.items():
        assert "message at byte 0 holds 2 fields" in reason
        assert name not in cubes[index].dataset.data_vars
    # The native route (same cube positions) reads both fields of the message.
    index = fallback["u10"][0]
    np.testing.assert_array_equal(native[index].u10.values.ravel(), np.arange(12.0))
    np.testing.assert_array_equal(native[index].v10.values.ravel(), np.arange(12.0) + 100)
    # The ordinary message after it is still virtual.
    assert [v for c in cubes for v in c.virtual] == ["t2m"]


def test_messages_on_different_grids_in_one_variable_are_reported(
    generated_grib: dict[str, Path],
) -> None:
    """cfgrib stacks them (same gridType and size) under the first message's coordinates."""
    path = generated_grib["moving"]
    (cube,) = scan_grib(_url(path))
    (ref,) = _cfgrib(path)
    assert ref.t2m.dims == ("step", "latitude", "longitude")
    assert "2 different grids" in cube.refused["t2m"] and cube.fallback == {}
    assert "t2m" not in cube.dataset.data_vars


def test_truncated_file_is_a_source_error_naming_it(sample_data: Path, tmp_path: Path) -> None:
    data = (sample_data / "cfgrib-samples/era5-levels-members.grib").read_bytes()
    cut = tmp_path / "cut.grib"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(SourceError) as info:
        scan_grib(_url(cut))
    assert info.value.url == _url(cut)
    assert str(cut) in str(info.value)
    assert "replace" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.url == _url(cut)
    # A file shorter than at listing time.
    whole = tmp_path / "whole.grib"
    whole.write_bytes(data)
    with pytest.raises(SourceError, match="truncated"):
        scan_grib(_url(whole), size=len(data) + 1)


@pytest.mark.parametrize(("rel", "expected"), sorted(UNREADABLE.items()))
def test_unreadable_files_are_source_errors(rel: str, expected: str, sample_data: Path) -> None:
    with pytest.raises(SourceError, match=expected) as info:
        scan_grib(_url(sample_data / rel))
    assert info.value.url == _url(sample_data / rel)


def test_not_grib_and_empty_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.grib"
    junk.write_bytes(b"not a grib file at all" * 10)
    with pytest.raises(SourceError, match="no GRIB message"):
        scan_grib(_url(junk))
    empty = tmp_path / "empty.grib"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        scan_grib(_url(empty))
    with pytest.raises(SourceError, match="not found"):
        scan_grib(_url(tmp_path / "missing.grib"))


def test_codec_contract(sample_data: Path) -> None:
    codec = GribCodec()
    assert codec.to_dict() == {"name": GRIB_CODEC_NAME}
    assert GribCodec.from_dict({"name": GRIB_CODEC_NAME}) == codec
    assert pickle.loads(pickle.dumps(codec)) == codec
    import zarr.registry

    assert zarr.registry.get_codec_class(GRIB_CODEC_NAME) is GribCodec
    with pytest.raises(GribDecodeError, match="not one GRIB message"):
        decode_grib_message(b"GRIB" + b"\0" * 20)
    data = (sample_data / "cfgrib-samples/regular_ll_sfc.grib").read_bytes()
    with pytest.raises(GribDecodeError, match="chunk has shape"):
        decode_grib_message(data, shape=(10, 10))


def _decode_on_worker(codec_bytes: bytes, message: bytes) -> Any:
    codec = pickle.loads(codec_bytes)
    assert isinstance(codec, GribCodec)
    return decode_grib_message(message)


def _read_on_worker(repo_path: str, prefixes: list[str], group: str, name: str) -> Any:
    # Runs in a worker process: a reader that only knows icechunk and xarray.
    import icechunk

    creds = icechunk.containers_credentials(
        {p: icechunk.credentials.LocalFileSystemAccess for p in prefixes}
    )
    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(repo_path), authorize_virtual_chunk_access=creds
    )
    session = repo.readonly_session("main")
    ds = xr.open_dataset(
        session.store, engine="zarr", group=group, consolidated=False, zarr_format=3, chunks=None
    )
    return ds[name].values


def test_codec_pickles_and_decodes_on_dask_workers(
    client: Any, grib_repo: Any, sample_data: Path
) -> None:
    path, _, scanned = grib_repo
    rel = "cfgrib-samples/era5-levels-members.grib"
    (cube,) = scanned[rel]
    (ref,) = _cfgrib(sample_data / rel)
    message_ref = cube.dataset.t.data.manifest.dict()["0.0.0.0.0"]
    with open(sample_data / rel, "rb") as fh:
        fh.seek(message_ref["offset"])
        message = fh.read(message_ref["length"])
    decoded = client.submit(_decode_on_worker, pickle.dumps(GribCodec()), message).result()
    np.testing.assert_array_equal(decoded, ref.t.values[0, 0, 0])
    prefixes = [_url(sample_data / "cfgrib-samples") + "/", _url(sample_data / "ncarg/grb") + "/"]
    values = client.submit(
        _read_on_worker, str(path), prefixes, _group(rel, cube), "t", pure=False
    ).result()
    np.testing.assert_array_equal(values, ref.t.values)
    # Cubes (virtual datasets and their variable reports) travel to and from workers.
    again = pickle.loads(pickle.dumps(cube))
    assert again.variables == cube.variables
    assert again.dataset.t.data.manifest == cube.dataset.t.data.manifest


def test_plain_reader_process_finds_the_codec_by_entry_point(
    grib_repo: Any, sample_data: Path
) -> None:
    """A reader that never imports icepipe decodes the chunks (zarr loads the entry point)."""
    path, _, scanned = grib_repo
    rel = "cfgrib-samples/regular_ll_sfc.grib"
    (cube,) = scanned[rel]
    prefix = _url(sample_data / "cfgrib-samples") + "/"
    script = textwrap.dedent(
        f"""
        import sys, icechunk, xarray as xr
        creds = icechunk.containers_credentials(
            {{{prefix!r}: icechunk.credentials.LocalFileSystemAccess}})
        repo = icechunk.Repository.open(
            icechunk.local_filesystem_storage({str(path)!r}), authorize_virtual_chunk_access=creds)
        store = repo.readonly_session("main").store
        assert "icepipe" not in sys.modules
        ds = xr.open_dataset(store, engine="zarr", group={_group(rel, cube)!r},
                             consolidated=False, zarr_format=3, chunks=None)
        print(float(ds.skt.mean()), "icepipe.codecs" in sys.modules)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    (ref,) = _cfgrib(sample_data / rel)
    assert float(out[0]) == pytest.approx(float(ref.skt.mean()))
    assert out[1] == "True"
