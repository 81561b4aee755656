"""``icepipe repo stac`` (issue 15): a STAC Collection whose asset opens the repository with
xpystac's Icechunk convention; it loads in pystac and its fields round-trip against the
repository (a virtual NEMO repository from the real sample files, and an S3 one on moto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pandas as pd
import pystac
import pytest
import xarray as xr
import yaml

import icepipe
from icepipe.cli import main
from icepipe.errors import ConfigError
from icepipe.ops.stac import ICECHUNK_MEDIA_TYPE, check_collection
from tests.conftest import S3_KEY_ID, S3_SECRET, S3Server


def _icechunk_asset(collection: pystac.Collection) -> pystac.Asset:
    (asset,) = [a for a in collection.assets.values() if a.media_type == ICECHUNK_MEDIA_TYPE]
    return asset


def _check_cube(collection: pystac.Collection, ds: xr.Dataset) -> None:
    """cube:dimensions and cube:variables say what the stored group holds."""
    dims = collection.extra_fields["cube:dimensions"]
    assert set(dims) == {str(d) for d in ds.sizes}
    for name, dim in dims.items():
        if name not in ds.coords:
            assert dim["extent"] == [0, ds.sizes[name] - 1]
            continue
        values = ds[name].values
        if np.issubdtype(values.dtype, np.datetime64):
            assert dim["type"] == "temporal"
            got = [np.datetime64(t.rstrip("Z")) for t in dim["extent"]]
            assert got == [values.min().astype("M8[s]"), values.max().astype("M8[s]")]
        else:
            assert dim["extent"] == [float(values.min()), float(values.max())]
    variables = collection.extra_fields["cube:variables"]
    expected = set(map(str, ds.data_vars)) | {str(c) for c in ds.coords if c not in ds.dims}
    assert set(variables) == expected
    for name, var in variables.items():
        assert var["dimensions"] == list(map(str, ds[name].dims))
        assert var["shape"] == list(ds[name].shape)
        assert var["type"] == ("data" if name in ds.data_vars else "auxiliary")


def test_stac_of_a_virtual_pipeline(tmp_path: Path, sample_data: Path, client: Any) -> None:
    doc = {
        "name": "nemo-stac",
        "source": {
            "urls": str(sample_data / "nemo" / "nemo_1m_*_grid-T.nc"),
            "concat_dim": "time_counter",
            "order_by": "time_centered",
        },
        "target": {"repo": str(tmp_path / "nemo"), "group": "sst"},
    }
    spec = tmp_path / "nemo.yaml"
    spec.write_text(yaml.safe_dump(doc))
    icepipe.run(icepipe.load_pipeline(spec), client=client)
    out = tmp_path / "collection.json"
    assert main(["repo", "stac", str(spec), "-o", str(out), "--license", "OGL-UK-3.0"]) == 0

    collection = pystac.Collection.from_file(str(out))
    check_collection(collection)
    assert collection.id == "nemo" and collection.license == "OGL-UK-3.0"
    asset = _icechunk_asset(collection)
    snapshot = icepipe.open_repo(str(tmp_path / "nemo")).lookup_branch("main")
    assert asset.extra_fields["version"] == snapshot == collection.extra_fields["version"]
    assert asset.href == f"file://{tmp_path / 'nemo'}"
    assert {"data", "virtual", "references", "latest-version"} <= set(asset.roles or [])
    (link,) = asset.extra_fields["vrt:hrefs"]
    assert collection.assets[link["key"]].href == f"file://{sample_data.resolve() / 'nemo'}/"
    assert "storage:schemes" not in collection.extra_fields  # local files need none
    ds = icepipe.open_dataset(str(tmp_path / "nemo"), group="sst")
    _check_cube(collection, ds)
    times = ds["time_centered"].values  # cftime dates: the time coordinate of these files
    interval = collection.extent.temporal.intervals[0]
    expected = [t.isoformat(timespec="seconds") for t in (times.min(), times.max())]
    assert [t.strftime("%Y-%m-%dT%H:%M:%S") for t in interval] == expected
    # The asset opens the repository: its href and xarray:open_kwargs, through the engine.
    opened = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])
    xr.testing.assert_identical(opened.load(), ds.load())

    # A tag: the collection describes it, no longer the latest version.
    icepipe.open_repo(str(tmp_path / "nemo")).create_tag("v1", snapshot_id=snapshot)
    assert main(["repo", "stac", str(tmp_path / "nemo"), "--ref", "v1", "-o", str(out)]) == 0
    tagged = pystac.Collection.from_file(str(out))
    assert _icechunk_asset(tagged).extra_fields["version"] == snapshot
    assert "latest-version" not in (_icechunk_asset(tagged).roles or [])
    assert _icechunk_asset(tagged).extra_fields["xarray:open_kwargs"]["group"] == "sst"


def test_stac_of_a_catalog_repository_on_s3(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("ICEPIPE_CATALOG", str(tmp_path / "catalog.yaml"))
    bucket = s3.bucket("stac")
    argv = ["repo", "create", "acme/cube", f"s3://{bucket}/cube", "--endpoint", s3.endpoint]
    argv += ["--path-style", "--allow-http", "--region", "us-east-1"]
    assert main(argv) == 0
    ds = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), np.ones((3, 2, 4), "f4"), {"units": "K"})},
        coords={
            "time": pd.date_range("2021-06-01", periods=3),
            "lat": ("lat", [10.0, 20.0], {"units": "degrees_north"}),
            "lon": ("lon", [0.0, 5.0, 10.0, 15.0], {"units": "degrees_east"}),
            "level": ((), 850.0),
        },
    )
    icepipe.to_icechunk(ds, "catalog:acme/cube")
    capsys.readouterr()
    assert main(["repo", "stac", "acme/cube"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert S3_SECRET not in json.dumps(d)
    collection = pystac.Collection.from_dict(d)
    check_collection(collection)
    assert collection.id == "acme-cube" and collection.title == "acme/cube"
    asset = _icechunk_asset(collection)
    assert asset.href == f"s3://{bucket}/cube"
    (ref,) = asset.extra_fields["storage:refs"]
    scheme = collection.extra_fields["storage:schemes"][ref]
    assert scheme == {
        "type": "custom-s3",
        "platform": s3.endpoint,
        "bucket": bucket,
        "region": "us-east-1",
    }
    assert collection.extent.spatial.bboxes == [[0.0, 10.0, 15.0, 20.0]]
    dims = collection.extra_fields["cube:dimensions"]
    assert dims["lat"]["axis"] == "y" and dims["lon"]["reference_system"] == 4326
    _check_cube(collection, icepipe.open_dataset("acme/cube"))
    # What xpystac does with the asset (an S3 scheme, the prefix after the bucket, the
    # snapshot as version), here with the scheme's endpoint: the same data.
    storage = icechunk.s3_storage(
        bucket=scheme["bucket"],
        prefix=asset.href.split(f"{scheme['bucket']}/")[1],
        region=scheme["region"],
        endpoint_url=scheme["platform"],
        allow_http=True,
        force_path_style="{bucket}" not in scheme["platform"],
        access_key_id=S3_KEY_ID,
        secret_access_key=S3_SECRET,
    )
    repo = icechunk.Repository.open(storage)
    session = repo.readonly_session(snapshot_id=asset.extra_fields["version"])
    back = xr.open_zarr(session.store, consolidated=False, zarr_format=3)
    xr.testing.assert_identical(back.load(), ds)


def test_check_collection_names_what_is_wrong(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    ds = xr.Dataset({"v": (("n",), np.arange(3.0))})
    icepipe.to_icechunk(ds, str(repo))
    from icepipe.ops.stac import repo_collection, stac_target

    collection = repo_collection(stac_target(str(repo)))
    assert collection.extra_fields["cube:dimensions"]["n"]["type"] == "other"
    d = collection.to_dict()
    asset = _icechunk_asset(collection)
    key = next(k for k, a in collection.assets.items() if a is asset)
    d["assets"][key]["storage:refs"] = ["nope"]
    with pytest.raises(ConfigError, match="'nope' not in storage:schemes"):
        check_collection(d)
    d = collection.to_dict()
    d["cube:variables"]["v"]["dimensions"] = ["m"]
    with pytest.raises(ConfigError, match=r"\['m'\] not in cube:dimensions"):
        check_collection(d)
    d = collection.to_dict()
    del d["extent"]
    with pytest.raises(ConfigError, match="invalid STAC Collection"):
        check_collection(d)
    with pytest.raises(ConfigError, match="no group 'nope'"):
        repo_collection(stac_target(str(repo), group="nope"))
