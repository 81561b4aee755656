"""Any file name, through listing, scanning, references and read-back, locally and in S3.

A virtual reference stores a URL, and URL parsers reinterpret parts of a path: ``%20`` is a
space to Icechunk, ``#`` and ``?`` end the path for VirtualiZarr. So the property is: whatever
a file is called, the data read back under its name is its own. Every example holds a file and,
where they differ, the file named by its percent-decoded name (``a%20b.nc`` and ``a b.nc``),
with other values, so that reading one for the other shows.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import icepipe
from icepipe.cli import main
from icepipe.errors import SourceError
from tests.conftest import S3Server

# Pieces that mean something to URL parsers, globs or shells, and names from other scripts.
_SPECIAL = ["%20", "%", "%2F", "%25", "#", "?", "[", "]", "*", " ", "\\", "+", "&", "=", ";"]
_TEXT = st.text(
    alphabet=st.characters(
        # Surrogates cannot be encoded, control characters are refused (tested below), and
        # unassigned code points (U+FFFE ...) cannot travel in S3's XML listings.
        blacklist_categories=("Cs", "Cc", "Cn"),
        blacklist_characters="/\x00",
    ),
    min_size=1,
    max_size=12,
)
_STEM = st.lists(st.one_of(st.sampled_from(_SPECIAL), _TEXT), min_size=1, max_size=5).map("".join)


def _valid(name: str) -> bool:
    return name not in (".", "..") and len(name.encode()) <= 250


NAMES = st.lists(_STEM.map(lambda s: s + ".nc").filter(_valid), min_size=1, max_size=3, unique=True)
SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def with_decoded_twins(names: list[str]) -> list[str]:
    """``names`` plus each one's percent-decoded form, when that is another valid name."""
    out = list(dict.fromkeys(names))
    for n in names:
        twin = unquote(n)
        if twin != n and "/" not in twin and "\x00" not in twin and twin not in out:
            out.append(twin)
    return out


def netcdf_bytes(i: int) -> bytes:
    """A small netCDF4 file: 2 days starting at day 2*i, every value equal to i."""
    ds = xr.Dataset(
        {"v": (("time", "x"), np.full((2, 3), float(i), dtype="f4"))},
        coords={"time": pd.date_range("2020-01-01", periods=2) + pd.Timedelta(days=2 * i)},
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.nc"  # netCDF-C cannot create some of these names itself
        ds.to_netcdf(path, engine="netcdf4", encoding={"time": {"units": "days since 2000-01-01"}})
        return path.read_bytes()


def check_read_back(ds: xr.Dataset, n: int) -> None:
    """File i holds 2 steps of value i, in time order: each file's data under its times."""
    assert ds.sizes["time"] == 2 * n
    expected = np.repeat(np.arange(n, dtype="f4"), 2)
    np.testing.assert_array_equal(ds["v"].values[:, 0], expected)


def write_pipeline(folder: Path, urls: Any, repo: str, **source: Any) -> Path:
    doc = {
        "name": "names",
        "source": {"urls": urls, "concat_dim": "time", **source},
        "target": {"repo": repo, "group": "g"},
    }
    path = folder / "names.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@SETTINGS
@given(names=NAMES)
@example(names=["a%20b.nc"])
@example(names=["c#d?.nc", "e[1].nc", "h%.nc"])
@example(names=["x" * 240 + ".nc", "é ü \U0001d518 日本.nc", "b\\s.nc"])
def test_local_file_names_read_back_their_own_data(
    names: list[str], tmp_path: Path, client: Any
) -> None:
    names = with_decoded_twins(names)
    case = tmp_path / uuid.uuid4().hex
    src = case / "src"
    src.mkdir(parents=True)
    for i, name in enumerate(names):
        (src / name).write_bytes(netcdf_bytes(i))
    spec = write_pipeline(case, "src/*.nc", "repo")
    pipeline = icepipe.load_pipeline(spec)
    result = icepipe.run(pipeline, client=client)
    assert sorted(result.files_new) == sorted(f"file://{src / n}" for n in names)
    check_read_back(icepipe.open_dataset(str(case / "repo"), group="g").load(), len(names))
    assert icepipe.run(pipeline, client=client).status == "nothing-new"


def test_folder_names_with_url_characters(tmp_path: Path, client: Any) -> None:
    # The folder itself needs escaping: references and containers must still resolve, for a
    # glob below it and for an explicit list.
    src = tmp_path / "d %41 #x? é"
    src.mkdir()
    names = ["a%20b.nc", "a b.nc", "c#d.nc"]
    for i, name in enumerate(names):
        (src / name).write_bytes(netcdf_bytes(i))
    spec = write_pipeline(tmp_path, [str(src / n) for n in names], "repo")
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    check_read_back(icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), 3)


def test_zarr_store_names_with_url_characters(tmp_path: Path, client: Any) -> None:
    import zarr

    src = tmp_path / "s p%41"
    names = ["a%20b.zarr", "a b.zarr", "c#d?.zarr"]
    for i, name in enumerate(names):
        ds = xr.open_dataset(netcdf_bytes(i)).load()
        # A zarr LocalStore: xarray would read '#' in a path string as a URL fragment.
        ds.to_zarr(zarr.storage.LocalStore(src / name), zarr_format=3, consolidated=False)
    spec = write_pipeline(tmp_path, f"{src.name}/*.zarr", "repo")
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert sorted(result.files_new) == sorted(f"file://{src / n}" for n in names)
    check_read_back(icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), 3)


def test_control_characters_in_names_are_refused_by_name(tmp_path: Path, client: Any) -> None:
    # obstore, which every scan reads through, cannot express such a name: say so, naming
    # the file and the fix, instead of a traceback; on_error: skip ingests the others.
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.nc").write_bytes(netcdf_bytes(0))
    (src / "new\nline.nc").write_bytes(netcdf_bytes(1))
    spec = write_pipeline(tmp_path, "src/*.nc", "repo")
    with pytest.raises(SourceError, match="control character") as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert "rename the file" in str(info.value)
    assert list(info.value.urls) == [f"file://{src}/new\nline.nc"]
    assert not (tmp_path / "repo").exists()
    (tmp_path / "explicit").mkdir()
    explicit = write_pipeline(tmp_path / "explicit", [str(src / "new\nline.nc")], "repo")
    with pytest.raises(SourceError, match="control character"):
        icepipe.run(icepipe.load_pipeline(explicit), client=client)

    doc = yaml.safe_load(spec.read_text())
    doc["on_error"] = "skip"
    spec.write_text(yaml.safe_dump(doc))
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert result.files_new == (f"file://{src}/good.nc",)
    assert list(result.files_skipped) == [f"file://{src}/new\nline.nc"]


def test_symlink_loops_under_a_glob(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "good.nc").write_bytes(netcdf_bytes(0))
    (src / "sub" / "more.nc").write_bytes(netcdf_bytes(1))
    os.symlink("loop.nc", src / "loop.nc")  # points at itself
    os.symlink("..", src / "sub" / "up")  # a folder loop, harmless: listed once
    spec = write_pipeline(tmp_path, "src/**/*.nc", "repo")
    assert main(["run", str(spec)]) == 3
    err = capsys.readouterr().err
    assert f"file://{src}/loop.nc" in err and "symbolic link" in err
    assert "Traceback" not in err

    doc = yaml.safe_load(spec.read_text())
    doc["on_error"] = "skip"
    spec.write_text(yaml.safe_dump(doc))
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert sorted(result.files_new) == [f"file://{src}/good.nc", f"file://{src}/sub/more.nc"]
    assert list(result.files_skipped) == [f"file://{src}/loop.nc"]
    check_read_back(icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), 2)


# ----------------------------------------------------------------------------------------------
# The same in S3 (moto): keys are names too
# ----------------------------------------------------------------------------------------------


@SETTINGS
@given(names=NAMES)
@example(names=["a%20b.nc", "c#d?.nc"])
def test_s3_keys_read_back_their_own_data(
    names: list[str], tmp_path: Path, s3: S3Server, s3_client: Any
) -> None:
    names = with_decoded_twins(names)
    bucket = s3.bucket("names")
    c = s3.client()
    for i, name in enumerate(names):
        c.put_object(Bucket=bucket, Key=f"in dir %41/{name}", Body=netcdf_bytes(i))
    case = tmp_path / uuid.uuid4().hex
    case.mkdir()
    spec = write_pipeline(
        case, f"s3://{bucket}/in dir %41/*.nc", str(case / "repo"), storage=s3.options()
    )
    pipeline = icepipe.load_pipeline(spec)
    result = icepipe.run(pipeline, client=s3_client)
    assert sorted(result.files_new) == sorted(f"s3://{bucket}/in dir %41/{n}" for n in names)
    ds = icepipe.open_dataset(
        str(case / "repo"), group="g", source_storage=pipeline.source.storage
    ).load()
    check_read_back(ds, len(names))
    assert icepipe.run(pipeline, client=s3_client).status == "nothing-new"
