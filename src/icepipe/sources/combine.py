"""Combine datasets along the concat dimension and into steps (``merge``, several combine
dimensions), and rewrite time values into the stored encoding: the virtual datasets of scans
and the lazy datasets of native opens alike. No I/O: references, loaded coordinates and lazy
(Dask) values only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import xarray as xr

from icepipe.cf import rounded_exactly
from icepipe.errors import SchemaMismatchError, SourceError
from icepipe.model import TimeConversion
from icepipe.sources.packed import PackedDataset, concat_packed, one_layout
from icepipe.sources.scan import ScannedFile, schema_of

__all__ = [
    "assemble_steps",
    "combine_step",
    "combine_virtual",
    "normalize_times",
    "virtual_pieces",
]


def combine_virtual(files: Sequence[ScannedFile], concat_dim: str) -> xr.Dataset:
    """Concatenate virtual datasets, already ordered, along ``concat_dim``.

    Variables without ``concat_dim`` (grids, masks, static fields) are taken from the first file;
    index coordinates of the other dimensions must be equal in every file.

    Raises
    ------
    SchemaMismatchError
        An index coordinate of another dimension differs between two files.
    """
    if not files:
        raise ValueError("combine_virtual needs at least one file")
    packed = [f.content for f in files if isinstance(f.content, PackedDataset)]
    if len(files) > 1 and len(packed) == len(files):
        # Files of one skeleton share every coordinate but ``concat_dim``'s: no dataset per file.
        combined = concat_packed(packed, concat_dim)
        if combined is not None:
            return combined
    first = files[0]
    datasets = [f.dataset for f in files]  # once: a packed scan is rebuilt on each access
    for other, ds in zip(files[1:], datasets[1:], strict=True):
        for name, index in datasets[0].indexes.items():
            if name == concat_dim or name not in ds.indexes:
                continue
            if not index.equals(ds.indexes[name]):
                raise SchemaMismatchError(
                    f"coordinate {name!r} differs between {first.source.url} and "
                    f"{other.source.url}; files combined along {concat_dim!r} must share every "
                    "other coordinate: fix or remove the file",
                    urls=(other.source.url, first.source.url),
                )
    if len(files) == 1:
        return datasets[0]
    return xr.concat(
        datasets,
        dim=concat_dim,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
        join="override",
    )


def virtual_pieces(
    files: Sequence[ScannedFile], concat_dim: str, size: int
) -> list[list[ScannedFile]]:
    """``files`` (ordered) cut into consecutive pieces of at most ``size`` files, to combine
    and write one after the other, so that the client holds one piece's references at a time.

    Only files packed on one layout are cut (:func:`icepipe.sources.packed.one_layout`): they
    share every variable without ``concat_dim``, so appending piece after piece stores what
    one concatenation does. Others stay one piece, as :func:`combine_virtual` checks them.
    """
    contents = [f.content for f in files]
    packed = [c for c in contents if isinstance(c, PackedDataset)]
    if len(files) <= size or len(packed) < len(files) or not one_layout(packed, concat_dim):
        return [list(files)]
    return [list(files[i : i + size]) for i in range(0, len(files), size)]


def combine_step(datasets: Sequence[xr.Dataset], urls: Sequence[str]) -> xr.Dataset:
    """Combine the datasets of one step (same ``concat_dim`` values) by their coordinates:
    different variables are merged, different values of the other combine dims stacked.

    Raises
    ------
    SchemaMismatchError
        They cannot be combined (overlapping variables, missing or conflicting coordinates).
    """
    try:
        out = xr.combine_by_coords(
            list(datasets),
            data_vars="minimal",
            coords="minimal",
            compat="override",
            combine_attrs="override",
            join="exact",
        )
        return out if isinstance(out, xr.Dataset) else out.to_dataset()
    except (ValueError, KeyError) as exc:
        raise SchemaMismatchError(
            f"files {', '.join(urls)} hold the same {'values'} along the concat dimension but "
            f"cannot be combined into one step: {exc}. With merge: true they must hold "
            "different variables on the same grid; with concat_dims they must differ in the "
            "other combine dimensions' coordinates",
            urls=list(urls),
        ) from exc


def assemble_steps(
    files: Sequence[ScannedFile],
    concat_dim: str,
    *,
    stack_dims: Sequence[str] = (),
    merge: bool = False,
    order_by: str | None = None,
) -> list[ScannedFile]:
    """Group files that hold the same ``concat_dim`` values into one step each.

    Without ``merge`` and ``stack_dims`` every file is its own step. Otherwise the files of a
    step are combined by coordinates (:func:`combine_step`) and summarised again, so planning
    treats the step like one file; its ``members`` are the files.
    """
    if not merge and not stack_dims:
        return list(files)
    for f in files:
        if f.fallback:
            raise SourceError(
                f"{f.source.url}: variable(s) {', '.join(f.fallback)} must be read natively "
                "(the GRIB codec cannot decode them correctly), which merge/concat_dims do not "
                "support yet; set mode: native, or list them in source.drop_variables",
                url=f.source.url,
            )
    groups: dict[object, list[ScannedFile]] = {}
    for f in files:
        key = f.schema.concat_values if f.schema.concat_values is not None else f.source.url
        groups.setdefault(key, []).append(f)
    steps = []
    for members in groups.values():
        members.sort(key=lambda m: m.source.url)
        urls = [m.source.url for m in members]
        ds = combine_step([m.dataset for m in members], urls)
        first = members[0]
        schema = schema_of(ds, first.source.url, first.schema.format, concat_dim, order_by=order_by)
        steps.append(
            replace(
                first,
                schema=schema,
                content=ds,
                members=tuple(m.source for m in members),
                member_formats=tuple(m.schema.format for m in members),
            )
        )
    return steps


def normalize_times(
    ds: xr.Dataset, conversions: Mapping[str, TimeConversion], url: str
) -> xr.Dataset:
    """Rewrite time variables of ``ds`` into the stored encoding (see ``plan.TimeConversion``).

    Raises
    ------
    SchemaMismatchError
        A value is not exactly representable in the stored encoding (the message names the
        file): e.g. a 12:00 step into whole days.
    """
    if not conversions:
        return ds
    ds = ds.copy()
    for name, c in conversions.items():
        var = ds.variables[name]
        new = var.data * c.scale + c.offset
        dtype = np.dtype(c.dtype)
        if dtype.kind in "iu" and not isinstance(new, np.ndarray):
            # Lazy (Dask) values are checked when the write computes them.
            new = new.map_blocks(_exact_integers, dtype=new.dtype, what=f"{url}: {name!r}")
        elif dtype.kind in "iu":
            new, inexact = rounded_exactly(new)
            if inexact is not None:
                raise SchemaMismatchError(
                    f"{url}: {name!r} values in {var.attrs.get('units')!r} cannot be stored "
                    f"exactly as {c.dtype} {c.units!r} (e.g. {inexact!r}); "
                    "rewrite the file with the same time encoding",
                    url=url,
                )
        attrs = dict(var.attrs)
        # Bounds without units (or calendar) of their own keep inheriting their parent's,
        # which is converted along with them: stored as the files store them.
        if "units" in attrs or name in ds.indexes:
            attrs["units"] = c.units
        if c.calendar is not None and ("calendar" in attrs or name in ds.indexes):
            attrs["calendar"] = c.calendar
        encoding = {**var.encoding, "dtype": dtype}
        replaced = xr.Variable(var.dims, new.astype(dtype), attrs, encoding)
        if name in ds.indexes:
            ds = ds.assign_coords({name: replaced})
        else:
            ds[name] = replaced
    return ds


def _exact_integers(block: np.ndarray, what: str) -> np.ndarray:
    rounded, inexact = rounded_exactly(block)
    if inexact is not None:
        raise ValueError(
            f"{what} values cannot be stored exactly in the stored time encoding; rewrite the "
            "file with the same time encoding"
        )
    return rounded
