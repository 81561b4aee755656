"""One storage contract, run against every place icepipe reads and writes (zarr's ``StoreTests``
pattern): a local folder, moto's S3 server, and SeaweedFS (which checks credentials).

Each subclass of :class:`StorageContract` says only where its place is; every test below runs
against each: listing, the identity of a source (size and ETag, or size and mtime), creating
and opening a repository, authorizing a virtual chunk container and reading through it, the
record icepipe keeps of how it reaches that container (and repositories without one), and
pickling of everything per scheme that travels to Dask workers.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import icechunk
import pytest
import zarr

from icepipe import repository
from icepipe.errors import SourceError
from icepipe.repository.repo import CONTAINER_RECORD, RepoNotFoundError, open_repo
from icepipe.repository.schemes import EnvS3Credentials
from icepipe.sources.listing import changed_since_listing, list_sources
from icepipe.sources.stores import RemoteFile, store_for
from icepipe.storage import (
    StorageOptions,
    parse_storage_options,
    reference_url,
    scheme_for,
)
from tests.conftest import S3Server


@dataclass
class Place:
    """Where a contract test puts sources and repositories, and how icepipe reaches them."""

    root: str  # URL of a fresh folder (or bucket prefix) for sources
    repo: str  # location of a fresh repository
    options: StorageOptions  # how to reach both (target: and source.storage: alike)
    put: Callable[[str, bytes], str]  # write an object under root; its URL


def _server_place(server: S3Server, tag: str) -> Place:
    bucket = server.bucket(tag)
    client = server.client()

    def put(name: str, data: bytes) -> str:
        client.put_object(Bucket=bucket, Key=f"src/{name}", Body=data)
        return f"s3://{bucket}/src/{name}"

    options = parse_storage_options(server.options(), "target.")
    return Place(f"s3://{bucket}/src", f"s3://{bucket}/repos/r", options, put)


class StorageContract:
    """The tests every storage place passes; subclasses provide the ``place`` fixture."""

    @pytest.fixture
    def place(self) -> Iterator[Place]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    def test_glob_lists_every_object_with_its_size(self, place: Place) -> None:
        urls = [place.put(n, b"x" * i) for i, n in enumerate(["b.bin", "a.bin", "c.txt"], 1)]
        listed = list_sources([place.root + "/*.bin"], is_glob=True, storage=place.options)
        assert [f.url for f in listed] == sorted(urls[:2])
        assert [f.size for f in listed] == [2, 1]
        explicit = list_sources(urls[:1], is_glob=False, storage=place.options)
        assert explicit == [f for f in listed if f.url == urls[0]]

    def test_identity_notices_a_rewrite_of_the_same_size(self, place: Place) -> None:
        url = place.put("a.bin", b"first")
        (before,) = list_sources([url], is_glob=False, storage=place.options)
        remote = scheme_for(url).remote
        assert (before.etag is not None) == remote  # ETags identify objects, mtimes files
        assert changed_since_listing([before], place.options) == {}
        place.put("a.bin", b"later")
        if not remote:  # same size, and maybe the same mtime tick: move it on
            path = url.removeprefix("file://")
            os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
        changed = changed_since_listing([before], place.options)
        assert list(changed) == [url] and changed[url].startswith("changed")

    def test_every_changed_file_is_found_however_the_check_is_sliced(
        self, place: Place, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Object stores are checked a slice of files at a time (bounded memory): a change in
        a later slice counts as one in the first."""
        import icepipe.sources.listing as listing_module

        monkeypatch.setattr(listing_module, "_CHECK_SLICE", 1)
        urls = [place.put(n, b"x" * 3) for n in ("a.bin", "b.bin", "c.bin")]
        listed = list_sources(urls, is_glob=False, storage=place.options)
        assert changed_since_listing(listed, place.options) == {}
        place.put("c.bin", b"longer")
        changed = changed_since_listing(listed, place.options)
        assert list(changed) == [urls[2]] and changed[urls[2]].startswith("changed")

    def test_a_repository_is_created_once_and_opened(self, place: Place) -> None:
        with pytest.raises(RepoNotFoundError):
            open_repo(place.repo, storage=place.options)
        created = open_repo(place.repo, create=True, storage=place.options)
        session = created.writable_session("main")
        zarr.group(session.store).attrs["made"] = "here"
        session.commit("first")
        again = open_repo(place.repo, create=True, storage=place.options)
        group = zarr.open_group(again.readonly_session("main").store, mode="r")
        assert group.attrs["made"] == "here"

    def _virtual_repo(self, place: Place, payload: bytes) -> tuple[str, icechunk.Repository]:
        url = place.put("raw.bin", payload)
        ref = reference_url(url)
        containers = repository.container_prefixes([ref])
        repo = open_repo(
            place.repo,
            create=True,
            containers=containers,
            storage=place.options,
            source_storage=place.options,
        )
        session = repo.writable_session("main")
        root = zarr.group(session.store)
        n = len(payload)
        root.create_array(
            "a", shape=(n,), chunks=(n,), dtype="uint8", compressors=None, fill_value=0
        )
        session.store.set_virtual_ref("a/c/0", ref, offset=0, length=n)
        session.commit("virtual")
        return url, repo

    def test_virtual_chunks_are_authorized_and_read_back(self, place: Place) -> None:
        payload = bytes(range(200))
        self._virtual_repo(place, payload)
        reader = open_repo(place.repo, storage=place.options, source_storage=place.options)
        array = zarr.open_array(reader.readonly_session("main").store, path="a", mode="r")
        assert bytes(array[:]) == payload

    def test_the_container_options_icepipe_chose_are_recorded(self, place: Place) -> None:
        url, repo = self._virtual_repo(place, b"abc")
        (container,) = (repo.config.virtual_chunk_containers or {}).values()
        record = repo.get_metadata()[CONTAINER_RECORD + container.url_prefix]
        assert record == scheme_for(url).container_reach(place.options)
        reader = StorageOptions(
            access_key_id_env=place.options.access_key_id_env,
            secret_access_key_env=place.options.secret_access_key_env,
        )
        reached = repository.container_options(repo, container, reader)
        if scheme_for(url).remote:  # the endpoint comes from the record, not from the reader
            assert reached == place.options
        # A repository configured before icepipe kept records reaches it the same way.
        repo.set_metadata({})
        assert repository.container_options(repo, container, reader) == reached
        legacy = open_repo(place.repo, storage=place.options, source_storage=reader)
        array = zarr.open_array(legacy.readonly_session("main").store, path="a", mode="r")
        assert bytes(array[:]) == b"abc"

    def test_what_travels_to_workers_pickles(self, place: Place) -> None:
        url = place.put("p.bin", b"pickled")
        scheme = scheme_for(url)
        for value in (place.options, scheme, scheme_for(place.repo)):
            assert pickle.loads(pickle.dumps(value)) == value
        handle = pickle.loads(cloudpickle.dumps(RemoteFile(url, place.options)))
        assert handle.read() == b"pickled"
        store = store_for(place.root, place.options)
        assert store is store_for(place.root, place.options)  # built once per process
        callback = EnvS3Credentials.from_options(place.options)
        if callback is not None:
            assert pickle.loads(pickle.dumps(callback))() is not None
        _, repo = self._virtual_repo(place, b"xyz")
        session = pickle.loads(cloudpickle.dumps(repo.readonly_session("main")))
        assert bytes(zarr.open_array(session.store, path="a", mode="r")[:]) == b"xyz"

    def test_remote_file_reads_every_range_and_a_rewritten_object_afresh(
        self, place: Place, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """RemoteFile's reads (small ones through the per-process block cache, large ones
        direct) equal the object's bytes wherever they start and end; a second handle reads
        small ranges from the cache; an object rewritten with other bytes is read afresh."""
        import random

        import numpy as np
        import obstore

        from icepipe.sources import stores

        monkeypatch.setattr(stores, "_BLOCK", 4096)  # many block edges in a small object
        stores._block.cache_clear()
        data = np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
        url = place.put("r.bin", data)
        rng = random.Random(11)
        ranges = [(rng.randrange(0, len(data) + 100), rng.randrange(0, 9000)) for _ in range(150)]
        ranges += [(0, 8), (4095, 2), (4096, 4096), (len(data) - 3, 10), (len(data), 5)]
        handle = RemoteFile(url, place.options)
        for pos, n in ranges:
            assert handle.seek(pos) == pos
            assert handle.read(n) == data[pos : pos + n], (pos, n)
        assert handle.seek(-10, os.SEEK_END) == len(data) - 10
        assert handle.read(4) == data[-10:-6] and handle.tell() == len(data) - 6
        assert handle.seek(-4, os.SEEK_CUR) == len(data) - 10
        with pytest.raises(OSError):
            handle.seek(-1)
        # Another handle (as in another task on the worker): small reads hit the cache.
        fetched: list[int] = []
        get = obstore.get

        def counted(*args: object, **kwargs: object) -> object:
            fetched.append(1)
            return get(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(obstore, "get", counted)
        again = RemoteFile(url, place.options)
        small = [(pos, n) for pos, n in ranges if n <= 4096 and pos < len(data)]
        for pos, n in small:
            again.seek(pos)
            assert again.read(n) == data[pos : pos + n]
        assert fetched == []
        # The same name rewritten with other bytes (same size): read afresh, never stale.
        other = bytes(255 - b for b in data)
        place.put("r.bin", other)
        fresh = RemoteFile(url, place.options)
        for pos, n in small[:20]:
            fresh.seek(pos)
            assert fresh.read(n) == other[pos : pos + n]
        assert fetched
        # Rewritten between the handle's look at it and its read: refused, naming the file.
        stale = RemoteFile(url, place.options)
        stale.seek(0)
        stale.read(1)  # its ETag now known
        place.put("r.bin", data)
        stores._block.cache_clear()  # nothing of that version cached: the read must fetch
        stale.seek(3 * 4096)
        with pytest.raises(SourceError, match="changed while being read"):
            stale.read(10)


class TestLocal(StorageContract):
    @pytest.fixture
    def place(self, tmp_path: Path) -> Iterator[Place]:
        (tmp_path / "src").mkdir()

        def put(name: str, data: bytes) -> str:
            (tmp_path / "src" / name).write_bytes(data)
            return f"file://{tmp_path / 'src' / name}"

        yield Place(f"file://{tmp_path / 'src'}", str(tmp_path / "repo"), StorageOptions(), put)


class TestMoto(StorageContract):
    @pytest.fixture
    def place(self, s3: S3Server) -> Iterator[Place]:
        yield _server_place(s3, "contract")


class TestSeaweedFS(StorageContract):
    @pytest.fixture
    def place(self, seaweedfs: S3Server) -> Iterator[Place]:
        yield _server_place(seaweedfs, "contract")
