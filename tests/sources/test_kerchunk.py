"""Kerchunk reference sets as sources (``format: kerchunk``): sets made by kerchunk itself over
real sample files, ingested incrementally, compared with the same references opened by fsspec."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ujson
import xarray as xr
import yaml

import icepipe
from icepipe import repository
from icepipe.errors import SchemaMismatchError, SourceError
from icepipe.model import SourceFile
from icepipe.sources import ScanOptions, list_sources, scan_file
from icepipe.sources.formats import READERS
from icepipe.sources.formats.kerchunk import _KerchunkStore
from icepipe.sources.formats.kerchunk_refs import read_reference_set
from tests.conftest import write_series

NEMO = "nemo/nemo_1m_2015{:02d}01-2015{:02d}01_grid-T.nc"


def nemo_files(data: Path) -> list[Path]:
    return [data / NEMO.format(m, m + 1) for m in (1, 2, 3)]


def hdf5_refs(path: Path, *, inline: int = 300) -> dict[str, Any]:
    """kerchunk's references to a netCDF4 file; chunks under ``inline`` bytes inlined."""
    from kerchunk.hdf import SingleHdf5ToZarr

    out: dict[str, Any] = SingleHdf5ToZarr(str(path), inline_threshold=inline).translate()
    return out


def netcdf3_refs(path: Path) -> dict[str, Any]:
    from kerchunk.netCDF3 import NetCDF3ToZarr

    out: dict[str, Any] = NetCDF3ToZarr(str(path), inline_threshold=100).translate()
    return out


def write_json(refs: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(refs))
    return path


def write_parquet(refs: dict[str, Any], path: Path, *, record_size: int = 1000) -> Path:
    from kerchunk.df import refs_to_dataframe

    path.parent.mkdir(parents=True, exist_ok=True)
    refs_to_dataframe(refs, str(path), record_size=record_size)
    return path


def fsspec_open(path: Path) -> xr.Dataset:
    """The reference set opened by fsspec's ReferenceFileSystem (the way it is read today)."""
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": {"fo": str(path)}},
        decode_times=False,
    ).load()


def pipeline(
    folder: Path, urls: Any, concat_dim: str, *, mode: str = "virtual", **source: Any
) -> icepipe.Pipeline:
    doc = {
        "name": "refs",
        "source": {"urls": urls, "format": "kerchunk", "concat_dim": concat_dim, **source},
        "mode": mode,
        "target": {"repo": str(folder / "repo"), "group": "g"},
    }
    path = folder / "refs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return icepipe.load_pipeline(path)


def stored(p: icepipe.Pipeline) -> xr.Dataset:
    ds = icepipe.open_dataset(p.target.repo, group="g", decode_times=False)
    return ds.load()


def concat(parts: list[xr.Dataset], dim: str) -> xr.Dataset:
    return xr.concat(
        parts, dim=dim, data_vars="minimal", coords="minimal", compat="override", join="override"
    )


def test_the_reader_is_registered_and_pickles() -> None:
    assert READERS["kerchunk"].name == "kerchunk"
    assert pickle.loads(pickle.dumps(READERS["kerchunk"])).name == "kerchunk"
    # format: auto (tests/sources/test_kerchunk_refs.py): by content, not by name.
    assert READERS["kerchunk"].detect(b'{"version": 1, "refs": {}}', "file:///x.bin")
    assert not READERS["kerchunk"].detect(b'{"type": "Feature"}', "file:///x.json")


def test_nemo_sets_ingest_one_by_one_exactly_once(tmp_path: Path, sample_data: Path) -> None:
    """Real netCDF4 files: one JSON set per file; a new set appends, re-runs add nothing;
    inline coordinates come through; equal to the sets opened by fsspec."""
    files = nemo_files(sample_data)
    sets = [write_json(hdf5_refs(f), tmp_path / "refs" / f"{f.stem}.json") for f in files]
    inline = [k for k, v in json.loads(sets[0].read_text())["refs"].items() if isinstance(v, str)]
    assert "time_counter/0" in inline  # kerchunk inlined the small time coordinates
    later = sets[2].rename(tmp_path / "later.json")
    p = pipeline(tmp_path, str(tmp_path / "refs" / "*.json"), "time_counter")
    p = _with(p, order_by="time_centered")
    first = icepipe.run(p)
    assert first.status == "committed" and len(first.files_new) == 2
    later.rename(sets[2])
    second = icepipe.run(p)
    assert second.files_new == (f"file://{sets[2]}",)
    assert icepipe.run(p).status == "nothing-new"
    expected = concat([fsspec_open(s) for s in sets], "time_counter")
    xr.testing.assert_identical(stored(p), expected)
    # The references point into the original files, not into copies.
    repo = repository.open_repo(p.target.repo)
    prefixes = [c.url_prefix for c in (repo.config.virtual_chunk_containers or {}).values()]
    assert f"file://{sample_data / 'nemo'}/" in prefixes
    assert set(repository.read_ledger(repo, second.snapshot_id or "", "g")) == {
        f"file://{s}" for s in sets
    }


def _with(p: icepipe.Pipeline, **source: Any) -> icepipe.Pipeline:
    assert p.path is not None
    doc = yaml.safe_load(Path(p.path).read_text())
    doc["source"].update(source)
    Path(p.path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return icepipe.load_pipeline(p.path)


def test_netcdf3_sets_as_gzip_json_and_parquet(tmp_path: Path, sample_data: Path) -> None:
    """Real netCDF3 files (kerchunk.netCDF3): a historical run's set gzip-compressed, the
    scenario's as a Parquet directory; two sources, equal to fsspec reading their JSON."""
    names = ("tas_mod1_hist_rectilin_grid_2D", "tas_mod1_rcp45_rectilin_grid_2D")
    refs = [netcdf3_refs(sample_data / "ncarg" / "nug" / f"{n}.nc") for n in names]
    json_sets = [
        write_json(r, tmp_path / "json" / f"{n}.json") for r, n in zip(refs, names, strict=True)
    ]
    folder = tmp_path / "refs"
    folder.mkdir()
    (folder / "a.json.gz").write_bytes(gzip.compress(json_sets[0].read_bytes()))
    write_parquet(refs[1], folder / "b.parq", record_size=5)  # several records per variable
    p = pipeline(tmp_path, str(folder / "*"), "time")
    result = icepipe.run(p)
    assert result.files_new == (f"file://{folder}/a.json.gz", f"file://{folder}/b.parq")
    expected = concat([fsspec_open(s) for s in json_sets], "time")
    xr.testing.assert_identical(stored(p), expected)
    # The Parquet set holds the same references as its JSON.
    parquet = read_reference_set(f"file://{folder}/b.parq").refs
    as_json = read_reference_set(f"file://{json_sets[1]}").refs
    chunks = {k: v for k, v in as_json.items() if not k.rsplit("/", 1)[-1].startswith(".")}
    assert len(chunks) > 5 and {k: parquet[k] for k in chunks} == {
        k: v.encode() if isinstance(v, str) else v  # inline data: text in JSON
        for k, v in chunks.items()
    }


def test_a_combined_set_then_single_sets_append(tmp_path: Path) -> None:
    """A MultiZarrToZarr set of two files, then one set per later file: the same data as the
    netCDF files opened together."""
    from kerchunk.combine import MultiZarrToZarr

    paths = write_series(tmp_path / "nc", 4, steps=3)
    combined = MultiZarrToZarr(
        [hdf5_refs(x) for x in paths[:2]], concat_dims=["time"], identical_dims=["lat", "lon"]
    ).translate()
    refs = tmp_path / "refs"
    write_json(combined, refs / "a-2020.json")
    p = pipeline(tmp_path, str(refs / "*.json"), "time")
    assert icepipe.run(p).status == "committed"
    for i in (2, 3):
        write_json(hdf5_refs(paths[i]), refs / f"b-{i}.json")
        assert len(icepipe.run(p).files_new) == 1
    expected = xr.open_mfdataset(paths, decode_times=False, combine="nested", concat_dim="time")
    xr.testing.assert_equal(stored(p), expected.load())


def test_templates_and_relative_paths(tmp_path: Path) -> None:
    """``templates`` are expanded and a relative path is relative to the set's folder."""
    paths = write_series(tmp_path / "data", 2, steps=2)
    one = hdf5_refs(paths[0])
    for v in one["refs"].values():
        if isinstance(v, list):
            v[0] = "../data/" + Path(v[0]).name  # relative to refs/
    two = hdf5_refs(paths[1])
    two["templates"] = {"u": f"file://{tmp_path / 'data'}"}
    for v in two["refs"].values():
        if isinstance(v, list):
            v[0] = "{{u}}/" + Path(v[0]).name
    write_json(one, tmp_path / "refs" / "1.json")
    write_json(two, tmp_path / "refs" / "2.json")
    p = pipeline(tmp_path, str(tmp_path / "refs" / "*.json"), "time")
    icepipe.run(p)
    expected = xr.open_mfdataset(paths, decode_times=False, combine="nested", concat_dim="time")
    xr.testing.assert_equal(stored(p), expected.load())


def test_native_mode_reads_through_the_references(
    tmp_path: Path, sample_data: Path, client: Any
) -> None:
    files = nemo_files(sample_data)[:2]
    sets = [write_json(hdf5_refs(f), tmp_path / "refs" / f"{f.stem}.json") for f in files]
    p = pipeline(tmp_path, str(tmp_path / "refs" / "*.json"), "time_counter", mode="native")
    p = _with(p, order_by="time_centered")
    assert icepipe.run(p, client=client).status == "committed"
    got = stored(p)
    expected = concat([fsspec_open(s) for s in sets], "time_counter")
    for name in expected.variables:
        np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
    store = _KerchunkStore(f"file://{sets[0]}", None, None)
    assert pickle.loads(pickle.dumps(store))._icepipe_location == (f"file://{sets[0]}", None, None)


def _scan(url: str) -> Any:
    (f,) = list_sources([url], is_glob=False)
    return scan_file(f, ScanOptions(format="kerchunk", concat_dim="time"))


def test_a_truncated_or_corrupt_set_names_it(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "nc", 1)
    text = json.dumps(hdf5_refs(path))
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(SourceError, match=r"cut\.json: is not valid kerchunk JSON.*truncated"):
        _scan(f"file://{cut}")
    gz = tmp_path / "cut.json.gz"
    gz.write_bytes(gzip.compress(text.encode())[:-20])
    with pytest.raises(
        SourceError, match=r"cut\.json\.gz: is gzip-compressed but does not decompress"
    ):
        _scan(f"file://{gz}")
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(SourceError, match="not a kerchunk reference set"):
        _scan(f"file://{other}")
    gen = tmp_path / "gen.json"
    gen.write_text(json.dumps({**json.loads(text), "gen": [{"key": "x/{{i}}", "url": "u"}]}))
    with pytest.raises(SourceError, match=r"gen\.json: gen\[0\] is not an object with 'key'"):
        _scan(f"file://{gen}")
    pq = write_parquet(hdf5_refs(path), tmp_path / "p.parq")
    record = next(pq.glob("tas/refs.0.parq"))
    whole = record.read_bytes()
    # Garbage, and a record cut short: refused by their framing before fastparquet's compiled
    # metadata parser sees them (it crashed the process on such bytes, now and then).
    for broken in (b"PAR1 not really", whole[: len(whole) // 2], whole[:-8] + whole[-4:] * 2):
        record.write_bytes(broken)
        with pytest.raises(SourceError, match=r"refs\.0\.parq: is not a readable Parquet file"):
            _scan(f"file://{pq}")


def test_references_to_missing_or_shorter_files_name_the_set_and_the_file(
    tmp_path: Path,
) -> None:
    (path,) = write_series(tmp_path / "nc", 1)
    refs = write_json(hdf5_refs(path, inline=0), tmp_path / "r.json")
    moved = path.rename(tmp_path / "moved.nc")
    with pytest.raises(SourceError, match=rf"r\.json: references file://{path}, which does not"):
        _scan(f"file://{refs}")
    moved.rename(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(SourceError, match=rf"r\.json: .*of file://{path}, which has \d+ bytes"):
        _scan(f"file://{refs}")


def test_a_pipeline_run_fails_with_exit_3_on_a_bad_set(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "bad.json").write_text('{"version": 1, "refs": {".zgroup": "{\\"zarr_for')
    p = pipeline(tmp_path, str(refs / "*.json"), "time")
    with pytest.raises(SourceError) as info:
        icepipe.run(p)
    assert info.value.exit_code == 3 and "bad.json" in str(info.value)
    assert not (tmp_path / "repo").exists()  # a failing first run leaves nothing behind


def test_schema_drift_between_sets_names_the_set(tmp_path: Path) -> None:
    first = write_series(tmp_path / "a", 1, dtype="f4")
    later = write_series(tmp_path / "b", 1, dtype="f8", start="2021-01-01", prefix="g")
    refs = tmp_path / "refs"
    write_json(hdf5_refs(first[0]), refs / "1.json")
    p = pipeline(tmp_path, str(refs / "*.json"), "time")
    icepipe.run(p)
    write_json(hdf5_refs(later[0]), refs / "2.json")
    with pytest.raises(SchemaMismatchError, match=r"2\.json.*tas.*float64") as info:
        icepipe.run(p)
    assert info.value.exit_code == 3


def test_a_set_in_a_group(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "nc", 1)
    refs = hdf5_refs(path)
    nested = {"version": 1, "refs": {".zgroup": json.dumps({"zarr_format": 2})}}
    for k, v in refs["refs"].items():
        nested["refs"][f"sub/{k}"] = v
    url = f"file://{write_json(nested, tmp_path / 'n.json')}"
    (f,) = list_sources([url], is_glob=False)
    scanned = scan_file(f, ScanOptions(format="kerchunk", concat_dim="time", group="sub"))
    assert "tas" in scanned.dataset  # type: ignore[union-attr]
    with pytest.raises(SourceError, match=r"check source\.group"):
        scan_file(f, ScanOptions(format="kerchunk", concat_dim="time", group="nope"))


def test_scanned_sets_pickle(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "nc", 1)
    url = f"file://{write_json(hdf5_refs(path), tmp_path / 'r.json')}"
    scanned = _scan(url)
    again = pickle.loads(pickle.dumps(scanned))
    assert again.schema == scanned.schema
    assert isinstance(again.source, SourceFile)
    assert ujson.loads(Path(url.removeprefix("file://")).read_text())["version"] == 1


def test_sets_in_s3_pointing_to_s3_data(tmp_path: Path, sample_data: Path, s3: Any) -> None:
    """Real netCDF4 files and their reference sets (JSON and Parquet) in a bucket: the
    references point to S3 objects, whose folder becomes the repository's container."""
    files = nemo_files(sample_data)
    bucket = s3.bucket("refs")
    s3.upload(files, bucket, "nemo")
    local_sets = []
    for f in files:
        refs = hdf5_refs(f)
        for v in refs["refs"].values():
            if isinstance(v, list):
                v[0] = f"s3://{bucket}/nemo/{Path(v[0]).name}"
        local_sets.append(write_json(refs, tmp_path / "s3refs" / f"{f.stem}.json"))
    write_parquet(json.loads(local_sets[2].read_text()), tmp_path / "s3refs" / "c.parq")
    s3.upload(local_sets[:2], bucket, "refs")
    s3.upload([tmp_path / "s3refs" / "c.parq"], bucket, "refs")
    p = pipeline(
        tmp_path,
        f"s3://{bucket}/refs/*",
        "time_counter",
        order_by="time_centered",
        storage=s3.options(),
    )
    result = icepipe.run(p)
    assert len(result.files_new) == 3 and f"s3://{bucket}/refs/c.parq" in result.files_new
    got = icepipe.open_dataset(
        p.target.repo, group="g", decode_times=False, source_storage=p.source.storage
    ).load()
    expected = concat([fsspec_open(s) for s in _local(local_sets, files)], "time_counter")
    xr.testing.assert_identical(got, expected)
    repo = repository.open_repo(p.target.repo, source_storage=p.source.storage)
    prefixes = [c.url_prefix for c in (repo.config.virtual_chunk_containers or {}).values()]
    assert f"s3://{bucket}/nemo/" in prefixes
    assert icepipe.run(p).status == "nothing-new"


def _local(sets: list[Path], files: list[Path]) -> list[Path]:
    """The sets pointing to the local copies of the files (for fsspec, which has no S3 here)."""
    out = []
    for s, f in zip(sets, files, strict=True):
        refs = json.loads(s.read_text())
        for v in refs["refs"].values():
            if isinstance(v, list):
                v[0] = str(f)
        out.append(write_json(refs, s.with_suffix(".local.json")))
    return out


def test_a_later_set_pointing_into_a_new_folder_adds_its_container(tmp_path: Path) -> None:
    """The second run's references point into a folder the repository has no container for
    yet: it is added (the session reopened) before the write, and read back."""
    first = write_series(tmp_path / "2020", 1, steps=2)
    later = write_series(tmp_path / "2021", 1, steps=2, start="2021-01-01", prefix="g")
    refs = tmp_path / "refs"
    write_json(hdf5_refs(first[0], inline=0), refs / "1.json")
    p = pipeline(tmp_path, str(refs / "*.json"), "time")
    icepipe.run(p)
    write_json(hdf5_refs(later[0], inline=0), refs / "2.json")
    assert icepipe.run(p).status == "committed"
    repo = repository.open_repo(p.target.repo)
    prefixes = {c.url_prefix for c in (repo.config.virtual_chunk_containers or {}).values()}
    assert {f"file://{tmp_path / '2020'}/", f"file://{tmp_path / '2021'}/"} <= prefixes
    expected = xr.open_mfdataset(
        [*first, *later], decode_times=False, combine="nested", concat_dim="time"
    )
    xr.testing.assert_equal(stored(p), expected.load())


def test_validate_compares_the_repository_with_the_sets(tmp_path: Path) -> None:
    from icepipe.cli import main

    paths = write_series(tmp_path / "nc", 2)
    refs = tmp_path / "refs"
    for x in paths:
        write_json(hdf5_refs(x), refs / f"{x.stem}.json")
    p = pipeline(tmp_path, str(refs / "*.json"), "time")
    icepipe.run(p)
    assert main(["validate", str(p.path), "--all"]) == 0


@pytest.mark.parametrize("kind", ["netcdf3", "netcdf4"])
def test_split_translation_equals_virtualizarrs(sample_data: Path, kind: str) -> None:
    """icepipe translates the root group variable by variable (VirtualiZarr's translator scans
    every reference once per variable): the same manifests, metadata and attributes."""
    from virtualizarr.parsers.kerchunk.translator import manifestgroup_from_kerchunk_refs

    from icepipe.sources.formats.kerchunk import manifest_group

    if kind == "netcdf3":
        refs = netcdf3_refs(sample_data / "ncarg/nug/tas_mod1_hist_rectilin_grid_2D.nc")
    else:
        refs = hdf5_refs(nemo_files(sample_data)[0])
    ours = manifest_group(dict(refs["refs"]), None)
    theirs = manifestgroup_from_kerchunk_refs(json.loads(json.dumps(refs)), None)
    assert ours.metadata.attributes == theirs.metadata.attributes
    assert sorted(ours.arrays) == sorted(theirs.arrays) and len(ours.arrays) > 3
    for name, a in ours.arrays.items():
        b = theirs.arrays[name]
        assert a.metadata == b.metadata, name
        assert a.manifest.dict() == b.manifest.dict(), name


@pytest.mark.parametrize("on_changed", ["fail", "reingest"])
def test_a_set_regenerated_with_more_files_is_refused(tmp_path: Path, on_changed: str) -> None:
    from kerchunk.combine import MultiZarrToZarr

    from icepipe.errors import IcepipeError

    paths = write_series(tmp_path / "nc", 3, steps=2)

    def combined(n: int) -> dict[str, Any]:
        out: dict[str, Any] = MultiZarrToZarr(
            [hdf5_refs(x) for x in paths[:n]], concat_dims=["time"], identical_dims=["lat", "lon"]
        ).translate()
        return out

    set_path = write_json(combined(2), tmp_path / "refs" / "all.json")
    p = pipeline(tmp_path, str(tmp_path / "refs" / "*.json"), "time")
    p = _with(p) if on_changed == "fail" else _on_changed(p, on_changed)
    icepipe.run(p)
    before = stored(p)
    write_json(combined(3), set_path)
    with pytest.raises(IcepipeError, match=r"all\.json") as info:
        icepipe.run(p)
    assert info.value.exit_code in (2, 3)
    xr.testing.assert_identical(stored(p), before)  # nothing committed


def _on_changed(p: icepipe.Pipeline, value: str) -> icepipe.Pipeline:
    assert p.path is not None
    doc = yaml.safe_load(Path(p.path).read_text())
    doc["on_changed"] = value
    Path(p.path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return icepipe.load_pipeline(p.path)
