"""One array's chunks by kind and its native bytes, asked chunk by chunk or, past a limit,
from the manifests' statistics (counts) and a sample (bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icepipe.repository.array_share import array_chunk_share


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, Path]:
    import icechunk
    import zarr

    path = tmp_path_factory.mktemp("array-share") / "repo"
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(path)),
        config=icechunk.RepositoryConfig(inline_chunk_threshold_bytes=64),
    )
    session = repo.writable_session("main")
    root = zarr.group(session.store)
    a = root.create_array("a", shape=(10, 40), chunks=(1, 10), dtype="float64", fill_value=0)
    rng = np.random.default_rng(0)
    a[:6] = rng.random((6, 40))  # 24 native chunks (80 random bytes do not compress)
    a[6, :10] = 1.0  # one chunk of ones: compresses under 64 bytes, inline
    return repo, session.commit("data"), path


def test_exact_and_sampled_counts_agree(repo: tuple[Any, str, Path]) -> None:
    r, snap, path = repo
    exact = array_chunk_share(r, snap, "/a", grid=40)
    assert exact.exact and (exact.native, exact.inline, exact.virtual) == (24, 1, 0)
    assert exact.missing == 15
    stored = sum(p.stat().st_size for p in (path / "chunks").iterdir())
    assert exact.native_bytes == stored
    sampled = array_chunk_share(r, snap, "/a", grid=40, limit=5)
    assert not sampled.exact and sampled.sampled == 5 and "estimated" in sampled.method
    assert (sampled.native, sampled.inline, sampled.missing) == (24, 1, 15)
    assert sampled.native_bytes is not None and abs(sampled.native_bytes - stored) < stored * 0.2
