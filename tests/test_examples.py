"""The example pipelines in pipelines/ on the real sample files (fetched by `make data`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

import icepipe
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from demo import check_read_back

PIPELINES = sorted((REPO_ROOT / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_example_pipeline_ingests_real_files(
    path: Path, tmp_path: Path, client: Any, sample_data: Path
) -> None:
    pipeline = icepipe.load_pipeline(path)
    # Same pipeline, fresh repository under tmp_path.
    pipeline = dataclasses.replace(
        pipeline, target=dataclasses.replace(pipeline.target, repo=str(tmp_path / "repo"))
    )
    result = icepipe.run(pipeline, client=client)
    assert result.status == "committed"
    assert result.files_new
    ok, note = check_read_back(pipeline)
    assert ok, note
    assert icepipe.run(pipeline, client=client).status == "nothing-new"
