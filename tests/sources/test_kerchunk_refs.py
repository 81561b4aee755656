"""Reading a kerchunk reference set: which kind of set a URL is comes from its content (JSON,
gzip JSON, a Parquet folder), never its name; anything else is refused naming the set."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from icepipe.errors import SourceError
from icepipe.sources.formats.kerchunk_refs import is_parquet_set, read_reference_set
from icepipe.storage import StorageOptions
from tests.conftest import write_series
from tests.sources.test_kerchunk import hdf5_refs, write_parquet


@pytest.fixture
def refs(tmp_path: Path) -> dict[str, Any]:
    (path,) = write_series(tmp_path / "nc", 1)
    return hdf5_refs(path, inline=0)


def _misnamed(tmp_path: Path, refs: dict[str, Any]) -> dict[str, Path]:
    """The same set as JSON, gzip JSON and Parquet, each under a name saying another kind."""
    text = json.dumps(refs).encode()
    out = {"plain": tmp_path / "plain.json"}
    out["plain"].write_bytes(text)
    out["gzip named .json"] = tmp_path / "gz.json"
    out["gzip named .json"].write_bytes(gzip.compress(text))
    out["json named .gz"] = tmp_path / "j.json.gz"
    out["json named .gz"].write_bytes(b"\xef\xbb\xbf\n " + text)  # BOM and blank lead
    out["parquet named .json"] = write_parquet(refs, tmp_path / "pq.json")
    return out


def test_the_kind_of_set_comes_from_its_content(tmp_path: Path, refs: dict[str, Any]) -> None:
    sets = _misnamed(tmp_path, refs)
    expected = read_reference_set(f"file://{sets['plain']}").refs
    for what, path in sets.items():
        assert read_reference_set(f"file://{path}").refs == expected, what
    assert is_parquet_set(f"file://{sets['parquet named .json']}")
    assert not is_parquet_set(f"file://{sets['plain']}")


def test_misnamed_sets_in_a_bucket(tmp_path: Path, refs: dict[str, Any], s3: Any) -> None:
    sets = _misnamed(tmp_path, refs)
    bucket = s3.bucket("kinds")
    s3.upload(list(sets.values()), bucket, "refs")
    storage = StorageOptions(**s3.options())
    expected = read_reference_set(f"file://{sets['plain']}").refs
    for what, path in sets.items():
        got = read_reference_set(f"s3://{bucket}/refs/{path.name}", storage).refs
        assert got == expected, what
    # A "folder" marker (an empty object named like the prefix) does not hide a Parquet set.
    s3.client().put_object(Bucket=bucket, Key="refs/pq.json", Body=b"")
    assert read_reference_set(f"s3://{bucket}/refs/pq.json", storage).refs == expected
    with pytest.raises(SourceError, match=r"refs/missing\.json: not found \(neither an object"):
        read_reference_set(f"s3://{bucket}/refs/missing.json", storage)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"  \n", r"is blank"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "is HTML or XML .*error page"),
        (b"PAR1\x15\x04", "is a single Parquet file.*name the folder"),
        (b"(\xb5/\xfd\x00", "is zstd-compressed.*decompress it"),
        (
            gzip.compress(b'{"version": 1, "refs": {}}', mtime=0)[:-12],
            "is gzip-compressed but does not decompress.*truncated",
        ),
        (gzip.compress(b"", mtime=0), r"is empty \(0 bytes\)|is blank"),
        (b'{"version": 1, "refs": {"a": ', "is not valid kerchunk JSON.*truncated"),
        (b'{"version": 2, "refs": {}}', "is a kerchunk reference set of version 2, which icepipe"),
    ],
    ids=["empty", "blank", "html", "parquet", "zstd", "cut-gzip", "empty-gzip", "cut", "v2"],
)
def test_what_is_not_a_set_is_refused_by_name(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "refs.json"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=r"refs\.json: " + message) as info:
        read_reference_set(f"file://{path}")
    assert info.value.exit_code == 3


def test_a_folder_without_zmetadata_is_not_a_parquet_set(
    tmp_path: Path, refs: dict[str, Any]
) -> None:
    folder = write_parquet(refs, tmp_path / "p.parq")
    (folder / ".zmetadata").unlink()
    with pytest.raises(SourceError, match=r"p\.parq: is a folder without \.zmetadata"):
        read_reference_set(f"file://{folder}")
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / ".zmetadata").write_text('{"metadata": {}}')  # a Zarr store's, not kerchunk's
    with pytest.raises(SourceError, match="not that of a kerchunk Parquet reference set"):
        read_reference_set(f"file://{folder}")


def test_format_auto_recognises_sets(tmp_path: Path, refs: dict[str, Any]) -> None:
    """JSON sets by their first bytes (gzip or not, whatever their name), Parquet sets by their
    .zmetadata; Zarr stores and other JSON stay what they are."""
    import zarr

    from icepipe.sources import ScanOptions, list_sources, scan_file
    from icepipe.sources.formats import detect_format

    sets = _misnamed(tmp_path, refs)
    version0 = tmp_path / "v0.dat"
    version0.write_text(json.dumps(refs["refs"]))
    for path in [*sets.values(), version0]:
        assert detect_format(f"file://{path}") == "kerchunk", path.name
    store = tmp_path / "store.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    group.create_array("a", shape=(2,), dtype="i4")
    zarr.consolidate_metadata(str(store))
    assert (store / ".zmetadata").is_file()
    assert detect_format(f"file://{store}") == "zarr"
    other = tmp_path / "item.json"
    other.write_text('{"type": "Feature", "stac_version": "1.0.0"}')
    with pytest.raises(SourceError, match=r"item\.json: not a netCDF3"):
        detect_format(f"file://{other}")
    (f,) = list_sources([f"file://{sets['gzip named .json']}"], is_glob=False)
    scanned = scan_file(f, ScanOptions(format="auto", concat_dim="time"))
    assert scanned.schema.format == "kerchunk"
