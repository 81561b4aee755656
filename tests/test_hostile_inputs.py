"""Clumsy and hostile inputs found by a tester from the README alone (issue 11): each must give
a clear error naming the field or file and the fix, before any work where it can, and never a
traceback or data stored under the wrong labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

import icepipe
from icepipe import repository
from icepipe.cli import main
from icepipe.errors import ConfigError, SourceError
from icepipe.ops.validate import validate_pipeline
from tests.conftest import write_pipeline, write_series


def doc(urls: Any = "src/*.nc", **target_keys: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "source": {"urls": urls, "concat_dim": "time"},
        "target": {"repo": "repo", **target_keys},
    }


def write(tmp_path: Path, d: dict[str, Any]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


# ----------------------------------------------------------------------------------------------
# The pipeline file
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["../x", ".", "a/../b", "a//b", "__x", "a/./b", "x\ny"])
def test_invalid_group_paths_fail_at_load_time(tmp_path: Path, group: str) -> None:
    with pytest.raises(ConfigError) as info:
        icepipe.load_pipeline(write(tmp_path, doc(group=group)))
    assert info.value.field == "target.group"
    assert "leave target.group out for the root group" in str(info.value)


@pytest.mark.parametrize("group", ["sst", "ocean/sst", "/ocean/sst/", "a.b", "x-1"])
def test_valid_group_paths_load(tmp_path: Path, group: str) -> None:
    p = icepipe.load_pipeline(write(tmp_path, doc(group=group)))
    assert p.target.group == group.strip("/")


def test_pipeline_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    text = yaml.safe_dump(doc())
    path.write_bytes(text.encode() + b"# caf\xe9 latin-1\n")
    with pytest.raises(ConfigError, match="not UTF-8 text") as info:
        icepipe.load_pipeline(path)
    line = text.count("\n") + 1
    assert f"line {line}" in str(info.value) and "save it as UTF-8" in str(info.value)
    assert main(["run", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    # A byte-order mark is UTF-8 all the same.
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(doc()).encode())
    assert icepipe.load_pipeline(path).name == "p"


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\n"
        "source:\n  urls: a/*.nc\n  concat_dim: time\n"
        "target:\n  repo: repo\n"
        "source:\n  urls: b/*.nc\n  concat_dim: time\n"
    )
    with pytest.raises(ConfigError, match="'source' twice") as info:
        icepipe.load_pipeline(path)
    assert "first at line 2" in str(info.value) and "line 7" in str(info.value)
    path.write_text("name: p\nsource: {urls: a.nc, concat_dim: time, concat_dim: t}\n")
    with pytest.raises(ConfigError, match="'concat_dim' twice"):
        icepipe.load_pipeline(path)


@pytest.mark.parametrize(
    ("urls", "repo"),
    [
        ("**", "repo"),
        ("data/**/*", "data/repo"),
        ("*/*", "repo"),
        (["repo/snapshots/1CECHNKREP0F1RSTCMT0"], "repo"),
    ],
)
def test_sources_covering_the_repository_fail_at_load_time(
    tmp_path: Path, urls: Any, repo: str
) -> None:
    d = doc(urls)
    d["target"]["repo"] = repo
    with pytest.raises(ConfigError, match="covers the pipeline's own repository") as info:
        icepipe.load_pipeline(write(tmp_path, d))
    assert info.value.field == "source.urls"
    assert "move target.repo out of the source folder" in str(info.value)


@pytest.mark.parametrize(
    ("urls", "repo"),
    [
        ("src/*.nc", "repo"),
        ("**/*.nc", "repo"),
        ("data/*", "repos/x"),
        ("*", "repo"),  # its lock file beside it is hidden: `*` does not list .repo.icepipe.lock
    ],
)
def test_sources_beside_the_repository_load(tmp_path: Path, urls: str, repo: str) -> None:
    d = doc(urls)
    d["target"]["repo"] = repo
    icepipe.load_pipeline(write(tmp_path, d))


def test_validate_sample_must_be_positive(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    for bad in ("-1", "0", "x"):
        with pytest.raises(SystemExit) as info:
            main(["validate", str(spec), "--sample", bad])
        assert info.value.code == 2
        assert "--sample" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(spec), "--stage-sample", "-1"])
    with pytest.raises(ConfigError, match="got -1"):
        validate_pipeline(icepipe.load_pipeline(spec), sample=-1)
    assert main(["validate", str(spec), "--sample", "1"]) == 0


# ----------------------------------------------------------------------------------------------
# Source files
# ----------------------------------------------------------------------------------------------


def test_reingest_refuses_a_reissue_whose_times_moved(tmp_path: Path, client: Any) -> None:
    # Same length, other time values: writing it into the old region would label its data with
    # the old times.
    files = write_series(tmp_path / "src", 3, steps=4, time_chunk=4)
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="on_changed: reingest\n")
    pipeline = icepipe.load_pipeline(spec)
    tip = icepipe.run(pipeline, client=client).snapshot_id
    moved = write_series(tmp_path / "fix", 3, steps=4, time_chunk=4, seed=5, start="2020-01-03")
    moved[1].replace(files[1])
    with pytest.raises(SourceError, match="values moved") as info:
        icepipe.run(pipeline, client=client)
    assert f"file://{files[1]}" in str(info.value) and "Restore the file" in str(info.value)
    assert info.value.exit_code == 3
    assert repository.open_repo(str(tmp_path / "repo")).lookup_branch("main") == tip

    # Re-encoded times (other units, same instants) are refused too: the region write would
    # store the numbers under the stored units.
    recoded = write_series(
        tmp_path / "fix2", 3, steps=4, time_chunk=4, seed=6, time_units="hours since 2000-01-01"
    )
    recoded[1].replace(files[1])
    with pytest.raises(SourceError, match="units 'hours since"):
        icepipe.run(pipeline, client=client)
    assert repository.open_repo(str(tmp_path / "repo")).lookup_branch("main") == tip


def test_zero_length_dimension_other_than_concat_dim(tmp_path: Path, client: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        xr.Dataset(
            {"v": (("time", "lat"), np.zeros((2, 0), "f4")), "w": ("time", np.ones(2, "f4"))},
            coords={"time": np.array([1, 2]) + 2 * i, "lat": np.array([], "f8")},
        ).to_netcdf(src / f"f{i}.nc", format="NETCDF4")
    for mode in ("virtual", "native"):
        spec = write_pipeline(tmp_path, urls="src/*.nc", extra=f"mode: {mode}\n")
        with pytest.raises(SourceError, match="hold no values") as info:
            icepipe.run(icepipe.load_pipeline(spec), client=client)
        assert "lat, v" in str(info.value) and "source.drop_variables" in str(info.value)
        assert not (tmp_path / "repo").exists()
    # Dropping them, as the message says, ingests the rest.
    d = yaml.safe_load(write_pipeline(tmp_path, urls="src/*.nc").read_text())
    d["source"]["drop_variables"] = ["v", "lat"]
    path = write(tmp_path, d)
    icepipe.run(icepipe.load_pipeline(path), client=client)
    stored = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    assert set(stored.data_vars) == {"w"} and stored.sizes["time"] == 4


def test_zero_length_time_says_it_has_no_steps(tmp_path: Path, client: Any) -> None:
    # A netCDF4 file whose only use of `time` is its 0-length coordinate: VirtualiZarr drops
    # both, and the message said "has no dimension 'time'".
    src = tmp_path / "src"
    src.mkdir()
    write_series(src, 1)
    with netCDF4.Dataset(src / "empty.nc", "w") as nc:
        nc.createDimension("time", None)
        t = nc.createVariable("time", "i8", ("time",))
        t.units = "days since 2000-01-01"
    spec = write_pipeline(tmp_path, urls="src/*.nc")
    with pytest.raises(SourceError, match="has no steps along 'time'") as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert "has no dimension" not in str(info.value)
