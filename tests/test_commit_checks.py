"""The versions of a run's files are checked before its commit in slices (``pipeline.
_CHECK_SLICE`` files at a time, so that the check's memory does not grow with the run): a
file replaced in any slice is still refused, and nothing is committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import icepipe
from icepipe import pipeline as pipeline_module
from tests.test_source_faults import FaultAt, check_refused_then_recovered, fresh


def test_a_file_replaced_in_a_later_slice_is_refused(
    tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "_CHECK_SLICE", 1)  # files[1]: the second slice
    spec, files, originals = fresh(tmp_path)
    observer = FaultAt("commit", files[1], "replace")
    check_refused_then_recovered(
        tmp_path,
        spec,
        files,
        originals,
        client,
        lambda: icepipe.run(icepipe.load_pipeline(spec), client=client, observer=observer),
        tip=None,
    )
    assert observer.done
