"""Creating and discarding local repositories (icepipe.repository.repo, refs).

A first run that fails deletes the repository it created (``discard_unused_repo``); a Dask
write task that was already running then can still finish, and Icechunk's local storage
creates ``chunks/`` again for its chunk. Such a folder must not block the next run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from icepipe import repository
from icepipe.errors import ConfigError


def _straggling_write_after_discard(location: str) -> None:
    """A first run's repository, discarded while a forked session (what a write task holds)
    still writes a chunk afterwards."""
    repo = repository.open_repo(location, create=True)
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    # Chunks above Icechunk's inline threshold (512 bytes), so they are written as files.
    root.create_array("x", shape=(4, 1000), chunks=(1, 1000), dtype="f8", compressors=None)
    fork = session.fork()
    assert repository.discard_unused_repo(location)
    assert not os.path.exists(location)
    zarr.open_array(fork.store, path="x")[2] = np.arange(1000.0)


def test_a_straggling_write_after_a_discard_does_not_block_the_next_run(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    _straggling_write_after_discard(location)
    assert sorted(os.listdir(location)) == ["chunks"]  # what the straggler left
    repo = repository.open_repo(location, create=True)  # the next run
    assert list(repo.list_branches()) == ["main"]
    assert "chunks" not in os.listdir(location)


@pytest.mark.parametrize("extra", ["chunks/notes.txt", "data.nc"])
def test_a_folder_with_anything_else_is_still_refused(tmp_path: Path, extra: str) -> None:
    location = str(tmp_path / "repo")
    _straggling_write_after_discard(location)
    (tmp_path / "repo" / extra).write_text("the user's")
    with pytest.raises(ConfigError, match="holds files but no Icechunk repository"):
        repository.open_repo(location, create=True)
    assert (tmp_path / "repo" / extra).read_text() == "the user's"
