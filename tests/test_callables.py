"""Functions named in configuration (``icepipe.callables``): both forms, and a typed error
naming the field and the fix for every way an import fails, through the cluster factory
(``--cluster``) and ``source.preprocess`` alike."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

import icepipe
from icepipe.callables import PATTERN, import_callable, split_callable
from icepipe.cli import main
from icepipe.errors import ConfigError
from tests.conftest import write_pipeline, write_series


def _module(folder: Path, text: str) -> str:
    """Write a module with a fresh name (imports are cached per process) and return it."""
    name = f"cb_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(text)
    return name


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fixes:run", ("fixes", "run")),
        ("fixes.run", ("fixes", "run")),
        ("pkg.fixes.run", ("pkg.fixes", "run")),
        ("pkg.fixes:Fixer.run", ("pkg.fixes", "Fixer.run")),
    ],
)
def test_both_forms(spec: str, expected: tuple[str, str]) -> None:
    assert split_callable(spec, what="preprocess hook", field="source.preprocess") == expected
    assert re.match(PATTERN, spec)  # the JSON Schema of `icepipe schema` agrees


@pytest.mark.parametrize("spec", ["nodots", ":run", "fixes:", "a:b:c", "fix-es:run", "", 42])
def test_malformed_names_the_field_and_both_forms(spec: Any) -> None:
    assert not isinstance(spec, str) or not re.match(PATTERN, spec)
    with pytest.raises(ConfigError, match=r"'module:function' or 'module\.function'") as info:
        split_callable(spec, what="preprocess hook", field="source.preprocess")
    assert info.value.field == "source.preprocess"
    with pytest.raises(ConfigError, match=r"'module:factory' or 'module\.factory'") as info:
        split_callable(spec, what="cluster factory", field="--cluster")
    assert info.value.field == "--cluster"


def test_every_import_failure_is_a_config_error_naming_the_fix(tmp_path: Path) -> None:
    good = _module(
        tmp_path,
        "class Fix:\n    @staticmethod\n    def run(ds):\n        return ds\n"
        "\n\ndef hook(ds):\n    return ds\n\nLIMIT = 3\n",
    )
    syntax = _module(tmp_path, "def hook(ds)\n    return ds\n")
    raises = _module(tmp_path, "raise RuntimeError('no config here')\n")
    needs = _module(tmp_path, "import cb_not_installed_dep\n\ndef hook(ds):\n    return ds\n")
    kw: dict[str, Any] = {"what": "preprocess hook", "field": "source.preprocess"}
    kw["search_path"] = str(tmp_path)
    assert import_callable(f"{good}:hook", **kw)(1) == 1
    assert import_callable(f"{good}.hook", **kw)(2) == 2
    assert import_callable(f"{good}:Fix.run", **kw)(3) == 3
    cases = [
        ("cb_no_such_module:hook", "cannot import module 'cb_no_such_module'.*next to the"),
        ("cb_no_such_pkg.sub:hook", "no module named 'cb_no_such_pkg'"),
        (f"{needs}:hook", "imports 'cb_not_installed_dep', which is not installed"),
        (f"{syntax}:hook", "failed: SyntaxError.*fix the module"),
        (f"{raises}:hook", "failed: RuntimeError: no config here"),
        (f"{good}:hoook", r"has no attribute 'hoook' \(it defines Fix, hook\)"),
        (f"{good}:Fix.walk", "'Fix' has no attribute 'walk'"),
        (f"{good}.LIMIT", "of type int, not a function; name a function in source.preprocess"),
    ]
    for spec, match in cases:
        with pytest.raises(ConfigError, match=match) as info:
            import_callable(spec, **kw)
        assert info.value.field == "source.preprocess" and spec in str(info.value)


def test_preprocess_hook_errors_before_any_work(tmp_path: Path) -> None:
    """A pipeline's hook fails at the start of the run, with the field; the dotted form
    loads (the spec used to refuse it)."""
    write_series(tmp_path / "src", 1)
    syntax = _module(tmp_path, "def pre(ds)\n    return ds\n")
    good = _module(tmp_path, "def pre(ds):\n    return ds\n\nNOT_A_HOOK = 1\n")
    for hook, match in (
        (f"{syntax}:pre", "SyntaxError"),
        (f"{good}.NOT_A_HOOK", "of type int, not a function"),
        (f"{good}.missing", r"has no attribute 'missing' \(it defines pre\)"),
    ):
        spec = write_pipeline(
            tmp_path, urls="src/*.nc", extra="mode: native\n", repo=f"r{uuid.uuid4().hex[:6]}"
        )
        spec.write_text(
            spec.read_text().replace(
                "  concat_dim: time\n", f"  concat_dim: time\n  preprocess: {hook}\n"
            )
        )
        pipeline = icepipe.load_pipeline(spec)
        with pytest.raises(ConfigError, match=match) as info:
            icepipe.run(pipeline, report=False)
        assert info.value.field == "source.preprocess"
        assert not (tmp_path / pipeline.target.repo).exists()


def test_cluster_factory_errors_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ICEPIPE_CLUSTER", raising=False)
    write_series(tmp_path / "src", 1)
    spec = str(write_pipeline(tmp_path, urls="src/*.nc"))
    syntax = _module(tmp_path, "def make()\n    return None\n")
    for cluster, message in (
        (f"{syntax}:make", "importing module"),  # was a SyntaxError traceback
        (
            "tests.cluster_factories.MADE",
            "of type list, not a function; name a function in --cluster",
        ),
        ("tests.cluster_factories:nope", "has no attribute 'nope' (it defines broken, local"),
        ("cb_no_such_module.make", "cannot import module 'cb_no_such_module'"),
    ):
        assert main(["run", spec, "--cluster", cluster]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "repo").exists()
