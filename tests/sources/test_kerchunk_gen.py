"""``gen`` keys and templates of kerchunk reference sets, expanded as fsspec's
ReferenceFileSystem expands them: the same references, and the same values read through
fsspec and through the virtual references icepipe stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml
from fsspec.implementations.reference import ReferenceFileSystem

import icepipe
from icepipe.errors import SourceError
from icepipe.sources.formats import kerchunk_gen
from icepipe.sources.formats.kerchunk_gen import generated_refs, template_context
from icepipe.sources.formats.kerchunk_refs import read_reference_set

NT, NX = 4, 6  # steps per file, columns; one chunk is (1, 3): two chunks per step


def gen_set(folder: Path, name: str, first_step: int, *, seed: int) -> tuple[Path, np.ndarray]:
    """Raw little-endian float32 chunks in ``<name>-<t>.bin`` (one file per step, its two
    chunks back to back) and a set describing them with ``gen`` only; the values."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((NT, NX)).astype("<f4")
    for t in range(NT):
        (folder / f"{name}-{t}.bin").write_bytes(b"pad!" + values[t].tobytes())
    time = np.arange(first_step, first_step + NT, dtype="<i8")
    zarray = {
        "shape": [NT, NX],
        "chunks": [1, 3],
        "dtype": "<f4",
        "compressor": None,
        "filters": None,
        "fill_value": None,
        "order": "C",
        "zarr_format": 2,
    }
    doc = {
        "version": 1,
        "templates": {"u": str(folder), "n": name},
        "refs": {
            ".zgroup": json.dumps({"zarr_format": 2}),
            "tas/.zarray": json.dumps(zarray),
            "tas/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["time", "x"]}),
            "time/.zarray": json.dumps({**zarray, "shape": [NT], "chunks": [NT], "dtype": "<i8"}),
            "time/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["time"], "units": "days"}),
            "time/0": "base64:" + __import__("base64").b64encode(time.tobytes()).decode(),
            # A stale reference the gen entry replaces, as it does in fsspec.
            "tas/0.0": ["{{u}}/nowhere.bin", 0, 12],
        },
        "gen": [
            {
                "key": "tas/{{t}}.{{c}}",
                "url": "{{u}}/{{n}}-{{t}}.bin",
                "offset": "{{ 4 + c * 12 }}",
                "length": "12",
                "dimensions": {"t": {"stop": NT}, "c": [0, 1]},
            }
        ],
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path, values


def fsspec_refs(path: Path) -> dict[str, Any]:
    fs = ReferenceFileSystem(str(path), simple_templates=False)
    return {k: v for k, v in fs.references.items() if isinstance(v, list)}


def fsspec_values(path: Path) -> xr.Dataset:
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        backend_kwargs={
            "consolidated": False,
            # fsspec ignores gen keys unless simple_templates is False.
            "storage_options": {"fo": str(path), "simple_templates": False},
        },
        decode_times=False,
    ).load()


def test_the_references_equal_fsspecs(tmp_path: Path) -> None:
    path, _ = gen_set(tmp_path, "a", 0, seed=1)
    ours = read_reference_set(f"file://{path}").refs
    theirs = fsspec_refs(path)
    assert len(theirs) == NT * 2
    for key, (url, offset, length) in theirs.items():
        assert ours[key] == [f"file://{url}", offset, length], key
    assert ours["tas/0.0"][0].endswith("/a-0.bin")  # gen replaced the stale reference


def test_sets_with_gen_keys_ingest_as_fsspec_reads_them(tmp_path: Path) -> None:
    """Two sets, two runs: the repository holds what fsspec reads through the same sets."""
    data = tmp_path / "data"
    data.mkdir()
    first, v1 = gen_set(data, "a", 0, seed=1)
    doc = {
        "name": "gen",
        "source": {"urls": str(data / "*.json"), "format": "kerchunk", "concat_dim": "time"},
        "mode": "virtual",
        "target": {"repo": str(tmp_path / "repo"), "group": "g"},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    p = icepipe.load_pipeline(tmp_path / "p.yaml")
    assert icepipe.run(p).status == "committed"
    second, v2 = gen_set(data, "b", NT, seed=2)
    assert len(icepipe.run(p).files_new) == 1
    got = icepipe.open_dataset(p.target.repo, group="g", decode_times=False).load()
    expected = xr.concat([fsspec_values(first), fsspec_values(second)], dim="time")
    xr.testing.assert_equal(got, expected)
    np.testing.assert_array_equal(got["tas"].values, np.concatenate([v1, v2]))
    assert icepipe.run(p).status == "nothing-new"


def _refs(gens: Any, templates: dict[str, Any] | None = None, group: str | None = None) -> Any:
    return dict(generated_refs("s.json", gens, template_context("s.json", templates or {}), group))


def test_jinja_expressions_lists_and_steps_as_fsspec() -> None:
    gens = [
        {
            "key": "v/{{i}}.{{j}}",
            "url": "{{u}}/f{{ '%03d' % i }}-{{ j|upper }}.nc",
            "offset": "{{ i * 100 + 7 }}",
            "length": "{{ 10 if i > 2 else 5 }}",
            "dimensions": {"i": {"start": 1, "stop": 8, "step": 3}, "j": ["a", "b"]},
        },
        {"key": "w/{{k}}", "url": "memory://b/{{k}}.nc", "dimensions": {"k": [0]}},
    ]
    # memory://: fsspec makes the file system of the URLs (no s3fs here).
    templates = {"u": "memory://bucket/x", "f": "{{ a }}-{{ b }}"}
    fs = ReferenceFileSystem(
        {"version": 1, "templates": dict(templates), "refs": {}, "gen": gens},
        simple_templates=False,
    )
    assert _refs(gens, templates) == dict(fs.references)
    assert _refs(gens, templates)["v/7.b"] == ["memory://bucket/x/f007-B.nc", 707, 10]


def test_function_templates_render_with_arguments() -> None:
    gens = [{"key": "v/{{i}}", "url": "{{ f(a=i, b='x') }}", "dimensions": {"i": [1, 2]}}]
    assert _refs(gens, {"f": "s3://b/{{a}}/{{b}}.nc"}) == {
        "v/1": ["s3://b/1/x.nc"],
        "v/2": ["s3://b/2/x.nc"],
    }


def test_a_group_expands_only_its_own_entries() -> None:
    gens = [
        {"key": "sub/v/{{i}}", "url": "s3://b/{{i}}", "dimensions": {"i": [0, 1]}},
        {"key": "other/v/{{i}}", "url": "s3://b/{{i}}", "dimensions": {"i": [0, 1]}},
        {"key": "{{g}}/v/{{i}}", "url": "s3://b/{{i}}", "dimensions": {"i": [0], "g": ["x"]}},
    ]
    assert sorted(_refs(gens, group="sub")) == ["sub/v/0", "sub/v/1", "x/v/0"]
    assert len(_refs(gens)) == 5


@pytest.mark.parametrize(
    ("gen", "message"),
    [
        ({"key": "v/{{i}}", "url": "u"}, r"gen\[0\] is not an object with 'key', 'url'"),
        (
            {"key": "v/{{i}}", "url": "u", "offset": "0", "dimensions": {"i": [0]}},
            "only one of 'offset' and 'length'",
        ),
        ({"key": "v/{{i}}", "url": "u", "dimensions": {"i": 3}}, r"dimensions\.i is 3"),
        ({"key": "v/{{i}}", "url": "{{nope}}", "dimensions": {"i": [0]}}, "nope.*no template"),
        ({"key": "v/{{i}}", "url": "{{ nope + 1 }}", "dimensions": {"i": [0]}}, "not render"),
        ({"key": "v/{{i}}", "url": "{{ i ", "dimensions": {"i": [0]}}, "is not a template"),
        (
            {
                "key": "v/{{i}}",
                "url": "u",
                "offset": "{{i}}x",
                "length": "1",
                "dimensions": {"i": [0]},
            },
            r"offset renders as '0x', not an integer",
        ),
        ({"key": "v/{{u}}", "url": "u", "dimensions": {"u": [0]}}, "both as a dimension"),
    ],
)
def test_bad_entries_name_the_set_and_the_entry(gen: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=r"s\.json: .*" + message):
        _refs([gen], {"u": "s3://b"})


def test_an_absurd_product_is_refused_before_expanding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kerchunk_gen, "MAX_GENERATED", 10)
    gens = [{"key": "v/{{i}}", "url": "u", "dimensions": {"i": {"stop": 11}}}]
    with pytest.raises(SourceError, match="make 11 references, more than icepipe expands"):
        _refs(gens)
    assert len(_refs([{**gens[0], "dimensions": {"i": {"stop": 10}}}])) == 10
