"""Open source files lazily with xarray + Dask, for native (data-rewriting) ingests and
validation.

Each file is opened by its format's reader (:mod:`icepipe.sources.formats`); selection,
``preprocess``, time normalisation and the concatenation are the same for every format. Only
metadata is read here, on the coordinator; the data is read by the Dask tasks that write the
target chunks, on the workers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import xarray as xr

from icepipe.errors import SchemaMismatchError
from icepipe.model import TimeConversion
from icepipe.sources.formats import ScanOptions, reader_for
from icepipe.sources.formats.common import carry_close
from icepipe.sources.hooks import apply_preprocess
from icepipe.storage import StorageOptions

__all__ = ["open_files", "open_lazy"]


def _open_one(
    url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
) -> xr.Dataset:
    ds = opened = reader_for(fmt).open_native(url, fmt, options, chunks)
    try:
        if options.variables is not None:
            keep = (k for k in options.keep if k in ds.variables)
            ds = ds[list(dict.fromkeys([*options.variables, *keep]))]
        if options.drop_variables:
            ds = ds.drop_vars([v for v in options.drop_variables if v in ds.variables])
        ds = apply_preprocess(ds, options.preprocess, options.search_path, url)
    except BaseException:
        opened.close()
        raise
    return carry_close(ds, opened)


def _close_all(parts: Sequence[xr.Dataset]) -> None:
    for part in parts:
        part.close()


def open_files(
    urls: Sequence[str | Sequence[str]],
    formats: Sequence[str | Sequence[str]],
    options: ScanOptions,
    *,
    conversions: Mapping[str, Mapping[str, TimeConversion]] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open ``urls`` (already in concat order) as one Dask-backed dataset along
    ``options.concat_dim``, each file through its format's reader.

    An entry of ``urls`` may be a list of files forming one step (``merge``/``concat_dims``);
    ``formats`` are the formats the scan recorded, in the same shape.
    ``conversions`` (keyed by an entry's first URL) re-encode drifting time variables.
    ``chunks`` are the Dask chunks each file is opened with (dimensions a file lacks are
    ignored; ``{}`` keeps the files' own chunks). Opening already aligned with the target grid
    leaves only a concatenation along ``concat_dim``, instead of a shuffle whose buffers cost
    hundreds of MiB per worker whatever the data size. ``options`` give the selection
    (``variables``, ``drop_variables``, ``order_by`` kept), ``preprocess``, the ``group`` and
    the ``storage`` reaching files on object storage (credentials resolved on each worker).

    Times stay undecoded (raw values with ``units``), exactly as in virtual mode, so appends and
    every CF calendar round-trip; packed data keep their encoding (re-packed on write).

    Close the result (``with open_files(...) as ds:``) in the thread that opened it once the
    data is written: that closes every file it read. Most xarray operations return datasets
    that forget how to close them, so close the dataset this returns, not one derived from it.

    Raises
    ------
    SourceError
        A file cannot be opened.
    SchemaMismatchError
        The files cannot be combined.
    """
    opened: list[xr.Dataset] = []  # every file's dataset, closed with the result
    try:
        ds = _combined(urls, formats, options, conversions, chunks, opened)
    except BaseException:
        _close_all(opened)
        raise
    # A new object (shallow), even for one file: that file's dataset closes its own file.
    ds = ds.copy(deep=False)
    ds.set_close(functools.partial(_close_all, opened))
    return ds


def _combined(
    urls: Sequence[str | Sequence[str]],
    formats: Sequence[str | Sequence[str]],
    options: ScanOptions,
    conversions: Mapping[str, Mapping[str, TimeConversion]] | None,
    chunks: Mapping[str, int] | None,
    opened: list[xr.Dataset],
) -> xr.Dataset:
    """:func:`open_files`' work; each dataset opened is added to ``opened`` as it opens."""

    def one(url: str, fmt: str) -> xr.Dataset:
        opened.append(_open_one(url, fmt, options, chunks))
        return opened[-1]

    parts = []
    for u, f in zip(urls, formats, strict=True):
        if isinstance(u, str) and isinstance(f, str):
            parts.append(one(u, f))
        else:
            # A step of several files (merge / concat_dims): combined by coordinates.
            from icepipe.sources.combine import combine_step

            members = [one(a, b) for a, b in zip(u, f, strict=True)]
            parts.append(combine_step(members, list(u)))
    from icepipe.sources.combine import normalize_times

    for i, u in enumerate(urls):
        key = u if isinstance(u, str) else u[0]
        parts[i] = normalize_times(parts[i], (conversions or {}).get(key, {}), key)
    if len(parts) == 1:
        return parts[0]
    concat_dim = options.concat_dim
    try:
        return xr.concat(
            parts,
            dim=concat_dim,
            data_vars="minimal",
            coords="minimal",
            compat="override",
            combine_attrs="override",
            join="override",
        )
    except ValueError as exc:
        flat = [x for u in urls for x in ([u] if isinstance(u, str) else u)]
        raise SchemaMismatchError(
            f"the files cannot be combined along {concat_dim!r}: {exc}", urls=flat
        ) from exc


def open_lazy(
    urls: Sequence[str | Sequence[str]],
    formats: Sequence[str | Sequence[str]],
    concat_dim: str,
    *,
    storage: StorageOptions | None = None,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """:func:`open_files` for every variable of the files, without ``preprocess`` (a shortcut
    for callers without a pipeline's :class:`ScanOptions`).

    Raises
    ------
    SourceError
        A file cannot be opened.
    SchemaMismatchError
        The files cannot be combined.
    """
    options = ScanOptions(concat_dim=concat_dim, storage=storage)
    return open_files(urls, formats, options, chunks=chunks)
