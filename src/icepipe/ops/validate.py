"""Read ingested data back from the repository and compare it with the source files.

For a sample of the files in the ledger, the region of the stored dataset that each file
filled (its ``start``/``length`` along ``concat_dim``, from the commit metadata) is read
through Icechunk, which resolves virtual references exactly like a user's read would, and
compared value by value with the file opened by xarray, both decoded (CF times, scale and
offset). NaNs compare equal; nothing else is tolerated.

Catches what no write-time check can: virtual references into files that were later replaced
or removed, misconfigured virtual chunk containers that read back as fill values, and time
encodings normalised the wrong way.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from icepipe import repository, sources
from icepipe.errors import ConfigError, IcepipeError, ValidationError, short_message
from icepipe.sources.formats.grib import cube_names as grib_cube_names
from icepipe.spec import Pipeline
from icepipe.xarray import open_dataset

__all__ = ["ValidationReport", "sample_records", "validate_pipeline"]


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_pipeline` compared (it raises on the first difference)."""

    pipeline: str
    repo: str
    branch: str
    group: str | None
    snapshot_id: str
    files_ingested: int
    files_checked: list[str] = field(default_factory=list)
    variables_checked: int = 0
    values_checked: int = 0
    seconds: float = 0.0
    ref: str | None = None


def sample_records[R](records: Sequence[R], n: int | None) -> list[R]:
    """``n`` records spread evenly over the data (first and last always in), or all of them
    when ``n`` is ``None``."""
    if n is None or n >= len(records):
        return list(records)
    if n <= 0:
        return []
    idx = np.unique(np.linspace(0, len(records) - 1, n).round().astype(int))
    return [records[int(i)] for i in idx]


def validate_pipeline(
    pipeline: Pipeline,
    *,
    sample: int | None = 3,
    branch: str | None = None,
    ref: str | None = None,
    urls: Sequence[str] | None = None,
) -> ValidationReport:
    """Compare a sample of the files ingested by ``pipeline`` with what the repository holds.

    Parameters
    ----------
    pipeline
        The pipeline whose target is checked.
    sample
        How many files to compare (spread over the data); ``None`` for all.
    branch
        The branch to read (default: the pipeline's).
    ref
        Instead of a branch's tip, a tag, snapshot id or ``REF~N`` (as ``icepipe info
        --ref`` takes): the data stored there are compared with the files the ledger lists
        up to that snapshot, as the source files are now.
    urls
        Only sample among these files (e.g. the files a run just ingested).

    Raises
    ------
    ValidationError
        A value differs, a variable or file is missing, or stored data cannot be read; the
        message names every such file and the variable.
    ConfigError
        No repository, branch or ref, both ``branch`` and ``ref`` given, nothing ingested
        into the group yet, or ``sample`` is negative.
    """
    if sample is not None and sample < 0:
        raise ConfigError(
            f"expected a number of files to compare (0 or more); got {sample}", field="sample"
        )
    if branch is not None and ref is not None:
        raise ConfigError(
            f"expected --branch or --ref, not both; got --branch {branch!r} --ref {ref!r} "
            f"(--ref {branch}~N reads the branch's history)",
            field="--ref",
        )
    t0 = time.perf_counter()
    t, src = pipeline.target, pipeline.source
    branch = branch or t.branch
    repo = repository.open_repo(
        t.repo, storage=t.storage, source_storage=src.storage, config=t.config
    )
    snapshot_id = _resolve(repo, t.repo, branch, ref)
    records = [
        r
        for r in repository.read_ingested(repo, snapshot_id, t.group)
        if r.place() is not None or r.cubes is not None
    ]
    if not records:
        raise ConfigError(
            f"nothing ingested into {t.group or '/'!r} on {ref or branch!r} of {t.repo!r} yet; "
            "run the pipeline first"
        )
    candidates = [r for r in records if urls is None or r.url in set(urls)]
    chosen = sample_records(candidates, sample)
    groups: dict[str | None, tuple[xr.Dataset, bool]] = {}

    def stored(group: str | None) -> tuple[xr.Dataset, bool]:
        if group not in groups:
            groups[group] = _open_stored(pipeline, snapshot_id, group)
        return groups[group]

    n_vars = n_values = 0
    failures: list[ValidationError] = []
    for record in chosen:
        for part in _parts(pipeline, record):
            try:
                v, n = _compare_file(pipeline, stored(part.group), part)
            except ValidationError as exc:
                failures.append(exc)  # name every bad file at once, not one per run
                continue
            n_vars += v
            n_values += n
    _raise_failures(failures, len(chosen))
    return ValidationReport(
        pipeline=pipeline.name,
        repo=t.repo,
        branch=branch,
        group=t.group,
        snapshot_id=snapshot_id,
        files_ingested=len(records),
        files_checked=[r.url for r in chosen],
        variables_checked=n_vars,
        values_checked=n_values,
        seconds=time.perf_counter() - t0,
        ref=ref,
    )


def _resolve(repo: Any, location: str, branch: str, ref: str | None) -> str:
    """The snapshot to validate: ``ref``'s, else the tip of ``branch``."""
    if ref is not None:
        return repository.resolve_ref(repo, ref)
    try:
        return repository.resolve_ref(repo, f"branch:{branch}")
    except ConfigError:
        raise ConfigError(f"branch {branch!r} does not exist in {location!r}") from None


def _raise_failures(failures: list[ValidationError], checked: int) -> None:
    """Raise one error naming every file that differs (the error itself when only one)."""
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ValidationError(
            f"{len(failures)} of {checked} checked file(s) differ from the repository:\n  - "
            + "\n  - ".join(str(e) for e in failures),
            url=failures[0].url,
            variable=failures[0].variable,
        )


@dataclass(frozen=True)
class _Part:
    """Where one ingested file sits: its group (a hypercube's with ``grib_cubes``), its GRIB
    hypercube if any, and its region along the concat dimension."""

    url: str
    group: str | None
    cube: str | None
    start: int
    length: int


def _parts(pipeline: Pipeline, record: repository.FileRecord) -> list[_Part]:
    group, url = pipeline.target.group, record.url
    place = record.place()
    if place is not None:
        return [_Part(url, group, pipeline.source.grib_cube, *place)]
    return [
        _Part(url, repository.subgroup(group, cube), cube, start, length)
        for cube, (start, length) in sorted((record.cubes or {}).items())
    ]


def _grib_format(url: str, cube: str | None) -> str:
    """``grib:<index>``: the position of hypercube ``cube`` (the only one when ``None``)."""
    try:
        st = os.stat(url.removeprefix("file://"))
    except OSError as exc:
        raise ValidationError(
            f"{url}: cannot be read ({exc}): restore the file, or re-ingest the group", url=url
        ) from exc
    names = grib_cube_names(url, st.st_size, st.st_mtime_ns)
    if cube is None and len(names) == 1:
        return "grib:0"
    if cube not in names:
        raise ValidationError(
            f"{url}: holds no GRIB hypercube {cube!r} any more (it holds {', '.join(names)}); "
            "the file changed since it was ingested: restore it, or re-ingest the group",
            url=url,
        )
    return f"grib:{names.index(cube)}"


def _open_stored(
    pipeline: Pipeline, snapshot_id: str, group: str | None
) -> tuple[xr.Dataset, bool]:
    """The stored group and whether its times are decoded: they are unless xarray cannot
    decode them (``months since`` in a standard calendar, year 0: icepipe stores those as the
    files hold them, and both sides are then compared undecoded; see :func:`_open_source`)."""
    t, src = pipeline.target, pipeline.source

    def opened(decode_times: bool) -> xr.Dataset:
        return open_dataset(
            t.repo,
            snapshot_id=snapshot_id,
            group=group,
            storage=t.storage,
            source_storage=src.storage,
            decode_times=decode_times,
        )

    try:
        return opened(True), True
    except ValueError:  # xarray: "unable to decode time units ..."
        return opened(False), False


def _open_source(
    pipeline: Pipeline, url: str, cube: str | None = None, *, decode_times: bool = True
) -> xr.Dataset:
    src = pipeline.source
    try:
        fmt = src.format if src.format != "auto" else sources.detect_format(url, src.storage)
        if fmt == "grib":
            fmt = _grib_format(url, cube)
        ds = sources.open_files([url], [fmt], sources.ScanOptions.from_source(src, pipeline.mode))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=xr.SerializationWarning)
            try:
                decoded = xr.decode_cf(ds, decode_times=decode_times)
                decoded.set_close(ds.close)  # the caller closes the file
                return decoded
            except ValueError as exc:
                ds.close()
                raise ValidationError(
                    f"{url}: its times cannot be decoded ({short_message(exc).splitlines()[0]})"
                    " but the repository's can: the file changed since it was ingested; "
                    "restore it, or re-ingest the group",
                    url=url,
                ) from exc
    except IcepipeError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(
            f"{url}: the source file cannot be read back ({exc}); its virtual references "
            "cannot resolve either: restore the file, or re-ingest the group",
            url=url,
        ) from exc


def _compare_file(
    pipeline: Pipeline, stored_group: tuple[xr.Dataset, bool], part: _Part
) -> tuple[int, int]:
    """Compare one file with its region of ``stored``; return (variables, values) compared."""
    stored, decoded = stored_group
    # Closed here, in this thread (netCDF-C and HDF5 are not thread-safe).
    with _open_source(pipeline, part.url, part.cube, decode_times=decoded) as src:
        return _compare_values(pipeline, stored, src, part)


def _compare_values(
    pipeline: Pipeline, stored: xr.Dataset, src: xr.Dataset, part: _Part
) -> tuple[int, int]:
    url, dim = part.url, pipeline.source.concat_dim
    start, length = part.start, part.length
    region: dict[str, Any] = {dim: slice(start, start + length)}
    n_vars = n_values = 0
    for name in [*src.data_vars, *src.coords]:
        if name not in stored.variables:
            if name in src.data_vars:
                raise ValidationError(
                    f"{url}: variable {name!r} is in the source file but not in the repository "
                    f"group {part.group or '/'!r}",
                    url=url,
                    variable=name,
                )
            continue
        s_var = src[name]
        t_var = stored[name]
        if dim in t_var.dims:
            t_var = t_var.isel({dim: region[dim]})
        for d in pipeline.source.stack_dims:
            # Files stacked along other dimensions fill the positions of their coordinates.
            if d in t_var.dims and d in src.coords:
                t_var = t_var.sel({d: src[d].values})
        try:
            expected = np.asarray(s_var.values)
        except Exception as exc:
            raise ValidationError(
                f"{url}: variable {name!r} cannot be read from the source file: "
                f"{short_message(exc)}",
                url=url,
                variable=name,
            ) from exc
        try:
            got = np.asarray(t_var.values)
        except Exception as exc:
            raise ValidationError(
                f"{url}: variable {name!r} cannot be read from the repository (a virtual "
                f"reference that does not resolve?): {_short(exc)}",
                url=url,
                variable=name,
            ) from exc
        if expected.shape != got.shape:
            raise ValidationError(
                f"{url}: variable {name!r} has shape {expected.shape} in the file but "
                f"{got.shape} at {dim}[{start}:{start + length}] in the repository",
                url=url,
                variable=name,
            )
        bad = _differences(expected, got)
        if bad:
            where, want, have = bad
            raise ValidationError(
                f"{url}: variable {name!r} differs at {dim}[{start}:{start + length}], index "
                f"{where}: the file holds {want!r}, the repository {have!r}",
                url=url,
                variable=name,
            )
        n_vars += 1
        n_values += int(expected.size)
    return n_vars, n_values


def _short(exc: BaseException) -> str:
    """An error message without the trace dumps obstore and Icechunk append."""
    return short_message(exc).split("\n\ncontext:", 1)[0].strip()


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, ...], Any, Any] | None:
    """The first differing position and values, or ``None`` when ``a`` equals ``b``."""
    if a.dtype.kind in "mM" and b.dtype.kind in "mM":
        same = (a == b) | (np.isnat(a) & np.isnat(b))
    elif a.dtype.kind in "fc" or b.dtype.kind in "fc":
        try:
            same = (a == b) | (np.isnan(a) & np.isnan(b))
        except TypeError:
            same = np.asarray(a == b)
    else:
        same = np.asarray(a == b)
    if np.all(same):
        return None
    if same.shape != a.shape:  # an elementwise comparison numpy could not do
        return (), a, b
    where = tuple(int(i) for i in np.argwhere(~same)[0])
    return where, a[where].item() if a.ndim else a.item(), b[where].item() if b.ndim else b.item()
