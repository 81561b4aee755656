"""GRIB pipelines end to end: several hypercubes per file (one group each), and variables the
codec cannot decode correctly written natively inside a virtual ingest (native fallback).

Every value read back from Icechunk is compared with cfgrib's read of the same file.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml

import icepipe
from icepipe.errors import ConfigError, SchemaMismatchError, SourceError
from icepipe.ops.validate import validate_pipeline
from tests.sources.test_grib import _grib2_sections

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

AWP211 = "ncarg/grb/fh.0012_tl.press_gr.awp211.grb2"


def _field(values: np.ndarray, date: int, **keys: Any) -> bytes:
    """One GRIB2 field on a 3 x 4 regular lat/lon grid (ecCodes' own sample), for ``date``."""
    import eccodes

    handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    try:
        for key, value in {
            "Ni": 4,
            "Nj": 3,
            "latitudeOfFirstGridPointInDegrees": 10.0,
            "latitudeOfLastGridPointInDegrees": 8.0,
            "longitudeOfFirstGridPointInDegrees": 0.0,
            "longitudeOfLastGridPointInDegrees": 3.0,
            "iDirectionIncrementInDegrees": 1.0,
            "jDirectionIncrementInDegrees": 1.0,
            "dataDate": date,
            **keys,
        }.items():
            eccodes.codes_set(handle, key, value)
        eccodes.codes_set_values(handle, values)
        return bytes(eccodes.codes_get_message(handle))
    finally:
        eccodes.codes_release(handle)


def _wind_message(date: int, seed: float) -> bytes:
    """One GRIB2 message holding two fields (u and v wind), as NCEP sends them."""
    a = _field(np.arange(12.0) + seed, date, shortName="10u")
    b = _field(np.arange(12.0) + seed + 100, date, shortName="10v")
    body = _grib2_sections(a)
    fields_b = [s for s in _grib2_sections(b) if s[4] in (4, 5, 6, 7)]
    sections = [s for s in body if s[4] in (1, 2, 3)] + [s for s in body if s[4] in (4, 5, 6, 7)]
    payload = b"".join(sections + fields_b) + b"7777"
    return a[:8] + (16 + len(payload)).to_bytes(8, "big") + payload


def _series(folder: Path, days: list[int], *, isobaric: bool = False) -> list[Path]:
    """Daily files: 2 m temperature, u/v wind in one multi-field message and, with
    ``isobaric``, temperature on 2 pressure levels (a second hypercube)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in days:
        date = 20240100 + day
        data = _wind_message(date, day) + _field(np.arange(12.0) + day * 10, date, shortName="10si")
        if isobaric:
            for level in (500, 850):
                data += _field(
                    np.arange(12.0) + day + level,
                    date,
                    shortName="t",
                    typeOfFirstFixedSurface=100,
                    scaledValueOfFirstFixedSurface=level * 100,
                    scaleFactorOfFirstFixedSurface=0,
                )
        path = folder / f"day{day:02d}.grib2"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _cfgrib(paths: list[Path]) -> list[xr.Dataset]:
    """cfgrib's cubes of each file (length-1 dims kept), concatenated along time."""
    import cfgrib

    per_file = []
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            cubes = cfgrib.open_datasets(
                str(path),
                backend_kwargs={"indexpath": folder + "/{short_hash}.idx", "squeeze": False},
            )
            per_file.append([c.load() for c in cubes])
    return [
        xr.concat(list(group), dim="time", data_vars="minimal", coords="minimal", compat="override")
        for group in zip(*per_file, strict=True)
    ]


def _pipeline(
    folder: Path,
    name: str,
    source: dict[str, Any],
    *,
    repo: Path,
    group: str | None = None,
    mode: str = "virtual",
) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    source = {"concat_dim": "time", **source}
    target: dict[str, Any] = {"repo": str(repo), **({"group": group} if group else {})}
    path = folder / f"{name}.yaml"
    doc = {"name": name, "source": source, "target": target, "mode": mode}
    path.write_text(yaml.safe_dump(doc))
    return path


def _stored(repo: Path, group: str) -> xr.Dataset:
    return icepipe.open_dataset(str(repo), group=group).load()


def test_undecodable_variables_fall_back_to_native_chunks_in_a_virtual_ingest(
    tmp_path: Path, client: Any
) -> None:
    paths = _series(tmp_path / "src", [1, 2])
    pipeline_file = _pipeline(
        tmp_path,
        "winds",
        {"urls": str(tmp_path / "src" / "*.grib2"), "format": "grib"},
        repo=tmp_path / "repo",
    )
    result = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert result.status == "committed"
    assert sorted(result.native_fallback) == ["u10", "v10"]
    assert "holds 2 fields" in result.native_fallback["u10"]
    (ref,) = _cfgrib(paths)
    stored = _stored(tmp_path / "repo", "")
    xr.testing.assert_equal(stored[["si10", "u10", "v10"]], ref[["si10", "u10", "v10"]])
    assert stored.u10.attrs["GRIB_shortName"] == "10u"
    # si10 is referenced in the source files; u10 and v10 were copied into the repository.
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    session = repo.readonly_session("main")
    located = set(session.all_virtual_chunk_locations())
    assert located == {"file://" + str(p) for p in paths}
    import zarr

    group = zarr.open_group(session.store, mode="r")
    assert group["u10"].chunks == group["si10"].chunks == (1, 1, 1, 3, 4)
    for t in range(2):
        assert session.chunk_type("/si10", [t, 0, 0, 0, 0]) == icechunk.ChunkType.virtual
        assert session.chunk_type("/u10", [t, 0, 0, 0, 0]) != icechunk.ChunkType.virtual

    # The next file appends, virtual and native alike; re-runs ingest nothing.
    paths += _series(tmp_path / "src", [3])
    again = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert again.files_new == ("file://" + str(paths[-1]),)
    (ref,) = _cfgrib(paths)
    xr.testing.assert_equal(
        _stored(tmp_path / "repo", "")[["si10", "u10", "v10"]], ref[["si10", "u10", "v10"]]
    )
    assert icepipe.run(icepipe.load_pipeline(pipeline_file), client=client).status == "nothing-new"
    # `icepipe validate` re-reads every file through cfgrib and compares.
    report = validate_pipeline(icepipe.load_pipeline(pipeline_file), sample=None)
    assert len(report.files_checked) == 3 and report.variables_checked > 0


def test_a_changed_file_is_reingested_into_its_region_virtual_and_fallback_alike(
    tmp_path: Path, client: Any
) -> None:
    import yaml

    paths = _series(tmp_path / "src", [1, 2, 3])
    pipeline_file = _pipeline(
        tmp_path,
        "winds",
        {"urls": str(tmp_path / "src" / "*.grib2"), "format": "grib"},
        repo=tmp_path / "repo",
    )
    doc = yaml.safe_load(pipeline_file.read_text())
    pipeline_file.write_text(yaml.safe_dump({**doc, "on_changed": "reingest"}))
    icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    # The provider re-issues day 2 with other values (same times).
    before = paths[1].stat().st_mtime_ns
    fixed = _wind_message(20240102, 50) + _field(np.arange(12.0) + 500, 20240102, shortName="10si")
    paths[1].write_bytes(fixed)  # same size; a real (never future) modification time
    assert paths[1].stat().st_mtime_ns != before
    again = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert again.files_new == ("file://" + str(paths[1]),)
    (ref,) = _cfgrib(paths)
    stored = _stored(tmp_path / "repo", "")
    xr.testing.assert_equal(stored[["si10", "u10", "v10"]], ref[["si10", "u10", "v10"]])
    assert float(stored.u10.isel(time=1).max()) == 61.0  # 11 + 50: the new values


def test_dropping_the_fallback_variables_keeps_the_ingest_purely_virtual(
    tmp_path: Path, client: Any
) -> None:
    _series(tmp_path / "src", [1])
    pipeline_file = _pipeline(
        tmp_path,
        "si10-only",
        {
            "urls": str(tmp_path / "src" / "*.grib2"),
            "format": "grib",
            "drop_variables": ["u10", "v10"],
        },
        repo=tmp_path / "repo",
    )
    result = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert result.native_fallback == {}
    assert "u10" not in _stored(tmp_path / "repo", "")


def test_every_hypercube_of_a_real_file_into_its_own_group(
    tmp_path: Path, client: Any, sample_data: Path
) -> None:
    """NCEP GFS on the AWIPS 211 grid: 17 hypercubes, 50 data variables, one group each."""
    path = sample_data / AWP211
    pipeline_file = _pipeline(
        tmp_path,
        "gfs",
        {"urls": [str(path)], "format": "grib", "grib_cubes": "all"},
        repo=tmp_path / "repo",
        group="gfs",
    )
    pipeline = icepipe.load_pipeline(pipeline_file)
    result = icepipe.run(pipeline, client=client)
    assert result.status == "committed" and len(result.groups) == 17
    assert result.native_fallback == {}
    refs = _cfgrib([path])
    from icepipe.sources.formats.grib_index import scan_grib

    names = [c.name for c in scan_grib("file://" + str(path), squeeze=False)]
    assert sorted(f"gfs/{n}" for n in names) == sorted(result.groups)
    n_vars = 0
    for name, ref in zip(names, refs, strict=True):
        stored = _stored(tmp_path / "repo", f"gfs/{name}")
        ref = ref.drop_attrs(deep=False)
        for var in ref.data_vars:
            np.testing.assert_array_equal(stored[var].values, ref[var].values, err_msg=var)
            n_vars += 1
    assert n_vars == sum(len(r.data_vars) for r in refs) == 50
    # One commit for the whole file; a re-run ingests nothing.
    from icepipe.repository import open_repo, read_log

    log = read_log(open_repo(str(tmp_path / "repo")), "main")
    assert sum(c.pipeline == "gfs" for c in log) == 1
    assert icepipe.run(pipeline, client=client).status == "nothing-new"
    assert validate_pipeline(pipeline).variables_checked > 50
    # `icepipe status` reads the newest time over the cube groups.
    from icepipe.ops.status import pipeline_status

    lag = pipeline_status(pipeline, state=str(tmp_path / "state"), runs=1).lag
    assert lag["files_pending"] == 0 and lag["last_coordinate"].startswith("2007-01-24")


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_a_series_of_multi_cube_files_appends_to_every_cube_group_once(
    tmp_path: Path, client: Any, mode: str
) -> None:
    paths = _series(tmp_path / "src", [1, 2], isobaric=True)
    source = {"urls": str(tmp_path / "src" / "*.grib2"), "format": "grib", "grib_cubes": "all"}
    pipeline_file = _pipeline(
        tmp_path, "series", source, repo=tmp_path / "repo", group="nwp", mode=mode
    )
    first = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert first.groups == ("nwp/heightAboveGround-level-10", "nwp/isobaricInhPa")
    if mode == "virtual":
        assert sorted(first.native_fallback) == [
            "heightAboveGround-level-10/u10",
            "heightAboveGround-level-10/v10",
        ]
    else:
        assert first.native_fallback == {}
    paths += _series(tmp_path / "src", [3, 4], isobaric=True)
    second = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert len(second.files_new) == 2
    assert second.dims["isobaricInhPa/time"] == second.dims["heightAboveGround-level-10/time"] == 4
    sfc, iso = _cfgrib(paths)
    xr.testing.assert_equal(_stored(tmp_path / "repo", "nwp/isobaricInhPa")[["t"]], iso[["t"]])
    xr.testing.assert_equal(
        _stored(tmp_path / "repo", "nwp/heightAboveGround-level-10")[["si10", "u10", "v10"]],
        sfc[["si10", "u10", "v10"]],
    )
    assert icepipe.run(icepipe.load_pipeline(pipeline_file), client=client).status == "nothing-new"
    # Naming cubes: only those are ingested, and a name no file holds is reported.
    report = validate_pipeline(icepipe.load_pipeline(pipeline_file), sample=None)
    assert len(report.files_checked) == 4
    if mode == "native":
        return
    iso_only = {**source, "grib_cubes": ["isobaricInhPa"]}
    only = _pipeline(tmp_path, "iso", iso_only, repo=tmp_path / "repo2", group="nwp")
    assert icepipe.run(icepipe.load_pipeline(only), client=client).groups == ("nwp/isobaricInhPa",)
    none = _pipeline(
        tmp_path, "none", {**source, "grib_cubes": ["cloudBase"]}, repo=tmp_path / "repo3"
    )
    with pytest.raises(SourceError, match="none of the GRIB hypercubes cloudBase"):
        icepipe.run(icepipe.load_pipeline(none), client=client)


def test_a_file_with_several_cubes_needs_grib_cubes_or_grib_cube(
    tmp_path: Path, client: Any
) -> None:
    _series(tmp_path / "src", [1], isobaric=True)
    pipeline_file = _pipeline(
        tmp_path,
        "one",
        {"urls": str(tmp_path / "src" / "*.grib2"), "format": "grib"},
        repo=tmp_path / "repo",
    )
    with pytest.raises(SourceError, match=r"set source\.grib_cubes: all"):
        icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"grib_cube": "surface"}, "not both"),
        ({"merge": True}, "cannot be combined with concat_dims or merge"),
        ({"format": "netcdf4"}, "format: grib only"),
        ({"grib_cubes": []}, "expected 'all' or a non-empty list"),
    ],
)
def test_grib_cubes_misuse_is_a_config_error(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    source = {"urls": "x/*.grib2", "format": "grib", "grib_cubes": "all", **extra}
    pipeline_file = _pipeline(tmp_path, "bad", source, repo=tmp_path / "r")
    with pytest.raises(ConfigError, match=message):
        icepipe.load_pipeline(pipeline_file)


def test_a_real_grib_series_ingested_natively_over_two_nights(
    tmp_path: Path, client: Any, sample_data: Path
) -> None:
    """ERA5 split into one GRIB1 file per time (``make data``), rewritten into Zarr chunks."""
    import shutil

    files = sorted((sample_data / "era5-series").glob("*.grib"))
    assert len(files) == 4
    (tmp_path / "src").mkdir()
    for f in files[:2]:
        shutil.copy(f, tmp_path / "src")
    source = {"urls": str(tmp_path / "src" / "*.grib"), "format": "grib"}
    pipeline_file = _pipeline(tmp_path, "era5", source, repo=tmp_path / "repo", mode="native")
    assert icepipe.run(icepipe.load_pipeline(pipeline_file), client=client).dims["time"] == 2
    for f in files[2:]:
        shutil.copy(f, tmp_path / "src")
    again = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert again.dims["time"] == 4 and len(again.files_new) == 2
    (ref,) = _cfgrib(sorted((tmp_path / "src").glob("*.grib")))
    stored = _stored(tmp_path / "repo", "")
    xr.testing.assert_equal(stored[["t", "z"]], ref[["t", "z"]])
    assert validate_pipeline(icepipe.load_pipeline(pipeline_file), sample=None).values_checked


def test_cube_names_do_not_depend_on_the_other_cubes_of_a_file(tmp_path: Path) -> None:
    """A forecast file lacking one cube names the others as its siblings do."""
    from icepipe.sources.formats.grib_index import scan_grib

    both = tmp_path / "both.grib2"
    both.write_bytes(
        _field(np.arange(12.0), 20240101, shortName="10si")
        + _field(np.arange(12.0), 20240101, shortName="2t")
        + _field(np.arange(12.0), 20240101, shortName="tp", stepType="accum", endStep=6)
    )
    one = tmp_path / "one.grib2"
    one.write_bytes(_field(np.arange(12.0), 20240101, shortName="10si"))

    def names(path: Path) -> list[str]:
        return sorted(c.name for c in scan_grib("file://" + str(path), squeeze=False))

    assert names(one) == ["heightAboveGround-level-10"]
    assert names(both) == [
        "heightAboveGround-level-10",
        "heightAboveGround-level-2",
        "surface-stepType-accum",
    ]


def test_grid_sections_that_differ_but_place_points_alike_stay_virtual(
    tmp_path: Path, client: Any
) -> None:
    """Two messages of one variable whose grid sections differ (earth shape) but whose points
    are the same: each decodes in place, so the variable stays virtual."""
    path = tmp_path / "src" / "shapes.grib2"
    path.parent.mkdir()
    path.write_bytes(
        _field(np.arange(12.0), 20240101, shortName="2t", step=0)
        + _field(np.arange(12.0) + 1, 20240101, shortName="2t", step=6, shapeOfTheEarth=0)
    )
    pipeline_file = _pipeline(
        tmp_path, "shapes", {"urls": [str(path)], "format": "grib"}, repo=tmp_path / "repo"
    )
    result = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert result.native_fallback == {}
    (ref,) = _cfgrib([path])
    xr.testing.assert_equal(_stored(tmp_path / "repo", "")[["t2m"]], ref[["t2m"]])


def test_a_variable_on_moving_grids_is_refused_naming_the_fix(tmp_path: Path, client: Any) -> None:
    """Messages of one variable on other areas: cfgrib labels them all with the first area's
    coordinates, so neither route stores them correctly; the run fails before writing."""
    path = tmp_path / "src" / "moving.grib2"
    path.parent.mkdir()
    path.write_bytes(
        _field(np.arange(12.0), 20240101, shortName="2t", step=0)
        + _field(
            np.arange(12.0),
            20240101,
            shortName="2t",
            step=6,
            latitudeOfFirstGridPointInDegrees=20.0,
            latitudeOfLastGridPointInDegrees=18.0,
        )
        + _field(np.arange(12.0), 20240101, shortName="10si", step=0)
    )
    for mode in ("virtual", "native"):
        pipeline_file = _pipeline(
            tmp_path,
            mode,
            {"urls": [str(path)], "format": "grib", "grib_cubes": "all"},
            repo=tmp_path / mode,
            mode=mode,
        )
        with pytest.raises(SourceError, match=r"t2m cannot be ingested correctly.*drop_variables"):
            icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
        assert not (tmp_path / mode).exists()
    doc = {"urls": [str(path)], "format": "grib", "grib_cubes": "all", "drop_variables": ["t2m"]}
    pipeline_file = _pipeline(tmp_path, "dropped", doc, repo=tmp_path / "dropped")
    result = icepipe.run(icepipe.load_pipeline(pipeline_file), client=client)
    assert result.groups == ("heightAboveGround-level-10",)


def test_variables_and_drop_variables_apply_to_the_file_with_grib_cubes(
    tmp_path: Path, client: Any
) -> None:
    _series(tmp_path / "src", [1], isobaric=True)
    urls = str(tmp_path / "src" / "*.grib2")
    only_t = {"urls": urls, "format": "grib", "grib_cubes": "all", "variables": ["t"]}
    p = _pipeline(tmp_path, "only-t", only_t, repo=tmp_path / "r1")
    assert icepipe.run(icepipe.load_pipeline(p), client=client).groups == ("isobaricInhPa",)
    typo = {"urls": urls, "format": "grib", "grib_cubes": "all", "drop_variables": ["t2"]}
    p = _pipeline(tmp_path, "typo", typo, repo=tmp_path / "r2")
    with pytest.raises(SourceError, match=r"has no variable.*t2.*in any of its GRIB hypercubes"):
        icepipe.run(icepipe.load_pipeline(p), client=client)


@pytest.mark.parametrize("mode", ["virtual", "native"])
def test_members_whose_files_order_cubes_differently_combine_along_two_dims(
    tmp_path: Path, client: Any, mode: str
) -> None:
    """One file per (day, ensemble member); some members' files hold one more hypercube, so the
    wanted cube sits at another position in them."""
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for day in (1, 2):
        for member in (0, 1, 2):
            data = b"".join(
                _field(
                    np.arange(12.0) + 100 * member + day + level,
                    20240100 + day,
                    productDefinitionTemplateNumber=1,  # an ensemble member's field
                    typeOfProcessedData=4,
                    perturbationNumber=member,
                    shortName="t",
                    typeOfFirstFixedSurface=100,
                    scaleFactorOfFirstFixedSurface=0,
                    scaledValueOfFirstFixedSurface=level * 100,
                )
                for level in (500, 850)
            )
            if member == 1:  # an extra cube sorted before isobaricInhPa
                data = _field(np.arange(12.0), 20240100 + day, shortName="2t") + data
            path = src / f"d{day}_m{member}.grib2"
            path.write_bytes(data)
            paths.append(path)
    source = {
        "urls": str(src / "*.grib2"),
        "format": "grib",
        "grib_cube": "isobaricInhPa",
        "concat_dims": ["time", "number"],
    }
    p = _pipeline(tmp_path, "members", source, repo=tmp_path / "repo", mode=mode)
    doc = yaml.safe_load(p.read_text())
    del doc["source"]["concat_dim"]
    p.write_text(yaml.safe_dump(doc))
    result = icepipe.run(icepipe.load_pipeline(p), client=client)
    assert result.dims["number"] == 3 and result.dims["time"] == 2
    stored = _stored(tmp_path / "repo", "")
    for path in paths:
        (ref,) = [c for c in _cfgrib([path]) if "isobaricInhPa" in c.dims]
        n, t = int(ref.number.values.reshape(-1)[0]), ref.time.values
        got = stored.t.sel(number=n, time=t)
        np.testing.assert_array_equal(got.values, ref.t.sel(number=n).values, err_msg=path.name)


def test_a_reissued_multi_cube_file_is_reingested_into_every_cube_group(
    tmp_path: Path, client: Any
) -> None:
    paths = _series(tmp_path / "src", [1, 2, 3], isobaric=True)
    source = {"urls": str(tmp_path / "src" / "*.grib2"), "format": "grib", "grib_cubes": "all"}
    p = _pipeline(tmp_path, "cubes", source, repo=tmp_path / "repo", group="nwp")
    doc = yaml.safe_load(p.read_text())
    p.write_text(yaml.safe_dump({**doc, "on_changed": "reingest"}))
    icepipe.run(icepipe.load_pipeline(p), client=client)
    # Day 2 re-issued with other values, same size, same cubes.
    other = _series(tmp_path / "other", [2], isobaric=True)[0].read_bytes()
    data = bytearray(other)
    assert len(data) == paths[1].stat().st_size
    paths[1].write_bytes(
        _wind_message(20240102, 40)
        + _field(np.arange(12.0) + 700, 20240102, shortName="10si")
        + other[len(_wind_message(20240102, 2)) + len(_field(np.arange(12.0), 20240102)) :]
    )
    again = icepipe.run(icepipe.load_pipeline(p), client=client)
    assert again.files_new == ("file://" + str(paths[1]),)
    sfc, iso = _cfgrib(paths)
    xr.testing.assert_equal(
        _stored(tmp_path / "repo", "nwp/heightAboveGround-level-10")[["si10", "u10", "v10"]],
        sfc[["si10", "u10", "v10"]],
    )
    xr.testing.assert_equal(_stored(tmp_path / "repo", "nwp/isobaricInhPa")[["t"]], iso[["t"]])
    assert float(sfc.si10.isel(time=1).max()) == 711.0  # the re-issued values
    # A re-issue that drops a cube cannot go back in place: refused, naming the file.
    paths[2].write_bytes(_series(tmp_path / "flat", [3])[0].read_bytes())
    with pytest.raises(SourceError, match="now holds the GRIB hypercubes"):
        icepipe.run(icepipe.load_pipeline(p), client=client)


def _separate_winds(date: int, seed: float) -> bytes:
    """u and v wind as two ordinary messages (decodable), plus 10si."""
    return (
        _field(np.arange(12.0) + seed, date, shortName="10u")
        + _field(np.arange(12.0) + seed + 100, date, shortName="10v")
        + _field(np.arange(12.0) + seed * 10, date, shortName="10si")
    )


def _paired_winds(date: int, seed: float) -> bytes:
    return _wind_message(date, seed) + _field(np.arange(12.0) + seed * 10, date, shortName="10si")


@pytest.mark.parametrize(
    ("first", "second"), [(_paired_winds, _separate_winds), (_separate_winds, _paired_winds)]
)
def test_a_provider_switching_message_packing_mid_series_is_refused_naming_the_file(
    tmp_path: Path, client: Any, first: Any, second: Any
) -> None:
    """Night 1 stores u10 natively (fallback) or as references; night 2's file needs the other
    route. Appending either way would mix codecs in one array: refused, nothing committed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "d1.grib2").write_bytes(first(20240101, 1))
    p = _pipeline(
        tmp_path, "winds", {"urls": str(src / "*.grib2"), "format": "grib"}, repo=tmp_path / "repo"
    )
    night1 = icepipe.run(icepipe.load_pipeline(p), client=client)
    (src / "d2.grib2").write_bytes(second(20240102, 2))
    with pytest.raises(SchemaMismatchError, match=r"d2\.grib2.*(codecs|GRIB references)"):
        icepipe.run(icepipe.load_pipeline(p), client=client)
    from icepipe.repository import open_repo

    assert open_repo(str(tmp_path / "repo")).lookup_branch("main") == night1.snapshot_id


@pytest.mark.parametrize(
    ("cubes", "recorded"),
    [
        ("all", ["heightAboveGround-level-10", "isobaricInhPa"]),
        (["isobaricInhPa"], ["isobaricInhPa"]),
    ],
)
def test_the_commit_lists_the_hypercubes_it_wrote(
    tmp_path: Path, client: Any, cubes: Any, recorded: list[str]
) -> None:
    # `grib_cubes: all` is stored as an empty tuple of names: it must not read as "no cubes".
    _series(tmp_path / "src", [1], isobaric=True)
    source = {"urls": str(tmp_path / "src" / "*.grib2"), "format": "grib", "grib_cubes": cubes}
    p = _pipeline(tmp_path, "cubes", source, repo=tmp_path / "repo", group="nwp", mode="native")
    assert icepipe.run(icepipe.load_pipeline(p), client=client).status == "committed"
    from icepipe.repository import METADATA_KEY, open_repo

    (newest, *_) = open_repo(str(tmp_path / "repo")).ancestry(branch="main")
    assert newest.metadata[METADATA_KEY]["cubes"] == recorded
