"""The ledger's records: the JSON today's repositories hold, round trips, format versions."""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

import icechunk
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import icepipe
from icepipe import repository
from icepipe.errors import ConfigError, IcepipeError, LedgerError, LedgerVersionError
from icepipe.model import SourceFile
from icepipe.repository import ledger as ledger_module
from icepipe.repository.ledger import (
    _KNOWN_KEYS,
    LEDGER_VERSION,
    METADATA_KEY,
    CommitRecord,
    FileRecord,
    NativeLayout,
    SkippedFile,
    pack_files,
    read_record,
    unpack_files,
)
from tests.conftest import write_pipeline, write_series

# ----------------------------------------------------------------------------------------------
# Commit metadata captured from real runs of icepipe before the ledger module existed (the
# records hold no ledger_version): a virtual and a native pipeline run over two netCDF files,
# a GRIB pipeline with `grib_cubes: all`, and `to_icechunk`. Keys sorted for reading.
# ----------------------------------------------------------------------------------------------

VIRTUAL = {
    "cluster": {"address": "tcp://127.0.0.1:35767", "embedded": True, "workers": 1},
    "concat_dim": "time",
    "files": [
        {
            "length": 4,
            "mtime": "2026-11-30T01:08:48.366784+00:00",
            "size": 12531,
            "start": 0,
            "url": "file:///tmp/ledger_cap/run/src/f000.nc",
        },
        {
            "length": 4,
            "mtime": "2026-11-30T01:08:48.394784+00:00",
            "size": 12527,
            "start": 4,
            "url": "file:///tmp/ledger_cap/run/src/f001.nc",
        },
    ],
    "group": "g",
    "mode": "virtual",
    "order_by": None,
    "pipeline": "capture",
    "pipeline_file": "/tmp/ledger_cap/run/capture.yaml",
    "reingested": [],
    "run_id": "5e6fa6400c154612861ec567a43cd2f2",
    "skipped": [],
    "started_at": "2026-11-30T01:08:48.486578+00:00",
    "version": "0.1.0",
}

NATIVE = {
    "chunks": {"lat": 5, "lon": 6, "time": 4},
    "cluster": {"address": "tcp://127.0.0.1:43621", "embedded": True, "workers": 1},
    "compression": "zstd",
    "concat_dim": "time",
    "files": [
        {
            "length": 4,
            "mtime": "2026-11-30T01:08:48.366784+00:00",
            "size": 12531,
            "start": 0,
            "url": "file:///tmp/ledger_cap/run/src/f000.nc",
        },
        {
            "length": 4,
            "mtime": "2026-11-30T01:08:48.394784+00:00",
            "size": 12527,
            "start": 4,
            "url": "file:///tmp/ledger_cap/run/src/f001.nc",
        },
    ],
    "group": "g",
    "mode": "native",
    "order_by": None,
    "pipeline": "native",
    "pipeline_file": "/tmp/ledger_cap/run/n/native.yaml",
    "reingested": [],
    "run_id": "9d9141678e7943af855cfcc2a7f338c0",
    "shards": None,
    "skipped": [],
    "started_at": "2026-11-30T01:08:55.490583+00:00",
    "version": "0.1.0",
}

_WHY = (
    "the GRIB message at byte 0 holds 2 fields; a virtual chunk is a whole message and the "
    "codec decodes only its first field"
)
GRIB_CUBES = {
    "cluster": {"address": "tcp://127.0.0.1:43471", "embedded": True, "workers": 1},
    "concat_dim": "time",
    "files": [
        {
            "cubes": {"heightAboveGround-level-10": [0, 1], "isobaricInhPa": [0, 1]},
            "mtime": "2026-11-30T01:09:03.270700+00:00",
            "size": 962,
            "url": "file:///tmp/ledger_cap/run/gsrc/day01.grib2",
        },
        {
            "cubes": {"heightAboveGround-level-10": [1, 1], "isobaricInhPa": [1, 1]},
            "mtime": "2026-11-30T01:09:03.278036+00:00",
            "size": 962,
            "url": "file:///tmp/ledger_cap/run/gsrc/day02.grib2",
        },
    ],
    "group": "nwp",
    "mode": "virtual",
    "native_fallback": {
        "heightAboveGround-level-10/u10": _WHY,
        "heightAboveGround-level-10/v10": _WHY,
    },
    "order_by": None,
    "pipeline": "cubes",
    "pipeline_file": "/tmp/ledger_cap/run/gp/cubes.yaml",
    "reingested": [],
    "run_id": "e37bcc3fc84b4ba99b2e0058edb7224e",
    "skipped": [],
    "started_at": "2026-11-30T01:09:03.282199+00:00",
    "version": "0.1.0",
}

TO_ICECHUNK = {"api": "to_icechunk", "group": "era5", "mode": "native", "version": "0.1.0"}

#: What a much older icepipe wrote (tests/test_cf_fidelity.py builds the same).
OLDEST = {
    "group": "",
    "mode": "virtual",
    "files": [{"url": "file:///d/a.nc", "size": 10, "mtime": "2020-01-01T00:00:00", "start": 0}],
}

TODAY = {"virtual": VIRTUAL, "native": NATIVE, "grib_cubes": GRIB_CUBES, "oldest": OLDEST}


# The same virtual and GRIB runs' records as this icepipe writes them (ledger format 2: the file
# list packed into columns).
VIRTUAL_V2 = {
    **{k: v for k, v in VIRTUAL.items() if k != "files"},
    "files": {
        "count": 2,
        "columns": "eJxtjcsKwjAQRf9ltqadycO25jvciZRSkxpIS0lTEMV/d+LGjZsZzuHOnRfsKfZrcj48wIIP0V"
        "lEzPOK0d0"
        "ml/pxWDHtC25pRE8EolyAvQDVy8gky7oK2MLTsZbqqKXgqVqWcw5zsaBINZWUlaYzSUudNV2tm6btzIHIfmv/Rk7mFy"
        "lP8pAy95EwTNEtU74zGsb3B0mgNqc=",
    },
    "ledger_version": 2,
}
GRIB_CUBES_V2 = {
    **{k: v for k, v in GRIB_CUBES.items() if k != "files"},
    "files": {
        "count": 2,
        "columns": "eJyFjMsKgzAQRf9lto1mEkHb7Loq3XXRXRHxMWogPogP2or/3gguhS4GhnPvuQtM1iS9pVK/QU"
        "GpDSnO+dj"
        "03FBRkU3ytOd2ank12JwX6QeBbQ6oFwi/sjqTDsj9ixkM+ksuvISSuXOgGXWzEZAoQ08IL8AnCoUXhYEvI4wQT4gKt+"
        "HjyhmDcK+4vXzKaHB7C9Skq3q8Zt1MN9tNbeEZmsl4Al2MTLiyHrostTq/t/Uj3enK/qjiUN3oGq8/1YVawg==",
    },
    "ledger_version": 2,
}


@pytest.mark.parametrize(("v2", "v1"), [(VIRTUAL_V2, VIRTUAL), (GRIB_CUBES_V2, GRIB_CUBES)])
def test_format_2_records_read_as_the_same_records_as_format_1(
    v2: dict[str, Any], v1: dict[str, Any]
) -> None:
    record = CommitRecord.from_metadata(v2)
    assert record == CommitRecord.from_metadata(v1)
    assert record.n_files == 2 and record.files is not None
    assert [f.url for f in record.files] == [f["url"] for f in v1["files"]]
    # Written again in either format, it holds the same JSON (zlib's bytes may differ between
    # builds, so the packed text is compared by what it reads as).
    assert record.to_metadata(ledger_version=1) == {**v1, "ledger_version": 1}
    again = record.to_metadata()
    assert again.keys() == v2.keys() and again["files"]["count"] == 2
    assert unpack_files(again["files"]) == unpack_files(v2["files"]) == record.files


@pytest.mark.parametrize("name", sorted(TODAY))
def test_todays_unversioned_records_read_and_write_back_unchanged(name: str) -> None:
    stored = TODAY[name]
    record = CommitRecord.from_metadata(stored)
    # Writing it again in format 1 gives the same JSON, now with the format version.
    assert record.to_metadata(ledger_version=1) == {**stored, "ledger_version": 1}
    # Version 1 stated or implied reads identically.
    assert CommitRecord.from_metadata({**stored, "ledger_version": 1}) == record
    # Written in today's format (2: packed columns), it reads back as the same record.
    packed = record.to_metadata()
    assert packed["ledger_version"] == LEDGER_VERSION == 2
    assert {k: v for k, v in packed.items() if k not in ("files", "ledger_version")} == {
        k: v for k, v in stored.items() if k != "files"
    }
    assert CommitRecord.from_metadata(packed) == record


def test_to_icechunk_records_stay_as_they_are() -> None:
    record = CommitRecord.from_metadata(TO_ICECHUNK)
    assert record == CommitRecord(version="0.1.0", mode="native", api="to_icechunk", group="era5")
    assert record.files is None and record.n_files is None
    assert record.to_metadata() == TO_ICECHUNK  # no file list, so no ledger version either


def test_fields_of_a_native_record() -> None:
    record = CommitRecord.from_metadata(NATIVE)
    assert record.pipeline == "native" and record.mode == "native" and record.is_of("g")
    assert not record.is_of(None)
    assert record.layout == NativeLayout({"lat": 5, "lon": 6, "time": 4}, None, "zstd")
    assert record.files is not None and [f.place() for f in record.files] == [(0, 4), (4, 4)]
    assert record.files[1] == FileRecord(
        url="file:///tmp/ledger_cap/run/src/f001.nc",
        size=12527,
        mtime="2026-11-30T01:08:48.394784+00:00",
        start=4,
        length=4,
    )
    assert record.order_by is None and record.reingested == () and record.skipped == ()


def test_fields_of_a_grib_cubes_record() -> None:
    record = CommitRecord.from_metadata(GRIB_CUBES)
    assert record.files is not None
    day2 = record.files[1]
    assert day2.place() is None
    assert day2.place("isobaricInhPa") == (1, 1) and day2.place("nope") is None
    assert repository.ledger_cubes(record.files) == ["heightAboveGround-level-10", "isobaricInhPa"]
    assert record.native_fallback is not None and len(record.native_fallback) == 2


def test_a_file_record_reads_as_the_json_it_is_stored_as() -> None:
    stored = VIRTUAL["files"][0]
    assert isinstance(stored, dict)
    record = FileRecord.from_metadata(stored)
    assert dict(record) == stored and record["start"] == 0 and record.get("etag") is None
    assert "cubes" not in record and len(record) == 5
    listed = SourceFile(stored["url"], stored["size"], stored["mtime"])
    assert listed.same_version(record)
    assert FileRecord.of(listed, start=0, length=4) == record
    assert not SourceFile(stored["url"], 1, stored["mtime"]).same_version(record)


def test_a_newer_ledger_format_is_refused_naming_the_fix() -> None:
    with pytest.raises(LedgerVersionError, match="upgrade icepipe") as info:
        CommitRecord.from_metadata({**VIRTUAL, "ledger_version": LEDGER_VERSION + 1})
    assert info.value.found == LEDGER_VERSION + 1 and info.value.supported == LEDGER_VERSION
    # Not transient: the fix is an upgrade, so the exit code is a configuration one.
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is LedgerVersionError and str(again) == str(info.value)
    assert again.found == info.value.found


@pytest.mark.parametrize("version", ["2", 0, True, None, 1.5])
def test_a_version_that_is_not_one_is_a_ledger_error(version: Any) -> None:
    with pytest.raises(LedgerError, match="ledger_version") as info:
        CommitRecord.from_metadata({**VIRTUAL, "ledger_version": version})
    assert not isinstance(info.value, LedgerVersionError)


@pytest.mark.parametrize(
    ("file", "field"),
    [
        ({"size": 1, "mtime": "t"}, "'url'"),
        ({"url": "file:///a", "size": "1", "mtime": "t"}, "size"),
        ({"url": "file:///a", "size": 1}, "mtime"),
        ({"url": "file:///a", "size": 1, "mtime": "t", "start": 1.5, "length": 1}, "start"),
        ({"url": "file:///a", "size": 1, "mtime": "t", "cubes": {"c": [1]}}, "cubes: c"),
        ("file:///a", "not a mapping"),
    ],
)
def test_a_malformed_file_record_names_the_snapshot_and_field(file: Any, field: str) -> None:
    with pytest.raises(LedgerError, match=field) as info:
        read_record({METADATA_KEY: {"group": "", "files": [file]}}, snapshot_id="ABC123")
    assert "snapshot ABC123" in str(info.value)


def test_metadata_without_an_icepipe_record() -> None:
    assert read_record({}) is None
    assert read_record({METADATA_KEY: "someone else's"}) is None
    assert read_record({METADATA_KEY: TO_ICECHUNK}) == CommitRecord.from_metadata(TO_ICECHUNK)


def _pack(columns: Any) -> str:
    """Columns packed as format 2 stores them (for malformed records)."""
    return base64.b64encode(zlib.compress(json.dumps(columns).encode())).decode()


# Round trips ----------------------------------------------------------------------------------

_text = st.text(max_size=12)
_maybe_text = st.none() | _text
_ints = st.integers(min_value=0, max_value=2**53)
_places = st.dictionaries(_text, st.tuples(_ints, _ints), max_size=3)

file_records = st.builds(
    FileRecord,
    url=_text,
    size=_ints,
    mtime=_text,
    etag=st.none() | st.text(min_size=1, max_size=12),
    start=st.none() | _ints,
    length=st.none() | _ints,
    cubes=st.none() | _places,
)

_json = st.none() | st.booleans() | _ints | _text
commit_records = st.builds(
    CommitRecord,
    version=_maybe_text,
    mode=_maybe_text,
    group=_maybe_text,
    api=_maybe_text,
    pipeline=_maybe_text,
    pipeline_file=_maybe_text,
    concat_dim=_maybe_text,
    order_by=_maybe_text,
    run_id=_maybe_text,
    started_at=_maybe_text,
    cluster=st.none() | st.dictionaries(_text, _json, max_size=3),
    files=st.none() | st.lists(file_records, max_size=4).map(tuple),
    reingested=st.none() | st.lists(_text, max_size=3).map(tuple),
    skipped=st.none() | st.lists(st.builds(SkippedFile, _text, _text), max_size=3).map(tuple),
    cubes=st.none() | st.lists(_text, max_size=3).map(tuple),
    native_fallback=st.none() | st.dictionaries(_text, _text, min_size=1, max_size=3),
    layout=st.none()
    | st.builds(
        NativeLayout,
        # A length per dimension, or a rule along the concat dim (chunks: {time: month}).
        chunks=st.dictionaries(
            _text, _ints | st.sampled_from(["file", "day", "month", "year"]), max_size=3
        ),
        shards=st.none() | st.dictionaries(_text, _ints, max_size=3),
        compression=_text,
    ),
    extra=st.dictionaries(_text.filter(lambda k: k not in _KNOWN_KEYS), _json, max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(record=commit_records, version=st.sampled_from([1, 2]))
def test_commit_records_round_trip_through_the_stored_json(
    record: CommitRecord, version: int
) -> None:
    stored = json.loads(json.dumps(record.to_metadata(ledger_version=version)))
    assert CommitRecord.from_metadata(stored) == record
    assert ("ledger_version" in stored) == (record.files is not None)
    # Both formats hold the same record: only the file list is stored differently.
    other = record.to_metadata(ledger_version=3 - version)
    assert {k: v for k, v in stored.items() if k not in ("files", "ledger_version")} == {
        k: v for k, v in other.items() if k not in ("files", "ledger_version")
    }


@settings(max_examples=200, deadline=None)
@given(files=st.lists(file_records, max_size=6).map(tuple))
def test_packed_file_lists_round_trip(files: tuple[FileRecord, ...]) -> None:
    packed = json.loads(json.dumps(pack_files(files)))
    assert set(packed) == {"count", "columns"} and packed["count"] == len(files)
    assert unpack_files(packed) == files
    # Read without the dataclass's __init__ (a ledger holds 10,000s): still the same frozen,
    # hashable, picklable records as built ones.
    for read, built in zip(unpack_files(packed), files, strict=True):
        assert type(read) is FileRecord and repr(read) == repr(built)
        assert dict(read) == dict(built) and pickle.loads(pickle.dumps(read)) == built
        if built.cubes is None:
            assert hash(read) == hash(built)
        with pytest.raises(dataclasses.FrozenInstanceError):
            read.size = 1  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(record=file_records)
def test_file_records_round_trip_and_pickle(record: FileRecord) -> None:
    assert FileRecord.from_metadata(json.loads(json.dumps(record.to_metadata()))) == record
    assert pickle.loads(pickle.dumps(record)) == record
    assert dict(record) == record.to_metadata()


@settings(max_examples=50, deadline=None)
@given(record=commit_records)
def test_commit_records_pickle(record: CommitRecord) -> None:
    assert pickle.loads(pickle.dumps(record)) == record


# Real repositories ----------------------------------------------------------------------------


def test_a_pipeline_run_writes_format_2(tmp_path: Path, client: Any) -> None:
    files = write_series(tmp_path / "src", 2)
    spec = write_pipeline(tmp_path, name="capture", urls="src/*.nc", group="g")
    result = icepipe.run(icepipe.load_pipeline(spec), client=client)
    repo = repository.open_repo(str(tmp_path / "repo"))
    stored = repo.lookup_snapshot(result.snapshot_id or "").metadata[METADATA_KEY]
    assert set(stored) == {*VIRTUAL, "ledger_version"} and stored["ledger_version"] == 2
    assert set(stored["files"]) == {"count", "columns"} and stored["files"]["count"] == 2
    records = unpack_files(stored["files"])
    assert [set(f) for f in records] == [set(f) for f in VIRTUAL["files"]]  # type: ignore[union-attr]
    assert [f.place() for f in records] == [(0, 4), (4, 4)]
    assert [f.url for f in records] == [f"file://{p}" for p in files]
    ledger = repository.read_ledger(repo, result.snapshot_id or "", "g")
    assert [r.url for r in ledger.values()] == [f"file://{p}" for p in files]
    assert [c.n_files for c in repository.read_log(repo, "main")] == [2, None]


def _commit(path: Path, record: dict[str, Any]) -> str:
    storage = icechunk.local_filesystem_storage(str(path))
    repo = (
        icechunk.Repository.open(storage)
        if icechunk.Repository.exists(storage)
        else icechunk.Repository.create(storage)
    )
    session = repo.writable_session("main")
    # A commit needs a change: one new group per commit.
    zarr.open_group(session.store, path=f"n{len(list(repo.ancestry(branch='main')))}", mode="w")
    return session.commit("by hand", metadata={METADATA_KEY: record})


def test_reading_a_repository_a_newer_icepipe_wrote_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    _commit(path, OLDEST)
    tip = _commit(path, {**OLDEST, "ledger_version": LEDGER_VERSION + 1})
    repo = repository.open_repo(str(path))
    with pytest.raises(LedgerVersionError, match=f"snapshot {tip}.*upgrade icepipe"):
        repository.read_ledger(repo, tip, None)
    with pytest.raises(LedgerVersionError):
        repository.read_log(repo, "main")


def test_unversioned_history_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    first = _commit(path, OLDEST)
    second = _commit(path, {**OLDEST, "files": [{**OLDEST["files"][0], "size": 11}]})  # type: ignore[index]
    repo = repository.open_repo(str(path))
    assert repository.read_ledger(repo, first, "")["file:///d/a.nc"].size == 10
    # The newest record of a URL wins; the order of the data is oldest first.
    assert repository.read_ledger(repo, second, None)["file:///d/a.nc"].size == 11
    assert [r.size for r in repository.read_ingested(repo, second, None)] == [10, 11]
    assert repository.read_ledger(repo, second, "other") == {}
    assert isinstance(LedgerVersionError("x", found=2, supported=1), IcepipeError)


def test_a_run_on_a_repository_a_newer_icepipe_wrote_exits_2_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from icepipe.cli import main

    write_series(tmp_path / "src", 1)
    spec = write_pipeline(tmp_path, urls="src/*.nc", group="g")
    newer = {**OLDEST, "group": "g", "ledger_version": LEDGER_VERSION + 1}
    tip = _commit(tmp_path / "repo", newer)
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"snapshot {tip}" in err and "upgrade icepipe" in err
    # Nothing was written.
    assert repository.open_repo(str(tmp_path / "repo")).lookup_branch("main") == tip


def test_a_history_of_format_1_then_format_2_commits_ingests_each_file_once(
    tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository an icepipe of ledger format 1 wrote, run on by this one: nothing is
    ingested again, new files are, and the history reads in order across both formats."""
    made = write_series(tmp_path / "made", 3)
    (tmp_path / "src").mkdir()
    for p in made[:2]:
        (tmp_path / "src" / p.name).write_bytes(p.read_bytes())
    spec = write_pipeline(tmp_path, urls="src/*.nc", group="g")
    pipeline = icepipe.load_pipeline(spec)
    monkeypatch.setattr(ledger_module, "WRITE_VERSION", 1)
    first = icepipe.run(pipeline, client=client)
    monkeypatch.undo()
    repo = repository.open_repo(str(tmp_path / "repo"))
    old = repo.lookup_snapshot(first.snapshot_id or "").metadata[METADATA_KEY]
    assert old["ledger_version"] == 1 and isinstance(old["files"], list)

    again = icepipe.run(pipeline, client=client)
    assert again.status == "nothing-new" and again.files_already == 2 and not again.files_new

    (tmp_path / "src" / made[2].name).write_bytes(made[2].read_bytes())
    third = icepipe.run(pipeline, client=client)
    src = [f"file://{tmp_path / 'src' / p.name}" for p in made]
    assert third.status == "committed" and third.files_new == (src[2],)
    new = repo.lookup_snapshot(third.snapshot_id or "").metadata[METADATA_KEY]
    assert new["ledger_version"] == 2 and new["files"]["count"] == 1
    assert icepipe.run(pipeline, client=client).status == "nothing-new"

    tip = third.snapshot_id or ""
    ingested = repository.read_ingested(repo, tip, "g")
    assert [(r.url, r.place()) for r in ingested] == [
        (src[0], (0, 4)),
        (src[1], (4, 4)),
        (src[2], (8, 4)),
    ]
    assert sorted(repository.read_ledger(repo, tip, "g")) == src
    assert [c.n_files for c in repository.read_log(repo, "main")] == [1, 2, None]
    ds = icepipe.open_dataset(str(tmp_path / "repo"), group="g")
    expected = xr.open_mfdataset(made, combine="by_coords")
    xr.testing.assert_identical(ds.load(), expected.load())


@pytest.mark.parametrize(
    ("files", "field"),
    [
        ([{"url": "file:///a", "size": 1, "mtime": "t"}], "ledger format 2"),
        ({"count": 1, "columns": "not base64!"}, "do not decode"),
        ({"count": 1, "columns": _pack({"url_prefix": "f", "url": ["a"]})}, "'size'"),
        (
            {
                "count": 2,
                "columns": _pack({"url_prefix": "", "url": ["a"], "size": [1], "mtime": ["t"]}),
            },
            "'url'",
        ),
        (
            {
                "count": 1,
                "columns": _pack({"url_prefix": "", "url": ["a"], "size": [True], "mtime": ["t"]}),
            },
            "'size': expected int values, got True",
        ),
        (
            {
                "count": 1,
                "columns": _pack(
                    {"url_prefix": "", "url": ["a"], "size": [1], "mtime": ["t"], "start": [1.5]}
                ),
            },
            "'start'",
        ),
        ({"count": 1, "columns": _pack([1, 2])}, "not a JSON object"),
    ],
)
def test_a_malformed_format_2_file_list_names_the_snapshot_and_column(
    files: Any, field: str
) -> None:
    stored = {METADATA_KEY: {"group": "", "files": files, "ledger_version": 2}}
    with pytest.raises(LedgerError, match=field) as info:
        read_record(stored, snapshot_id="ABC123")
    assert "snapshot ABC123" in str(info.value)
