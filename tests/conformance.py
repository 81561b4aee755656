"""Metamorphic conformance harness over real data.

For a series of real files (in time order, which is also their order of arrival):

* one ``icepipe.run`` over all files,
* the same files ingested by k runs (2-4), the series cut at given points, in arrival order,
* ``xarray.open_mfdataset(files)`` (cfgrib's hypercubes for GRIB),

must hold the same decoded values, coordinates (bounds and times included) and the attributes
of the first file, in virtual and in native mode; and a run with nothing new must say so and
leave the branch where it was. A series icepipe cannot store must be refused with a typed
:class:`icepipe.IcepipeError` whose message names the file; anything else (an untyped
exception, values that differ, k runs that differ from one) is a defect the matrix shows.

Used by ``scripts/conformance.py`` (the full matrix, ``make conformance``) and by
``tests/test_conformance.py`` (a representative subset in ``make test``).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml

import icepipe

GROUP = "g"
MODES = ("virtual", "native")
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
TIME_NAMES = ("time", "t", "TIME", "Time", "time_counter", "day", "date", "record", "report")


@dataclass(frozen=True)
class Series:
    """Real files that form one series along ``concat_dim``, in time (= arrival) order."""

    source: str  # the package the files come from
    name: str
    files: tuple[Path, ...]
    concat_dim: str
    # "series" (as published), "derived", "split" (one file split along a dim), "calendar"
    # (one daily file cut at calendar boundaries), "file"
    kind: str
    fmt: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)  # more `source:` keys

    @property
    def grib(self) -> bool:
        return self.fmt == "grib"


@dataclass
class Outcome:
    """One cell of the matrix: a series in one mode, ingested by one run and by k runs."""

    source: str
    series: str
    kind: str
    files: int
    mode: str
    runs: list[int]  # files per run of the split ingest ([n] for a single file)
    status: str  # equal | refused | differs | error
    message: str = ""
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    note: str = ""  # about an equal result (e.g. times compared undecoded)

    def row(self) -> dict[str, Any]:
        return self.__dict__.copy()


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(8)


def _record_dim(path: Path) -> str | None:
    """The unlimited dimension, else a time-like one, else the first: what a file grows along."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        if nc.groups:
            return None
        dims = nc.dimensions
        for name, dim in dims.items():
            if dim.isunlimited():
                return str(name)
        for name in TIME_NAMES:
            if name in dims:
                return name
        return str(next(iter(dims))) if dims else None


def discover(data: Path) -> list[Series]:
    """Every series the fetched sample data holds (``scripts/fetch_data.sh``)."""
    out: list[Series] = []
    nemo = tuple(sorted((data / "nemo").glob("nemo_1m_*_grid-T.nc")))
    ordered = {"order_by": "time_centered"}
    out.append(Series("iris-sample-data", "nemo", nemo, "time_counter", "series", "auto", ordered))
    for v in (3, 2):
        stores = tuple(sorted((data / f"nemo-zarr-v{v}").glob("*.zarr")))
        out.append(
            Series(
                "iris-sample-data", f"nemo-zarr-v{v}", stores, "time_counter", "derived",
                "zarr", ordered,
            )
        )  # fmt: skip
    sao = tuple(sorted((data / "sao").glob("950318*_sao.cdf")))[:3]
    common = ["id", "time", "lat", "lon", "elev", "T", "TD", "DIR", "SPD", "PSL", "WX", "CC"]
    out.append(
        Series("libncarg-data", "sao (3 hours)", sao, "report", "series", "netcdf3",
               {"variables": common})
    )  # fmt: skip
    nug = data / "ncarg" / "nug"
    for hist in sorted(nug.glob("tas_mod*_hist_rectilin_grid_2D.nc")):
        for scenario in ("rcp45", "rcp85"):
            nxt = nug / hist.name.replace("_hist_", f"_{scenario}_")
            if nxt.exists():
                name = f"{hist.name.split('_')[1]} hist+{scenario}"
                out.append(Series("libncarg-data", name, (hist, nxt), "time", "series"))
    era5 = tuple(sorted((data / "era5-series").glob("era5-*.grib")))
    out.append(Series("cfgrib", "era5-series", era5, "time", "derived", "grib"))
    out.extend(_splits(data))
    out.extend(_calendar_splits(data))
    out.extend(_single_files(data))
    return [s for s in out if s.files]


def _splits(data: Path) -> Iterator[Series]:
    sources = {"nug": "libncarg-data", "cdf": "libncarg-data"}
    for info_path in sorted((data / "corpus-splits").glob("*/*/split.json")):
        info = json.loads(info_path.read_text())
        folder = info_path.parent
        files = tuple(folder / p for p in info["parts"])
        source = sources.get(folder.parent.name, folder.parent.name)
        # The folder is named after the file (and its subfolder in the package, if any).
        name = f"{folder.name}{Path(info['source']).suffix} / {len(files)} parts"
        yield Series(source, name, files, info["dim"], "split")


def _calendar_splits(data: Path) -> Iterator[Series]:
    """Real daily files cut at calendar boundaries into files of uneven length (monthly files
    of 28-31 days, yearly files), by ``derive_samples.py calendar-split``."""
    sources = {"chi200-monthly": "libncarg-data", "test_file2-yearly": "cf-python"}
    for info_path in sorted((data / "uneven-splits").glob("*/split.json")):
        info = json.loads(info_path.read_text())
        folder = info_path.parent
        files = tuple(folder / p for p in info["parts"])
        sizes = "/".join(map(str, info["sizes"]))
        name = f"{Path(info['source']).name} by {info['by']} ({sizes})"
        yield Series(sources.get(folder.name, folder.name), name, files, info["dim"], "calendar")


def _single_files(data: Path) -> Iterator[Series]:
    """The corpus files that were not split: netCDF along their record (or first) dim, GRIB
    along ``time`` with every hypercube in its own group."""
    split = {
        Path(json.loads(p.read_text())["source"]).name
        for p in (data / "corpus-splits").glob("*/*/split.json")
    }
    for folder in sorted(p for p in (data / "corpus").iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            head = _magic(path)
            if head.startswith(b"GRIB"):
                yield Series(folder.name, path.name, (path,), "time", "file", "grib")
            elif head.startswith(NETCDF_MAGIC) and path.name not in split:
                try:
                    dim = _record_dim(path)
                except OSError:
                    dim = None
                yield Series(folder.name, path.name, (path,), dim or "time", "file")


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------


def reference(series: Series, *, decode_times: bool = True) -> dict[str, xr.Dataset]:
    """What the files hold, read by xarray: group -> dataset (GRIB: one per hypercube)."""
    if series.grib:
        return _grib_reference(series)
    kwargs: dict[str, Any] = {"decode_times": decode_times}
    if series.fmt == "zarr":
        kwargs["engine"] = "zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_mfdataset(
            [str(p) for p in series.files],
            combine="nested",
            concat_dim=series.concat_dim,
            data_vars="minimal",
            coords="minimal",
            compat="override",
            combine_attrs="override",
            **kwargs,
        ).load()
    if "variables" in series.options:
        keep = series.options["variables"]
        ds = ds[keep]
    return {GROUP: ds}


def _grib_reference(series: Series) -> dict[str, xr.Dataset]:
    import cfgrib

    from icepipe.sources.formats.grib_index import scan_grib

    parts: dict[str, list[xr.Dataset]] = {}
    for path in series.files:
        names = [c.name for c in scan_grib("file://" + str(path), squeeze=False)]
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cubes = cfgrib.open_datasets(
                str(path),
                backend_kwargs={"indexpath": folder + "/{short_hash}.idx", "squeeze": False},
            )
            for name, cube in zip(names, cubes, strict=True):
                parts.setdefault(f"{GROUP}/{name}", []).append(cube.load())
    return {
        group: xr.concat(
            dss, dim="time", data_vars="minimal", coords="minimal", compat="override",
            combine_attrs="override",
        )
        for group, dss in parts.items()
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------


def _values_equal(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind in "TUO" and b.dtype.kind in "TUO":
        return bool(all(str(x) == str(y) for x, y in zip(a.ravel(), b.ravel(), strict=True)))
    if a.dtype.kind == "M" or b.dtype.kind == "M":
        return bool(((a == b) | (pd.isnull(a) & pd.isnull(b))).all())
    try:
        return bool(np.array_equal(a, b))
    except (TypeError, ValueError):
        return bool(all(x == y for x, y in zip(a.ravel(), b.ravel(), strict=True)))


def _attr_equal(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


#: Global attributes of the netCDF library, not of the data: icepipe does not store them.
LIBRARY_ATTRS = frozenset({"_NCProperties"})


def _non_finite(value: Any) -> bool:
    try:
        return not bool(np.all(np.isfinite(np.asarray(value, dtype=float))))
    except (TypeError, ValueError):
        return False


def _attrs_diff(where: str, stored: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    # Icechunk stores attributes as strict JSON: NaN/Inf ones are dropped (documented).
    # _NCProperties is the netCDF-C library's provenance of the file (a hidden attribute of
    # netCDF-4 files, copied into some netCDF-3 ones): not stored, like VirtualiZarr (documented).
    ref = {k: v for k, v in ref.items() if not _non_finite(v) and k not in LIBRARY_ATTRS}
    diffs = []
    for key in sorted(set(stored) | set(ref)):
        if key not in stored:
            diffs.append(f"{where}: attribute {key!r} missing")
        elif key not in ref:
            diffs.append(f"{where}: attribute {key!r} not in the first file")
        elif not _attr_equal(stored[key], ref[key]):
            diffs.append(f"{where}: attribute {key!r} = {stored[key]!r}, first file {ref[key]!r}")
    return diffs


def compare(stored: xr.Dataset, ref: xr.Dataset, *, attrs: bool = True) -> list[str]:
    """The differences between what a repository holds and the reference (empty: equal)."""
    diffs = []
    only_s = sorted(map(str, set(stored.variables) - set(ref.variables)))
    only_r = sorted(map(str, set(ref.variables) - set(stored.variables)))
    if only_s or only_r:
        diffs.append(f"variables only stored: {only_s}, only in the files: {only_r}")
    if set(stored.coords) != set(ref.coords):
        diffs.append(
            f"coordinates {sorted(map(str, stored.coords))} vs {sorted(map(str, ref.coords))}"
        )
    for name in sorted(map(str, set(stored.variables) & set(ref.variables))):
        a, b = stored[name].variable, ref[name].variable
        if a.dims != b.dims or a.shape != b.shape:
            diffs.append(f"{name}: dims {dict(a.sizes)} vs {dict(b.sizes)}")
            continue
        # Strings: numpy's variable-width StringDType (Zarr v3) and fixed-width <U compare
        # by value.
        if a.dtype != b.dtype and not (a.dtype.kind in "TUO" and b.dtype.kind in "TUO"):
            diffs.append(f"{name}: dtype {a.dtype} vs {b.dtype}")
        elif not _values_equal(np.asarray(a.values), np.asarray(b.values)):
            diffs.append(f"{name}: values differ")
        if attrs:
            diffs.extend(_attrs_diff(name, dict(a.attrs), dict(b.attrs)))
    if attrs:
        diffs.extend(_attrs_diff("global", dict(stored.attrs), dict(ref.attrs)))
    return diffs


def stored_chunks(repo: Path, groups: Sequence[str]) -> dict[str, Any]:
    """The chunk grid of every array of ``groups`` in the repository at ``repo``."""
    import zarr

    from icepipe import repository
    from icepipe.repository.grids import read_chunk_grid

    store = repository.open_repo(str(repo), create=False).readonly_session("main").store
    out: dict[str, Any] = {}
    for g in groups:
        for name in zarr.open_group(store, path=g, mode="r").array_keys():
            out[f"{g}/{name}"] = read_chunk_grid(store, f"{g}/{name}")
    return out


def compare_chunks(repo: Path, other: Path, groups: Sequence[str]) -> list[str]:
    """How the stored chunks of ``repo`` differ from ``other``'s (empty: the same): any split
    of a series into runs stores the chunks of one run."""
    a, b = stored_chunks(repo, groups), stored_chunks(other, groups)
    return [f"{k}: chunks {a.get(k)} vs {b.get(k)}" for k in sorted(a | b) if a.get(k) != b.get(k)]


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


class Refused(Exception):
    """icepipe refused the series (typed error); the message is the refusal."""


def _pipeline(series: Series, files: Sequence[Path], repo: Path, mode: str, folder: Path) -> Any:
    source: dict[str, Any] = {
        "urls": [str(p) for p in files],
        "format": series.fmt,
        "concat_dim": series.concat_dim,
        **series.options,
    }
    if series.grib:
        source["grib_cubes"] = "all"
    doc = {
        "name": "conformance",
        "source": source,
        "mode": mode,
        "target": {"repo": str(repo), "group": GROUP},
    }
    path = folder / f"{repo.name}-{len(files)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return icepipe.load_pipeline(path)


def _tip(repo: Path) -> str | None:
    import icechunk

    storage = icechunk.local_filesystem_storage(str(repo))
    if not icechunk.Repository.exists(storage):
        return None
    return str(icechunk.Repository.open(storage).lookup_branch("main"))


def _run(series: Series, files: Sequence[Path], repo: Path, mode: str, folder: Path,
         client: Any) -> Any:  # fmt: skip
    pipeline = _pipeline(series, files, repo, mode, folder)
    try:
        return icepipe.run(pipeline, client=client)
    except icepipe.IcepipeError as exc:
        raise Refused(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise Failed(f"icepipe.run: {type(exc).__name__}: {exc}") from exc


def _nothing_new(series: Series, repo: Path, mode: str, folder: Path, client: Any) -> str:
    tip = _tip(repo)
    again = _run(series, series.files, repo, mode, folder, client)
    if again.status != "nothing-new" or again.files_new or _tip(repo) != tip:
        return f"re-run was not 'nothing new': {again.status}, {len(again.files_new)} files"
    return ""


def _ingest(series: Series, cuts: Sequence[int], repo: Path, mode: str, folder: Path,
            client: Any) -> list[str]:  # fmt: skip
    """Ingest the series by one run per batch (``cuts``: where batches end); the groups."""
    groups: list[str] = []
    for end in cuts:
        result = _run(series, series.files[:end], repo, mode, folder, client)
        groups = sorted(set(groups) | set(result.groups or [GROUP]))
    return groups


class Failed(Exception):
    """An untyped failure, labelled with the step it happened in."""


def _read(repo: Path, groups: Sequence[str], *, decode_times: bool = True) -> dict[str, xr.Dataset]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if decode_times:
                return {g: icepipe.open_dataset(str(repo), group=g).load() for g in groups}
            # As icepipe.open_dataset opens it, times left as stored.
            from icepipe import repository

            store = repository.open_repo(str(repo), create=False).readonly_session("main").store
            return {
                g: xr.open_zarr(
                    store, group=g, consolidated=False, zarr_format=3, decode_times=False
                ).load()
                for g in groups
            }
    except Exception as exc:
        raise Failed(f"icepipe.open_dataset: {type(exc).__name__}: {exc}") from exc


def _undecodable(exc: Exception) -> bool:
    return "unable to decode time units" in str(exc)


def _names_file(message: str, series: Series) -> bool:
    return any(p.name in message for p in series.files)


def check(series: Series, mode: str, cuts: Sequence[int], work: Path, client: Any) -> Outcome:
    """Ingest ``series`` in one run and in ``len(cuts)`` runs; compare both with each other and
    with xarray's reading of the files; re-run both."""
    n = len(series.files)
    cuts = sorted(set(cuts) | {n})
    runs = [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
    out = Outcome(series.source, series.name, series.kind, n, mode, runs, "equal")
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(dir=work))
    try:
        _check(series, mode, cuts, folder, client, out)
    except Refused as exc:
        out.status, out.message = "refused", str(exc)
        if not _names_file(out.message, series):
            out.checks.append("the refusal does not name a file")
    except Failed as exc:  # an untyped failure is a defect: reported, not raised
        out.status, out.message = "error", str(exc)
    except Exception as exc:
        out.status, out.message = "error", f"harness: {type(exc).__name__}: {exc}"
    out.seconds = round(time.perf_counter() - start, 2)
    out.message = " ".join(out.message.split())
    return out


def _check(series: Series, mode: str, cuts: list[int], folder: Path, client: Any,
           out: Outcome) -> None:  # fmt: skip
    one_repo, k_repo = folder / "one", folder / "k"
    groups = _ingest(series, [len(series.files)], one_repo, mode, folder, client)
    if problem := _nothing_new(series, one_repo, mode, folder, client):
        out.checks.append(f"1 run: {problem}")
    k_groups: list[str] = []
    if len(cuts) > 1:
        try:
            k_groups = _ingest(series, cuts, k_repo, mode, folder, client)
        except Refused as exc:
            out.status = "differs"
            out.message = f"1 run stores the series, {len(cuts)} runs are refused: {exc}"
            return
        if problem := _nothing_new(series, k_repo, mode, folder, client):
            out.checks.append(f"{len(cuts)} runs: {problem}")
    try:
        _compare(series, groups, k_groups, folder, out, decode_times=True)
    except Failed as exc:
        if not _undecodable(exc):
            raise
        # Times xarray cannot decode (from the files too, else it is a difference): compared
        # as stored, on both sides.
        try:
            reference(series)
        except Exception as ref_exc:
            if not _undecodable(ref_exc):
                raise Failed(f"reference (xarray): {type(ref_exc).__name__}: {ref_exc}") from exc
        else:
            raise Failed(f"{exc} (xarray decodes the files' times)") from exc
        out.checks.clear()
        _compare(series, groups, k_groups, folder, out, decode_times=False)
        out.note = "times compared undecoded: " + str(exc).split(": ", 2)[-1].split(".")[0]
    if out.checks:
        out.status = "differs"
        out.message = "; ".join(out.checks[:4]) + (" ..." if len(out.checks) > 4 else "")


def _compare(series: Series, groups: list[str], k_groups: list[str], folder: Path,
             out: Outcome, *, decode_times: bool) -> None:  # fmt: skip
    one = _read(folder / "one", groups, decode_times=decode_times)
    if k_groups:
        n_runs = len(out.runs)
        several = _read(folder / "k", k_groups, decode_times=decode_times)
        if sorted(several) != sorted(one):
            out.checks.append(f"groups: 1 run {sorted(one)}, {n_runs} runs {sorted(several)}")
        for g in sorted(set(one) & set(several)):
            for d in compare(several[g], one[g]):
                out.checks.append(f"{n_runs} runs vs 1 run: {g}: {d}")
        for d in compare_chunks(folder / "k", folder / "one", sorted(set(one) & set(several))):
            out.checks.append(f"{n_runs} runs vs 1 run: {d}")
    try:
        ref = reference(series, decode_times=decode_times)
    except Exception as exc:
        raise Failed(f"reference (xarray): {type(exc).__name__}: {exc}") from exc
    if sorted(ref) != sorted(one):
        out.checks.append(f"groups stored {sorted(one)}, cfgrib cubes {sorted(ref)}")
    for g in sorted(set(one) & set(ref)):
        # cfgrib's attributes are its own (GRIB keys): values and coordinates only
        for d in compare(one[g], ref[g], attrs=not series.grib):
            out.checks.append(f"vs open_mfdataset: {g.removeprefix(GROUP + '/')}: {d}")


def split_points(n: int, rng: Any) -> list[int]:
    """Random cut points splitting ``n`` files into 2-4 consecutive runs (``[n]``: one file)."""
    if n < 2:
        return [n]
    k = int(rng.integers(2, min(4, n) + 1))
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, n), size=k - 1, replace=False))
    return [*cuts, n]
