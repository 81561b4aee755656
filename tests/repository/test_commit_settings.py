"""The Icechunk settings icepipe writes with, for a commit's memory (``benchmarks/memory.py``):
no dictionary compression of virtual chunk locations (a zstd dictionary trained at each commit
of a manifest of 1,000 references or more: a 4-7 MiB transient in the committing process, for
no smaller a manifest), manifests split every 5,000 chunks along any dimension unless the
pipeline says otherwise (a commit peaks at a third of an unsplit manifest's memory), and
metadata compressed at zstd level 1 (level 3's compressor tables: ~0.9 MiB at each commit)."""

from __future__ import annotations

from pathlib import Path

import icechunk

from icepipe import repository
from icepipe.repository.repo import (
    LOCATION_COMPRESSION_MIN_CHUNKS,
    MANIFEST_SPLIT_CHUNKS,
    METADATA_COMPRESSION_LEVEL,
)


def test_repositories_open_with_icepipes_manifest_settings(tmp_path: Path) -> None:
    """New and existing repositories, with or without ``target.config.manifest`` settings,
    which are kept."""
    default = {
        icechunk.ManifestSplitCondition.AnyArray(): {
            icechunk.ManifestSplitDimCondition.Any(): MANIFEST_SPLIT_CHUNKS
        }
    }
    mine = {
        icechunk.ManifestSplitCondition.AnyArray(): {
            icechunk.ManifestSplitDimCondition.DimensionName("time"): 100
        }
    }
    splitting = {"splitting": [{"dims": {"time": 100}}]}
    for name, config, split in (("plain", None, default), ("split", {"manifest": splitting}, mine)):
        for create in (True, False):
            repo = repository.open_repo(str(tmp_path / name), create=create, config=config)
            manifest = repo.config.manifest
            assert manifest is not None
            location = manifest.virtual_chunk_location_compression
            assert location is not None
            assert location.min_num_chunks == LOCATION_COMPRESSION_MIN_CHUNKS == 65535
            assert manifest.splitting is not None
            assert manifest.splitting == icechunk.ManifestSplittingConfig.from_dict(split)


def test_a_repositorys_own_splitting_is_kept(tmp_path: Path) -> None:
    """A repository created with its own splitting (by Icechunk, or a pipeline that set it)
    keeps it when a pipeline without splitting settings opens it; one without gets icepipe's."""
    own = icechunk.ManifestSplittingConfig.from_dict(
        {
            icechunk.ManifestSplitCondition.AnyArray(): {
                icechunk.ManifestSplitDimCondition.DimensionName("time"): 7
            }
        }
    )
    for name, splitting in (("own", own), ("none", None)):
        config = icechunk.RepositoryConfig.default()
        if splitting is not None:
            config.manifest = icechunk.ManifestConfig(splitting=splitting)
        icechunk.Repository.create(
            icechunk.local_filesystem_storage(str(tmp_path / name)), config=config
        )
        manifest = repository.open_repo(str(tmp_path / name)).config.manifest
        assert manifest is not None and manifest.splitting is not None
        expected = splitting or icechunk.ManifestSplittingConfig.from_dict(
            {
                icechunk.ManifestSplitCondition.AnyArray(): {
                    icechunk.ManifestSplitDimCondition.Any(): MANIFEST_SPLIT_CHUNKS
                }
            }
        )
        assert manifest.splitting == expected


def _level(repo: icechunk.Repository) -> int | None:
    return repo.config.compression.level if repo.config.compression else None


def test_metadata_compression_level(tmp_path: Path) -> None:
    """icepipe's level on repositories without one of their own (persisted when icepipe
    creates them, applied when it opens one Icechunk created with defaults); a pipeline's
    ``compression`` and a level the repository persisted are kept."""
    assert METADATA_COMPRESSION_LEVEL == 1
    created = repository.open_repo(str(tmp_path / "new"), create=True)
    assert _level(created) == METADATA_COMPRESSION_LEVEL
    persisted = icechunk.Repository.fetch_config(
        icechunk.local_filesystem_storage(str(tmp_path / "new"))
    )
    assert persisted is not None and persisted.compression is not None
    assert persisted.compression.level == METADATA_COMPRESSION_LEVEL
    assert _level(repository.open_repo(str(tmp_path / "new"))) == METADATA_COMPRESSION_LEVEL
    # The pipeline's level wins, on a new repository and on opening one.
    mine = {"compression": {"level": 5}}
    assert _level(repository.open_repo(str(tmp_path / "mine"), create=True, config=mine)) == 5
    assert _level(repository.open_repo(str(tmp_path / "new"), config=mine)) == 5
    # Created by Icechunk: with its defaults (nothing persisted) it gets icepipe's level;
    # with a level of its own it keeps it.
    for name, level in (("plain", None), ("own", 7)):
        config = icechunk.RepositoryConfig.default()
        if level is not None:
            config.compression = icechunk.CompressionConfig(level=level)
        icechunk.Repository.create(
            icechunk.local_filesystem_storage(str(tmp_path / name)), config=config
        )
        opened = repository.open_repo(str(tmp_path / name))
        assert _level(opened) == (level or METADATA_COMPRESSION_LEVEL)
