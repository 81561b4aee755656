"""Messy archives' file names through listing -> scan -> ledger (format 2) -> re-run, with small
runs scanned in process: nothing lost, nothing ingested twice, and names that cannot travel
refused by name (``tests/test_file_names.py`` covers names on a cluster and in S3).
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from pathlib import Path

import pytest
import yaml

import icepipe
from icepipe import repository
from icepipe.cli import main
from icepipe.errors import SourceError
from tests.test_file_names import check_read_back, netcdf_bytes, write_pipeline


def _write(folder: Path, names: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(netcdf_bytes(i))


def test_a_name_that_is_not_utf8_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old archives hold Latin-1 names (``caf\\xe9.nc``): Python lists them with surrogates,
    which no URL, reference or ledger can hold. The run names the file and the fix (exit 3)
    instead of a UnicodeEncodeError traceback, and ``on_error: skip`` ingests the others."""
    src = tmp_path / "src"
    _write(src, [b"good.nc", b"caf\xe9.nc"])
    spec = write_pipeline(tmp_path, "src/*.nc", "repo")
    with pytest.raises(SourceError, match="UTF-8") as info:
        icepipe.run(icepipe.load_pipeline(spec))
    assert "rename the file" in str(info.value)
    assert list(info.value.urls) == [f"file://{src}/caf\\xe9.nc"]
    assert not (tmp_path / "repo").exists()
    assert main(["run", str(spec)]) == 3
    err = capsys.readouterr().err
    assert "caf\\xe9.nc" in err and "Traceback" not in err

    doc = yaml.safe_load(spec.read_text())
    doc["on_error"] = "skip"
    spec.write_text(yaml.safe_dump(doc))
    pipeline = icepipe.load_pipeline(spec)
    result = icepipe.run(pipeline)
    assert result.files_new == (f"file://{src}/good.nc",)
    assert list(result.files_skipped) == [f"file://{src}/caf\\xe9.nc"]
    check_read_back(icepipe.open_dataset(str(tmp_path / "repo"), group="g").load(), 1)
    assert icepipe.run(pipeline).files_new == ()

    # Named in an explicit list (from Python: os.listdir gives such names too).
    explicit = os.fsdecode(os.path.join(os.fsencode(src), b"caf\xe9.nc"))
    (tmp_path / "explicit").mkdir()
    spec = write_pipeline(tmp_path / "explicit", "unused", "repo")
    listed = icepipe.load_pipeline(spec)
    listed = dataclasses.replace(
        listed,
        source=dataclasses.replace(listed.source, urls=(f"file://{explicit}",), is_glob=False),
    )
    with pytest.raises(SourceError, match="UTF-8"):
        icepipe.run(listed)


def test_unicode_forms_and_names_prefixing_others_stay_distinct(tmp_path: Path) -> None:
    """NFC and NFD spellings of one name are two files on Linux, as are a name and its
    percent-decoded twin; names sharing long prefixes, and a name that is another's prefix,
    pack into ledger format 2's columns (common prefix + suffixes) and read back as
    themselves: a re-run ingests nothing, a new file only itself. Scanned in process, the
    files after the first through the template route."""
    nfc = unicodedata.normalize("NFC", "café.nc")
    nfd = unicodedata.normalize("NFD", "café.nc")
    assert nfc != nfd
    long = "x" * 200
    odd = ["a%20b.nc", "a b.nc", "c#d?.nc", "e[1]*.nc"]  # URL and glob characters
    names = [nfc, nfd, *odd, f"{long}.nc", f"{long}.nc.nc", f"{long}a.nc", "a.nc", "a.nc.nc"]
    src = tmp_path / "src"
    _write(src, [n.encode() for n in names[:-1]])
    spec = write_pipeline(tmp_path, "src/*.nc", "repo")
    pipeline = icepipe.load_pipeline(spec)
    first = icepipe.run(pipeline)
    assert sorted(first.files_new) == sorted(f"file://{src}/{n}" for n in names[:-1])
    assert icepipe.run(pipeline).status == "nothing-new"
    (src / names[-1]).write_bytes(netcdf_bytes(len(names) - 1))
    last = icepipe.run(pipeline)
    assert last.files_new == (f"file://{src}/{names[-1]}",)
    repo = repository.open_repo(str(tmp_path / "repo"))
    ingested = [f.url for f in repository.read_ingested(repo, repo.lookup_branch("main"), "g")]
    assert sorted(ingested) == sorted(f"file://{src}/{n}" for n in names)
    ds = icepipe.open_dataset(str(tmp_path / "repo"), group="g").load()
    # Files are ordered by time: file i holds value i, whatever its name.
    check_read_back(ds, len(names))


def test_a_zarr_store_whose_name_is_not_utf8_is_a_listing_problem(tmp_path: Path) -> None:
    import numpy as np
    import xarray as xr

    from icepipe.sources import list_sources

    for name, start in ((b"caf\xe9.zarr", 0), (b"b.zarr", 3)):
        ds = xr.Dataset({"v": (("time",), np.arange(3.0))}, coords={"time": np.arange(3) + start})
        ds.to_zarr(os.fsdecode(os.path.join(os.fsencode(tmp_path), name)))
    problems: dict[str, str] = {}
    listed = list_sources([f"file://{tmp_path}/*.zarr"], is_glob=True, unreadable=problems)
    assert [f.url for f in listed] == [f"file://{tmp_path}/b.zarr"]
    assert list(problems) == [f"file://{tmp_path}/caf\\xe9.zarr"]
