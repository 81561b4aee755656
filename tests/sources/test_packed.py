"""Packed scan results give back exactly the scanned datasets, and their concatenation is
``xarray.concat``'s.

Hypothesis builds virtual datasets of varied layouts (virtual variables with and without the
concat dimension, chunks missing or in several objects, loaded coordinates, attributes that
differ per file, NaN attributes) and checks: a packed dataset, pickled or not, rebuilds the
same dataset (``hdf5_index.same_dataset``: variables in order, attributes, encodings, values,
ManifestArray metadata and references); the packed concatenation equals the concatenation of
the datasets. A pipeline run with packed results writes the same references and values as one
without.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from virtualizarr.manifests import ChunkManifest, ManifestArray
from virtualizarr.manifests.utils import create_v3_array_metadata

import icepipe
from icepipe.model import SourceFile
from icepipe.sources import scan as scan_module
from icepipe.sources.combine import combine_virtual
from icepipe.sources.formats.hdf5_index import same_dataset
from icepipe.sources.packed import PackedDataset, concat_packed, in_columns, pack
from icepipe.sources.scan import ScannedFile, pack_results, schema_of
from icepipe.spec import pipeline_from_dict
from tests.conftest import write_series

_CONCAT: dict[str, Any] = {
    "dim": "time",
    "data_vars": "minimal",
    "coords": "minimal",
    "compat": "override",
    "combine_attrs": "override",
    "join": "override",
}


def _virtual(
    shape: tuple[int, ...], chunks: tuple[int, ...], dims: tuple[str, ...], draw: Any, url: str
) -> ManifestArray:
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    n = int(np.prod(grid))
    present = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    other = draw(st.booleans())  # some chunks in another object (Zarr sources)
    paths = np.array(
        [(url + ("x" if other and i % 2 else "")) if p else "" for i, p in enumerate(present)],
        dtype=np.dtypes.StringDType(),
    ).reshape(grid)
    offsets = np.array(draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)), np.uint64)
    lengths = np.array(draw(st.lists(st.integers(1, 2**20), min_size=n, max_size=n)), np.uint64)
    metadata = create_v3_array_metadata(
        shape=shape,
        data_type=np.dtype("float32"),
        chunk_shape=chunks,
        fill_value=np.float32(np.nan),
        codecs=[{"name": "numcodecs.zlib", "configuration": {"level": 1}}],
        dimension_names=dims,
    )
    manifest = ChunkManifest.from_arrays(
        paths=paths,
        offsets=offsets.reshape(grid),
        lengths=lengths.reshape(grid),
        validate_paths=False,
    )
    return ManifestArray(metadata=metadata, chunkmanifest=manifest)


@st.composite
def _layouts(draw: Any) -> dict[str, Any]:
    return {
        "steps": draw(st.integers(1, 3)),
        "per_chunk": draw(st.booleans()),
        "ny": draw(st.integers(1, 3)),
        "static_virtual": draw(st.booleans()),
        "time_dtype": draw(st.sampled_from(["int64", "float64", "int32"])),
        "lat_nan": draw(st.booleans()),
        "title_per_file": draw(st.booleans()),
        "units_per_file": draw(st.booleans()),
        "nan_attr": draw(st.booleans()),
    }


def _file(draw: Any, layout: dict[str, Any], i: int) -> xr.Dataset:
    steps, ny = layout["steps"], layout["ny"]
    url = f"file:///data/f{i:03d}.nc"
    chunks = (1 if layout["per_chunk"] else steps, ny)
    tas = _virtual((steps, ny), chunks, ("time", "lat"), draw, url)
    lat = np.linspace(-60, 60, ny)
    if layout["lat_nan"]:
        lat[0] = np.nan
    times = np.arange(i * steps, (i + 1) * steps).astype(layout["time_dtype"])
    variables: dict[str, Any] = {
        "tas": xr.Variable(
            ("time", "lat"),
            tas,
            attrs={
                "units": f"K{i}" if layout["units_per_file"] else "K",
                "valid": np.array([1.0, 2.0]),
                **({"nan": float("nan")} if layout["nan_attr"] else {}),
            },
            encoding={"dtype": np.dtype("f4")},
        ),
        "time": xr.Variable(
            "time", times, attrs={"units": "days since 2000-01-01"}, encoding={"_FillValue": None}
        ),
        "lat": xr.Variable("lat", lat, attrs={"units": "degrees_north"}),
    }
    if layout["static_virtual"]:
        variables["mask"] = xr.Variable(("lat",), _virtual((ny,), (ny,), ("lat",), draw, url))
    attrs = {"title": f"file {i}" if layout["title_per_file"] else "series", "n": np.int32(3)}
    ds = xr.Dataset(variables, attrs=attrs).set_coords(["time", "lat"])
    ds.encoding = {"source": url}
    return ds


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=_layouts(), n_files=st.integers(1, 4), data=st.data())
def test_packed_scans_rebuild_and_concatenate_exactly(
    layout: dict[str, Any], n_files: int, data: st.DataObject
) -> None:
    datasets = [_file(data.draw, layout, i) for i in range(n_files)]
    # Two batches: each packs its files onto its own skeleton (equal, other objects).
    batches: tuple[list[Any], list[Any]] = ([], [])
    packed = [pack(ds, "time", batches[i % 2]) for i, ds in enumerate(datasets)]
    assert all(p is not None for p in packed)
    assert [len(k) for k in batches] == [1, 1 if n_files > 1 else 0]  # one per layout
    # And each batch's files moved into its columns (those whose chunks sit in one object).
    columns = [
        *in_columns([p for i, p in enumerate(packed) if i % 2 == 0 and p is not None]),
        *in_columns([p for i, p in enumerate(packed) if i % 2 == 1 and p is not None]),
    ]
    assert len(columns) == n_files
    for p in [*packed, *columns]:
        assert p is not None
        ds = datasets[int(str(p.source)[-6:-3])]
        assert same_dataset(p.to_dataset(), ds)
        again = pickle.loads(pickle.dumps(p))
        assert same_dataset(again.to_dataset(), ds)
        # The columnar form changes nothing of the file's references or values.
        for a, b in zip(p.file_refs(), again.file_refs(), strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    files = [
        ScannedFile(
            source=SourceFile(str(ds.encoding["source"]), 1, "m"),
            schema=schema_of(ds, str(ds.encoding["source"]), "netcdf4", "time"),
            content=p or ds,
        )
        for ds, p in zip(datasets, packed, strict=True)
    ]
    expected = xr.concat(datasets, **_CONCAT) if n_files > 1 else datasets[0]
    assert same_dataset(combine_virtual(files, "time"), expected)
    if n_files > 1:
        in_order = sorted(columns, key=lambda p: str(p.source))
        for candidates in ([p for p in packed if p is not None], in_order):
            direct = concat_packed(candidates, "time")
            # A virtual variable without the concat dimension is left to xarray.concat.
            assert (direct is None) == layout["static_virtual"]
            if direct is not None:
                assert same_dataset(direct, expected)


def test_a_dataset_of_another_layout_gets_its_own_skeleton() -> None:
    data = st.data()

    @settings(max_examples=1, deadline=None)
    @given(data=data)
    def check(data: st.DataObject) -> None:
        base = {
            "steps": 2,
            "per_chunk": True,
            "ny": 2,
            "static_virtual": False,
            "time_dtype": "int64",
            "lat_nan": False,
            "title_per_file": True,
            "units_per_file": False,
            "nan_attr": False,
        }
        a = _file(data.draw, base, 0)
        b = _file(data.draw, {**base, "steps": 3}, 1)  # another shape: other metadata
        c = _file(data.draw, base, 2)
        known: list[Any] = []
        pa, pb, pc = (pack(ds, "time", known) for ds in (a, b, c))
        assert pa is not None and pb is not None and pc is not None
        assert len(known) == 2
        assert pc.skeleton is pa.skeleton and pb.skeleton is not pa.skeleton
        assert pc.attrs == {"": c.attrs}  # the title differs; the rest is the skeleton's
        # Files of two layouts are concatenated through their datasets.
        assert concat_packed([pa, pb], "time") is None

    check()


def test_inlined_chunks_stay_unpacked() -> None:
    metadata = create_v3_array_metadata(
        shape=(2,), data_type=np.dtype("int8"), chunk_shape=(1,), dimension_names=("time",)
    )
    manifest = ChunkManifest(
        entries={
            "0": {"path": "", "offset": 0, "length": 1, "data": b"\x01"},
            "1": {"path": "file:///a.nc", "offset": 0, "length": 1},
        }
    )
    ds = xr.Dataset({"v": ("time", ManifestArray(metadata=metadata, chunkmanifest=manifest))})
    assert pack(ds, "time") is None


def test_array_valued_attributes_pack_per_file() -> None:
    def file(i: int, bounds: list[float]) -> xr.Dataset:
        return xr.Dataset(
            {"time": ("time", np.arange(2) + 2 * i), "v": ("time", np.ones(2))},
            attrs={"bounds": np.array(bounds)},  # dict equality on such values raises
        )

    a, b, c = file(0, [1.0, 2.0]), file(1, [1.0, 2.0]), file(2, [1.0, 3.0])
    known: list[Any] = []
    pa, pb, pc = (pack(ds, "time", known) for ds in (a, b, c))
    assert pa is not None and pb is not None and pc is not None
    assert len(known) == 1
    assert pb.attrs == {} and list(pc.attrs) == [""]  # equal arrays shared, others per file
    for ds, p in zip((a, b, c), (pa, pb, pc), strict=True):
        # same_dataset compares attributes with ``!=``, which raises on such arrays.
        xr.testing.assert_identical(p.to_dataset(), ds)


def test_batch_results_share_skeleton_and_schema_parts(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "src", 6, steps=2)
    sources = [SourceFile(f"file://{p}", p.stat().st_size, "m") for p in paths]
    options = scan_module.ScanOptions(format="netcdf4", concat_dim="time")
    results = scan_module.scan_files(sources, options)
    assert all(isinstance(r, ScannedFile) for r in results)
    scanned = [r for r in results if isinstance(r, ScannedFile)]
    assert all(isinstance(s.content, PackedDataset) for s in scanned)
    # In the batch's columns: no arrays of their own.
    assert all(isinstance(s.content, PackedDataset) and s.content.refs == () for s in scanned)
    skeletons = {id(s.content.skeleton) for s in scanned if isinstance(s.content, PackedDataset)}
    assert len(skeletons) == 1
    assert len({id(s.schema.variables) for s in scanned}) == 1
    # Each one is the file's own scan, and pickles small.
    for s, source in zip(scanned, sources, strict=True):
        alone = scan_module.scan_file(source, options)
        assert isinstance(alone, ScannedFile)
        assert same_dataset(s.dataset, alone.dataset)
        assert s.schema == alone.schema
    # Each file's dataset (scan_file gives files laid out like one before packed already).
    unpacked = [dataclasses.replace(s, content=s.dataset) for s in scanned]
    assert len(pickle.dumps(scanned)) * 2 < len(pickle.dumps(unpacked))
    # Packing is idempotent: packed results pass through.
    assert pack_results(scanned, "time") == scanned


async def _refs(store: Any, path: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    async for coords, kinds, paths, offsets, lengths, _ in store.array_chunk_iterator(path):
        for row in zip(coords.tolist(), kinds.tolist(), paths, offsets, lengths, strict=True):
            if row[1] == 2:  # virtual (native and inline chunks are compared as values)
                out.append((tuple(row[0]), row[2], int(row[3]), int(row[4])))
    return sorted(out)


def _repo_content(repo: Path, folder: Path) -> tuple[xr.Dataset, dict[str, list[Any]]]:
    prefix = f"file://{folder}/"
    r = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(repo)),
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {prefix: icechunk.credentials.LocalFileSystemAccess}
        ),
    )
    store = r.readonly_session(branch="main").store
    ds = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
    refs = {str(n): asyncio.run(_refs(store, str(n))) for n in ds.variables}
    return ds, refs


@pytest.mark.parametrize("cuts", [[6], [3, 6], [1, 4, 6]])
def test_runs_with_packed_results_store_what_unpacked_ones_store(
    tmp_path: Path, cuts: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "src"
    paths = write_series(folder, 6, steps=2)
    stored = {}
    for packed in (True, False):
        monkeypatch.setattr(scan_module, "PACK_RESULTS", packed)
        repo = tmp_path / f"repo-{packed}"
        for upto in cuts:  # one run per cut: the first creates, the next ones append
            pipeline = pipeline_from_dict(
                {
                    "name": "packed",
                    "source": {"urls": [str(p) for p in paths[:upto]], "concat_dim": "time"},
                    "target": {"repo": str(repo)},
                },
                base_dir=tmp_path,
            )
            assert icepipe.run(pipeline).status == "committed"
        stored[packed] = _repo_content(repo, folder)
    xr.testing.assert_identical(stored[True][0], stored[False][0])
    assert stored[True][1] == stored[False][1]
    assert len(stored[True][1]["tas"]) == 12  # every step's reference was compared
