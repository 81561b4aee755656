"""`make demo`: run every example pipeline on the embedded default and check what landed.

Starts one 2-worker LocalCluster, runs each pipeline given on the command line (a re-run only
ingests new files), re-reads a sample of every variable from the Icechunk repository and
compares it with the source files opened by plain xarray, then prints a summary table.
Exits non-zero when a pipeline fails or a read-back differs.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import icepipe
from icepipe import repository
from icepipe.execute import open_client
from icepipe.repository.grids import rectilinear_enabled

warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")


def _cfgrib_cube(path: str, cube: str | None) -> xr.Dataset:
    """cfgrib's dataset of one hypercube (by icepipe's name for it), length-1 dims kept."""
    if cube is None:
        return xr.open_dataset(
            path, engine="cfgrib", backend_kwargs={"indexpath": "", "squeeze": False}
        )
    return _cfgrib_cubes(path)[cube]


@functools.lru_cache(maxsize=2)
def _cfgrib_cubes(path: str) -> dict[str, xr.Dataset]:
    """Every hypercube of a GRIB file through cfgrib, by icepipe's names (read once per file)."""
    import cfgrib

    from icepipe.sources.formats.grib_index import scan_grib

    names = [c.name for c in scan_grib("file://" + path, squeeze=False)]
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # cfgrib's merge, about xarray defaults
        cubes = cfgrib.open_datasets(
            path, backend_kwargs={"indexpath": folder + "/{short_hash}.idx", "squeeze": False}
        )
        return {name: ds.load() for name, ds in zip(names, cubes, strict=True)}


def _kerchunk_set(path: str) -> xr.Dataset:
    """A kerchunk reference set opened by fsspec (its relative paths made absolute against the
    set's folder, as icepipe reads them; fsspec itself would resolve them against the cwd)."""
    import gzip
    import json
    import os

    from fsspec.implementations.reference import LazyReferenceMapper, ReferenceFileSystem

    if os.path.isdir(path):
        lazy = LazyReferenceMapper(path)
        refs = {k: lazy[k] for k in lazy}
    else:
        raw = Path(path).read_bytes()
        refs = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)["refs"]
    folder = os.path.dirname(path.rstrip("/"))
    for key, value in refs.items():
        if isinstance(value, list) and "://" not in value[0] and not value[0].startswith("/"):
            refs[key] = [os.path.normpath(os.path.join(folder, value[0])), *value[1:]]
    mapper = ReferenceFileSystem(fo={"version": 1, "refs": refs}).get_mapper()
    return xr.open_dataset(mapper, engine="zarr", consolidated=False)


def reference(pipeline: icepipe.Pipeline, urls: list[str], cube: str | None = None) -> xr.Dataset:
    """The source files opened and combined by plain xarray, as icepipe combines them."""
    src = pipeline.source
    parts = []
    for url in urls:
        path = url.removeprefix("file://")
        if path.endswith((".grib", ".grib2", ".grb", ".grb2")):
            # cfgrib, keeping length-1 dimensions as icepipe does to combine files.
            ds = _cfgrib_cube(path, cube)
            ds.attrs.pop("history", None)  # cfgrib stamps the time of reading; icepipe drops it
        elif src.format == "kerchunk":
            ds = _kerchunk_set(path)
        elif path.endswith((".tif", ".tiff")):
            ds = _geotiff(path, src)
        elif path.endswith(".zarr"):
            consolidated = Path(path, ".zmetadata").exists()  # v2 stores; v3 has no standard
            ds = xr.open_zarr(path, consolidated=consolidated)
        else:
            ds = xr.open_dataset(path)
        if src.variables is not None:
            ds = ds[[*src.variables, *([src.order_by] if src.order_by else [])]]
        ds = ds.drop_vars(list(src.drop_variables))
        parts.append(ds)
    return xr.concat(
        parts,
        dim=src.concat_dim,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
        join="override",
    )


def _geotiff(path: str, src: icepipe.SourceSpec) -> xr.Dataset:
    """rioxarray's read of a GeoTIFF (masked), as icepipe's ``source.geotiff`` stacks it."""
    import re

    import rioxarray

    spec = src.geotiff
    da = rioxarray.open_rasterio(path, mask_and_scale=False)
    keep = ("_FillValue",)  # masked when read, as the stored attribute is
    da.attrs = {"grid_mapping": "spatial_ref", **{k: v for k, v in da.attrs.items() if k in keep}}
    da.encoding = {}
    if spec.band_from_filename:
        match = re.search(spec.band_from_filename, Path(path).name)
        da = da.assign_coords(band=[int(match.group(1))] if match else da.band)
    return xr.decode_cf(da.to_dataset(name=spec.variable), decode_coords=False)


def check_read_back(pipeline: icepipe.Pipeline, samples: int = 64) -> tuple[bool, str]:
    """Compare up to ``samples`` positions along the concat dim, for every variable (of every
    hypercube group, with ``grib_cubes``)."""
    t = pipeline.target
    repo = repository.open_repo(t.repo)
    tip = repo.lookup_branch(t.branch)
    records = repository.read_ingested(repo, tip, t.group)
    if pipeline.source.grib_cubes is None:
        return _check_group(pipeline, t.group, [r.url for r in records], None, samples)
    cubes = repository.ledger_cubes(records)
    notes = []
    for cube in cubes:
        group = repository.subgroup(t.group, cube)
        urls = [r.url for r in records if r.place(cube) is not None]
        ok, note = _check_group(pipeline, group, urls, cube, samples)
        if not ok:
            return False, f"{group}: {note}"
        notes.append(note)
    return (
        True,
        f"{len(cubes)} hypercube groups, each {notes[0] if len(set(notes)) == 1 else notes}",
    )


def _check_group(
    pipeline: icepipe.Pipeline, group: str | None, urls: list[str], cube: str | None, samples: int
) -> tuple[bool, str]:
    # Native chunks that follow the files or the calendar are a rectilinear grid: zarr reads
    # it only with its flag set.
    with rectilinear_enabled():
        return _compare_group(pipeline, group, urls, cube, samples)


def _compare_group(
    pipeline: icepipe.Pipeline, group: str | None, urls: list[str], cube: str | None, samples: int
) -> tuple[bool, str]:
    t = pipeline.target
    stored = icepipe.open_dataset(t.repo, branch=t.branch, group=group)
    ref = reference(pipeline, urls, cube)
    dim = pipeline.source.concat_dim
    n = stored.sizes[dim]
    if n != ref.sizes[dim]:
        return False, f"{dim} has {n} steps in the repo, {ref.sizes[dim]} in the files"
    idx = np.unique(np.linspace(0, n - 1, min(samples, n)).astype(int))
    try:
        xr.testing.assert_identical(stored.isel({dim: idx}).load(), ref.isel({dim: idx}).load())
    except AssertionError as exc:
        return False, str(exc).splitlines()[0]
    return True, f"identical ({len(idx)} of {n} {dim} positions, all variables)"


def _describe_layout(result: icepipe.RunResult) -> str:
    """Variables and dimensions; one line per group for GRIB hypercube groups."""
    if not result.groups:
        dims = ", ".join(f"{k}={v}" for k, v in result.dims.items())
        return f"  variables:  {', '.join(result.variables)}\n  dimensions: {dims}\n"
    return "".join(
        f"  group:      {group}: {', '.join(names)}\n"
        for group, (names, _) in result.by_group().items()
    )


# The words of the planner's refusal of files that differ from what a repository ingested
# (icepipe.plan); tests/test_demo.py checks them against a real refusal.
_CHANGED = "changed after they were ingested"


def advice(pipeline: icepipe.Pipeline, exc: icepipe.IcepipeError) -> str | None:
    """What to do about a pipeline the demo could not run, when the cause is the demo's own
    state (None: the error says it all).

    `make data` derives some sample files again; a repository under repos/ that ingested the
    earlier ones then refuses them as changed. That refusal is right for a real pipeline, but
    here the repository is a leftover: remove it and run the demo again.
    """
    if isinstance(exc, icepipe.SourceError) and _CHANGED in str(exc):
        repo = pipeline.target.repo
        return (
            f"its source files differ from those {repo} ingested (`make data` derived them "
            f"again?): remove the demo's repositories with `make clean-repos` (or just this one: "
            f"`rm -rf {repo}`), then run `make demo` again"
        )
    return None


def summary(rows: list[tuple[str, ...]], todo: list[str], seconds: float) -> str:
    """The table of runs, what to do about failures the demo knows (:func:`advice`), the total."""
    header = ("pipeline", "status", "new/all", "vars", "dimensions", "snapshot", "s", "read-back")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["Summary"]
    for r in [header, *rows]:
        lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    if todo:
        lines += ["", "To do", *todo]
    lines += [
        "",
        f"Total {seconds:.1f}s. Repositories are under {Path('repos')}/;",
        "run `make demo` again to see an incremental re-run, and `icepipe log REPO` for history.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pipelines", nargs="+")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows: list[tuple[str, ...]] = []
    todo: list[str] = []
    ok = True
    t0 = time.perf_counter()
    with open_client(workers=args.workers) as (client, info):
        print(f"Dask LocalCluster: {info.n_workers} workers at {info.address}\n")
        for path in args.pipelines:
            pipeline = icepipe.load_pipeline(path)
            try:
                result = icepipe.run(pipeline, client=client)
            except icepipe.IcepipeError as exc:
                ok = False
                print(f"FAILED {path}: {exc}\n", file=sys.stderr)
                rows.append((pipeline.name, "FAILED", "-", "-", "-", "-", "-", str(exc)[:60]))
                hint = advice(pipeline, exc)
                if hint is not None:
                    todo.append(f"  {pipeline.name}: {hint}")
                continue
            good, note = check_read_back(pipeline)
            ok &= good
            n_total = len(result.files_new) + result.files_already
            print(
                f"{pipeline.name}: {result.status}, {len(result.files_new)} new of {n_total} "
                f"file(s) -> {result.repo} [{result.branch}] {result.group or '/'}\n"
                f"{_describe_layout(result)}"
                f"  read-back:  {'OK' if good else 'DIFFERENT'}: {note}\n"
            )
            rows.append(
                (
                    pipeline.name,
                    result.status,
                    f"{len(result.files_new)}/{n_total}",
                    str(len(result.variables)),
                    (
                        f"{len(result.groups)} hypercube groups"
                        if result.groups
                        else " ".join(f"{k}={v}" for k, v in result.dims.items())
                    ),
                    result.snapshot_id or "-",
                    f"{result.seconds:.1f}",
                    "OK" if good else "DIFFERENT",
                )
            )
    print(summary(rows, todo, time.perf_counter() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
