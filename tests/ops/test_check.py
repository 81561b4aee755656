"""``icepipe check``: every problem of a pipeline (or catalog) file at once, with
``file:line:column`` and "did you mean"; and agreement with the loader ``icepipe run`` uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from icepipe.cli import main
from icepipe.errors import ConfigError
from icepipe.ops.check import check_file, detect_kind
from icepipe.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]

FOUR_TYPOS = """\
# The issue's pipeline: four typos, one run of `icepipe check` must name them all.
name: typos
source:
  urls: "data/*.nc"
  fromat: netcdf4
  concat_dimm: time
mode: virtul
target:
  repo: repos/typos
  brnch: main
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icepipe.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_four_typos_are_all_reported_with_lines_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "typos.yaml").write_text(FOUR_TYPOS)
    proc = _cli("check", "typos.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.splitlines() == [
        "typos.yaml:5:3: error: source.fromat: unknown key 'fromat'; did you mean 'format'?",
        "typos.yaml:6:3: error: source.concat_dimm: unknown key 'concat_dimm'; did you mean "
        "'concat_dim'?",
        "typos.yaml:7:7: error: mode: expected one of virtual, native; got str 'virtul'; did "
        "you mean 'virtual'?",
        "typos.yaml:10:3: error: target.brnch: unknown key 'brnch'; did you mean 'branch'?",
    ]
    assert "4 problem(s) in 1 of 1 file(s)" in proc.stderr


def test_fixing_the_typos_as_suggested_makes_the_file_load(tmp_path: Path) -> None:
    fixed = (
        FOUR_TYPOS.replace("fromat", "format")
        .replace("concat_dimm", "concat_dim")
        .replace("virtul", "virtual")
        .replace("brnch", "branch")
    )
    path = tmp_path / "fixed.yaml"
    path.write_text(fixed)
    assert check_file(path) == []
    assert load_pipeline(path).source.format == "netcdf4"
    assert main(["check", str(path)]) == 0


def test_the_shipped_pipelines_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "pipelines")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list((ROOT / "pipelines").glob("*.yaml")))
    assert all(line.endswith(": ok") for line in out)


def test_checks_between_fields_are_reported_after_the_structural_ones(tmp_path: Path) -> None:
    """Problems only the loader sees (chunks in virtual mode, a date that never occurs, a
    group path Zarr refuses) come along with the misspelt keys, each at its line."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\n"
        "source:\n"
        "  urls: '*.nc'\n"
        "  concat_dim: time\n"
        "  ordr_by: t\n"  # 5
        "chunks: {time: 3}\n"  # 6: mode is virtual
        "target:\n"
        "  repo: r\n"
        "  group: 'a//b'\n"  # 9
        "schedule: '0 0 31 2 *'\n"  # 10: never fires
        "on_error: skp\n"  # 11
    )
    problems = check_file(path)
    got = [(p.line, p.field) for p in problems]
    assert got == [
        (5, "source.ordr_by"),
        (6, "chunks"),
        (9, "target.group"),
        (10, "schedule"),
        (11, "on_error"),
    ]
    assert "did you mean 'order_by'" in problems[0].message
    assert "mode: native only" in problems[1].message
    assert "did you mean 'skip'" in problems[4].message


def test_missing_sections_and_pasted_secrets(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\ntarget:\n  repo: s3://bucket/r\n  secret_access_key: abc\nmode: native\n"
        "chunks: {time: 0}\n"
    )
    problems = {p.field: p for p in check_file(path)}
    assert set(problems) == {"source", "target.secret_access_key", "chunks.time"}
    assert problems["source"].message == "missing; expected a mapping"
    assert "secrets never go into a pipeline file" in problems["target.secret_access_key"].message
    assert "abc" not in str(problems["target.secret_access_key"])
    assert (problems["chunks.time"].line, problems["chunks.time"].column) == (6, 16)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("name: x\nsource: [\n", 3, "not valid YAML"),
        ("name: x\nsource: {}\nname: y\n", 3, "found the key 'name' twice"),
    ],
)
def test_yaml_errors(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    [problem] = check_file(path)
    assert problem.line == line
    assert expected in problem.message


def test_catalog_files(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "repos:\n"
        "  acme/nemo:\n"
        "    url: /data/nemo\n"
        "    descripton: NEMO\n"  # 4
        "  acme/era5:\n"
        "    urll: s3://bucket/era5\n"  # 6
        "    storage: {endpoint: 'http://s3.local', token: t}\n"  # 7
    )
    assert detect_kind(yaml.safe_load(path.read_text())) == "catalog"
    got = {(p.line, p.field) for p in check_file(path)}
    assert got == {
        (4, "repos.acme/nemo.descripton"),
        (6, "repos.acme/era5.urll"),
        (7, "repos.acme/era5.storage.endpoint"),
        (7, "repos.acme/era5.storage.token"),
    }
    good = tmp_path / "good.yaml"
    good.write_text("repos:\n  acme/nemo: {url: /data/nemo, description: NEMO}\n")
    assert check_file(good) == []


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typos.yaml"
    path.write_text(FOUR_TYPOS)
    assert main(["check", "--json", str(path)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["files"] == [str(path)]
    assert [p["line"] for p in doc["problems"]] == [5, 6, 7, 10]


# ----------------------------------------------------------------------------------------------
# check says what the loader says
# ----------------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "name": "p",
    "source": {"urls": "src/*.nc", "concat_dim": "time"},
    "target": {"repo": "repo"},
}
VALID_VARIANTS: list[dict[str, Any]] = [
    {},
    {"mode": "native", "chunks": {"time": "month", "x": 10}, "compression": "none"},
    {"mode": "native", "chunks": {"time": 4}, "shards": {"time": 8}},
    {"schedule": {"cron": "@daily", "timezone": "Europe/Paris"}, "on_changed": "reingest"},
    {"source": {"urls": ["a.nc", "b.nc"], "concat_dims": ["time", "member"], "merge": True}},
    {"source": {"urls": "a/*.grib", "concat_dim": "time", "format": "grib", "grib_cubes": "all"}},
    {
        "source": {
            "urls": "s3://bucket/a/*.nc",
            "concat_dim": "time",
            "storage": {"endpoint": "https://s3.local", "anonymous": True},
            "drop_variables": ["x"],
            "preprocess": "fixes:run",
            "group": "g",
        }
    },
    {
        "target": {
            "repo": "s3://bucket/repo",
            "region": "eu-west-1",
            "access_key_id_env": "K",
            "secret_access_key_env": "S",
            "config": {"manifest": {"preload": False}, "caching": {"num_chunk_refs": 0}},
        }
    },
]
INVALID_VARIANTS: list[dict[str, Any]] = [
    {"mode": "natve"},
    {"chunks": {"time": 3}},
    {"mode": "native", "chunks": {"x": "month"}},
    {"source": {"urls": "*.nc", "concat_dim": "t", "variables": ["a"], "drop_variables": ["b"]}},
    {"source": {"urls": "*.nc"}},
    {"source": {"urls": "*.nc", "concat_dim": "t", "grib_cubes": "all"}},
    {"target": {"repo": "r", "endpoint": "https://x"}},
    {"target": {"repo": "r", "config": {"caching": {"bogus": 1}}}},
    {"schedule": "every day"},
    {"extra": 1},
    {"source": {"urls": 3, "concat_dim": "t"}},
    {"source": {"urls": "*.nc", "concat_dim": "t", "merge": "yes"}},
]


def _doc(variant: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, **variant}


@pytest.mark.parametrize(
    ("variant", "valid"),
    [(v, True) for v in VALID_VARIANTS] + [(v, False) for v in INVALID_VARIANTS],
)
def test_check_finds_a_problem_exactly_when_the_loader_does(
    tmp_path: Path, variant: dict[str, Any], valid: bool
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_doc(variant), sort_keys=False))
    problems = check_file(path)
    try:
        load_pipeline(path)
    except ConfigError as exc:
        assert not valid, exc
        assert exc.field is not None
        assert any(
            p.field is not None and (p.field.startswith(exc.field) or exc.field.startswith(p.field))
            for p in problems
        ), (exc, problems)
    else:
        assert valid
        assert problems == []


def test_run_suggests_too(tmp_path: Path) -> None:
    """``icepipe run`` stops at the first problem, with the same suggestion."""
    path = tmp_path / "typos.yaml"
    path.write_text(FOUR_TYPOS)
    with pytest.raises(ConfigError, match=r"did you mean 'virtual'\?"):
        load_pipeline(path)
    path.write_text(FOUR_TYPOS.replace("virtul", "virtual"))
    with pytest.raises(
        ConfigError, match=r"'concat_dimm', 'fromat' \(did you mean 'concat_dim'\?\)"
    ):
        load_pipeline(path)
