"""sources/listing.py: local globs listed by the operating system's own folder walk.

Local folders are listed with ``os.scandir`` (one ``stat`` per matching file, streamed into
records); object stores through obstore. The walk must list what obstore lists for the same
local folder (names, sizes, modification times, Zarr stores), on odd names and nested globs,
and, where obstore would give up (dangling links, loops, unreadable folders, files deleted
while listing), name the entries that cannot be ingested and list the rest.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from icepipe.errors import SourceError
from icepipe.sources import listing
from icepipe.sources.listing import list_sources

# Pieces that mean something to URLs, globs or shells, and names from other scripts.
_PIECES = ["a", "b", " ", "%", "%20", "#", "?", "[x]", "ü", "日本", "+", "=", ".", "-"]
_NAME = (
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4)
    .map("".join)
    .filter(lambda n: n not in (".", ".."))
)
#: A tree: relative file paths (one or two folders deep) -> size.
_TREE = st.dictionaries(
    st.lists(_NAME, min_size=1, max_size=3).map(
        lambda parts: "/".join([*parts[:-1], parts[-1] + ".nc"])
    ),
    st.integers(min_value=0, max_value=40),
    min_size=1,
    max_size=8,
)
_PATTERNS = ["*.nc", "**/*.nc", "*/*.nc", "**", "a*/**/*.nc", "*[x]*.nc"]


def _make(root: Path, tree: dict[str, int]) -> None:
    for rel, size in tree.items():
        path = root / rel
        if any(p.is_file() for p in [*path.parents][: len(Path(rel).parts) - 1]):
            continue  # a file already holds this folder's name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            path.write_bytes(b"x" * size)


def _both_routes(root: Path, pattern: str) -> tuple[list[object], list[object], dict[str, str]]:
    base = f"file://{root}"
    problems: dict[str, str] = {}
    walked = listing._list_local_glob(f"{base}/{pattern}", base, pattern, problems)
    stored = listing._list_store_glob(f"{base}/{pattern}", base, pattern, None)
    return walked, stored, problems


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=_TREE, pattern=st.sampled_from(_PATTERNS))
@example(tree={"a b.nc": 1, "c%20d.nc": 2, "e#f?.nc": 3, "日本/ü[x].nc": 4}, pattern="**/*.nc")
@example(tree={"a/b/c.nc": 1, "a/d.nc": 2, "e.nc": 3}, pattern="a*/**/*.nc")
def test_the_folder_walk_lists_what_obstore_lists(
    tree: dict[str, int], pattern: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("tree")
    _make(root, tree)
    walked, stored, problems = _both_routes(root, pattern)
    assert walked == stored  # URLs, sizes and modification times, in URL order
    assert problems == {}


def test_hidden_names_need_a_dot_in_the_pattern_either_way(tmp_path: Path) -> None:
    """macOS's AppleDouble ``._a.nc`` beside ``a.nc``, an rsync temporary file, a snapshot
    folder: not sources unless the pattern names the dot (a run failed on them before)."""
    for rel in ("a.nc", "._a.nc", ".a.nc.Xa1b2c", "d/b.nc", ".snapshot/a.nc", "d/.git/c.nc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listed = {
        pattern: [f.url.removeprefix(f"file://{tmp_path}/") for f in walked]
        for pattern in ("*.nc", "**/*.nc", "*", ".*.nc", ".snapshot/*.nc")
        for walked, stored, _ in [_both_routes(tmp_path, pattern)]
        if walked == stored or pytest.fail(f"{pattern}: {walked} != {stored}")
    }
    assert listed == {
        "*.nc": ["a.nc"],
        "**/*.nc": ["a.nc", "d/b.nc"],
        "*": ["a.nc"],
        ".*.nc": ["._a.nc"],
        ".snapshot/*.nc": [".snapshot/a.nc"],
    }


def test_zarr_stores_under_a_glob_are_one_source_either_way(tmp_path: Path) -> None:
    (tmp_path / "x.zarr" / "v" / "c").mkdir(parents=True)
    (tmp_path / "x.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "x.zarr" / "v" / "c" / "0").write_bytes(b"12345")
    (tmp_path / "plain.zarr").mkdir()  # no Zarr metadata: not a store
    (tmp_path / "plain.zarr" / "f").write_bytes(b"1")
    for pattern in ("*.zarr", "**"):
        walked, stored, _ = _both_routes(tmp_path, pattern)
        assert walked == stored
    (store,) = list_sources([f"file://{tmp_path}/*.zarr"], is_glob=True)
    assert (store.url, store.size) == (f"file://{tmp_path}/x.zarr", 2 + 5)


def test_a_linked_file_is_listed_as_its_target_and_a_linked_folder_once(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.nc").write_bytes(b"abc")
    os.symlink("data/a.nc", tmp_path / "link.nc")
    os.symlink("data", tmp_path / "more")  # the same folder again
    os.symlink("..", tmp_path / "data" / "up")  # a loop
    files = list_sources([f"file://{tmp_path}/**/*.nc"], is_glob=True)
    assert [(f.url, f.size) for f in files] == [
        (f"file://{tmp_path}/data/a.nc", 3),
        (f"file://{tmp_path}/link.nc", 3),
    ]
    assert files[0].mtime == files[1].mtime


def test_a_dangling_link_is_named_only_when_the_glob_matches_it(tmp_path: Path) -> None:
    (tmp_path / "a.nc").write_bytes(b"a")
    os.symlink("gone.nc", tmp_path / "broken.nc")
    os.symlink("gone.txt", tmp_path / "broken.txt")
    os.symlink("self.nc", tmp_path / "self.nc")  # a loop: "too many levels"
    unreadable: dict[str, str] = {}
    files = list_sources([f"file://{tmp_path}/*.nc"], is_glob=True, unreadable=unreadable)
    assert [f.url for f in files] == [f"file://{tmp_path}/a.nc"]
    assert sorted(unreadable) == [f"file://{tmp_path}/broken.nc", f"file://{tmp_path}/self.nc"]
    assert all("symbolic link" in reason for reason in unreadable.values())
    with pytest.raises(SourceError, match=r"broken\.nc"):
        list_sources([f"file://{tmp_path}/*.nc"], is_glob=True)


#: Root without the capabilities that let it read any folder (as tests/test_fault_injection.py).
_NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
_LIST = """
import json, sys
from icepipe.sources.listing import list_sources
unreadable = {}
files = list_sources([sys.argv[1]], is_glob=True, unreadable=unreadable)
print(json.dumps([[f.url for f in files], unreadable]))
"""


def test_an_unreadable_folder_is_named_and_the_rest_listed(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.nc").write_bytes(b"a")
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "b.nc").write_bytes(b"b")
    (tmp_path / "closed").chmod(0)
    try:
        done = subprocess.run(
            [*_NO_DAC, sys.executable, "-c", _LIST, f"file://{tmp_path}/**/*.nc"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert done.returncode == 0, done.stderr
    urls, unreadable = json.loads(done.stdout)
    assert urls == [f"file://{tmp_path}/ok/a.nc"]
    assert list(unreadable) == [f"file://{tmp_path}/closed"]
    assert "cannot be listed" in unreadable[f"file://{tmp_path}/closed"]


def test_files_deleted_while_the_folder_is_walked_are_not_listed(tmp_path: Path) -> None:
    for name in ("a.nc", "b.nc", "c.nc", "d.nc"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.nc").write_bytes(b"x")
    problems: dict[str, str] = {}
    regex = listing.glob_to_regex("**/*.nc")
    walk = listing._walk_local(
        str(tmp_path), recursive=True, problems=problems, base_url=f"file://{tmp_path}", regex=regex
    )
    first, _ = next(walk)  # the folder is read; its entries are stat-ed one by one
    gone = sorted({"a.nc", "b.nc", "c.nc", "d.nc"} - {first})
    for name in gone[:2]:
        (tmp_path / name).unlink()
    (tmp_path / "sub" / "e.nc").unlink()
    (tmp_path / "sub").rmdir()
    rest = [rel for rel, _ in walk]
    assert sorted([first, *rest]) == sorted({"a.nc", "b.nc", "c.nc", "d.nc"} - set(gone[:2]))
    assert problems == {}


def test_the_listing_holds_no_stat_results_or_folder_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3000
    monkeypatch.setattr(listing, "_BATCH", 250)  # 4096 files a batch otherwise
    for i in range(n):
        (tmp_path / f"file-{i:05d}.nc").touch()
    pattern = f"file://{tmp_path}/*.nc"
    list_sources([pattern], is_glob=True)  # warm: compiled regexes and caches
    gc.collect()
    tracemalloc.start()
    try:
        files = list_sources([pattern], is_glob=True)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(files) == n
    # The records themselves (~270 B a file here) and one batch's numbers at any moment:
    # holding every entry's os.stat_result and DirEntry until the end cost ~700 B a file more.
    assert peak - held < 60 * n, (held / n, peak / n)


def test_a_file_the_glob_does_not_match_is_not_stat_ed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.nc").write_bytes(b"a")
    for i in range(50):
        (tmp_path / f"other-{i}.txt").write_bytes(b"b")
    stat_calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        stat_calls.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting_stat)  # counts the calls, does them for real
    files = list_sources([f"file://{tmp_path}/*.nc"], is_glob=True)
    monkeypatch.undo()
    assert [f.url for f in files] == [f"file://{tmp_path}/a.nc"]
    assert not [p for p in stat_calls if p.endswith(".txt")]


@given(
    ns=st.lists(
        st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.integers(min_value=-(10**10), max_value=10**10).map(lambda s: s * 10**9)
        | st.integers(min_value=0, max_value=2 * 10**15).map(lambda us: us * 1000 + 999),
        max_size=20,
    ),
    batch=st.integers(min_value=1, max_value=8),
)
@example(ns=[0, 10**9, -1, 1_700_000_000_000_000_000, 10**19], batch=2)  # 10**19: year 2286
def test_modification_times_formatted_in_batches_read_as_one_at_a_time(
    ns: list[int], batch: int
) -> None:
    """The listing formats its files' times with NumPy a batch at a time; a file named
    explicitly (and a Zarr store) one at a time, as obstore writes them: the ledger compares
    both, so they must be the same text."""
    assert listing._local_mtimes(ns, batch=batch) == [listing._local_mtime(n) for n in ns]


def test_records_built_without_init_are_the_records_init_builds() -> None:
    """The listing sets SourceFile's slots directly (see _source_files): a field added to
    SourceFile without a place there would be left unset, and show here."""
    from icepipe.model import SourceFile

    (made,) = listing._source_files(["file:///a b.nc"], [7], ["2026-11-30T00:00:00+00:00"])
    built = SourceFile("file:///a b.nc", 7, "2026-11-30T00:00:00+00:00")
    assert repr(made) == repr(built) and made == built and hash(made) == hash(built)
    assert made.identity() == built.identity()
