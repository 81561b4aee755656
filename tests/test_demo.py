"""`make demo` (scripts/demo.py): after `make data` derived the sample files again, the demo's
leftover repositories refuse them as changed; the demo's summary says what to do, and doing
it works."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import icepipe
from icepipe.spec import pipeline_from_dict
from tests.conftest import write_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("icepipe_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_files_derived_again_get_advice_that_works(
    tmp_path: Path, series: Callable[..., list[Path]], demo: ModuleType
) -> None:
    paths = series(2)
    pipeline = icepipe.load_pipeline(
        write_pipeline(tmp_path, urls=[str(p) for p in paths], repo="repos/demo")
    )
    assert icepipe.run(pipeline).status == "committed"
    series(2, seed=1)  # `make data` again: same names, other bytes
    with pytest.raises(icepipe.SourceError) as refused:
        icepipe.run(pipeline)
    hint = demo.advice(pipeline, refused.value)
    assert hint is not None
    assert "`make clean-repos`" in hint and f"`rm -rf {pipeline.target.repo}`" in hint
    row = (pipeline.name, "FAILED", "-", "-", "-", "-", "-", str(refused.value)[:60])
    text = demo.summary([row], [f"  {pipeline.name}: {hint}"], 1.0)
    assert text.index("FAILED") < text.index("To do") < text.index(hint)
    shutil.rmtree(pipeline.target.repo)  # what it says
    assert icepipe.run(pipeline).status == "committed"


def test_other_failures_get_no_advice(
    tmp_path: Path, series: Callable[..., list[Path]], demo: ModuleType
) -> None:
    paths = series(1)
    pipeline = pipeline_from_dict(
        {
            "name": "other",
            "source": {
                "urls": [str(p) for p in paths],
                "concat_dim": "time",
                "variables": ["nope"],
            },
            "target": {"repo": str(tmp_path / "repo")},
        },
        base_dir=tmp_path,
    )
    with pytest.raises(icepipe.SourceError, match="nope") as failed:
        icepipe.run(pipeline)
    assert demo.advice(pipeline, failed.value) is None


def test_make_clean_repos_removes_every_demo_repository() -> None:
    """The advice's `make clean-repos` removes repos/, where every demo pipeline writes."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^clean-repos:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe is not None and "rm -rf repos " in recipe.group(1) + " "
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        repo = Path(icepipe.load_pipeline(path).target.repo)
        assert repo.resolve().is_relative_to(ROOT / "repos"), path.name
