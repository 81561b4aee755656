"""Repositories written before icepipe recorded its container options keep working (the
record itself is tested against every storage place in tests/storage/test_contract.py)."""

from __future__ import annotations

from pathlib import Path

import icechunk
import zarr

from icepipe import repository
from icepipe.repository.repo import CONTAINER_RECORD, open_repo


def _format1_repo(tmp_path: Path) -> tuple[str, str]:
    """A repository as Icechunk 1 wrote them (no repository metadata), with one virtual
    chunk container and an array whose chunk lives in it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "raw.bin").write_bytes(b"abc")
    prefix = f"file://{src}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(src)))
    )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=config,
        spec_version=1,
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {prefix: icechunk.credentials.LocalFileSystemAccess}
        ),
    )
    session = repo.writable_session("main")
    zarr.group(session.store).create_array(
        "a", shape=(3,), chunks=(3,), dtype="uint8", compressors=None, fill_value=0
    )
    session.store.set_virtual_ref("a/c/0", prefix + "raw.bin", offset=0, length=3)
    session.commit("written by an older icepipe")
    return str(tmp_path / "repo"), prefix


def test_a_format1_repository_opens_reads_and_takes_new_containers(tmp_path: Path) -> None:
    path, prefix = _format1_repo(tmp_path)
    repo = open_repo(path)
    array = zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")
    assert bytes(array[:]) == b"abc"
    (container,) = (repo.config.virtual_chunk_containers or {}).values()
    assert repository.container_options(repo, container).is_default
    (tmp_path / "more").mkdir()
    more = open_repo(path, containers=[f"file://{tmp_path / 'more'}/"])
    configured = (more.config.virtual_chunk_containers or {}).values()
    assert sorted(c.url_prefix for c in configured) == sorted([prefix, f"file://{tmp_path}/more/"])


def test_a_repository_without_records_gains_none_by_being_opened(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    repo = open_repo(str(tmp_path / "repo"), create=True, containers=[f"file://{src}/"])
    assert CONTAINER_RECORD + f"file://{src}/" in repo.get_metadata()
    repo.set_metadata({})
    again = open_repo(str(tmp_path / "repo"), containers=[f"file://{src}/"])
    assert again.get_metadata() == {}  # readers never write
