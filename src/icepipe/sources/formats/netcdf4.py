"""netCDF4 / HDF5 files: virtual references through VirtualiZarr's HDF parser, lazy opens
through h5netcdf (local paths, or file objects on object storage)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import xarray as xr

from icepipe import hdf5_filters
from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources.formats import hdf5_index
from icepipe.sources.formats.base import Opened, ScanOptions
from icepipe.sources.formats.common import XarrayOpens, is_virtual, open_virtual, open_xarray
from icepipe.sources.stores import RemoteFile, registry_for
from icepipe.storage import StorageOptions, reference_url, scheme_of

__all__ = ["HDF5_MAGIC", "INDEXED_SCANS", "NetCDF4Reader", "scan_parsed"]

#: Whether local files laid out like one already scanned take :mod:`hdf5_index`'s route
#: (benchmarks and tests switch it off to measure and compare the slow route).
INDEXED_SCANS = True

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# An HDF5 superblock may follow a user block of 512, 1024, 2048, ... bytes.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)


class NetCDF4Reader(XarrayOpens):
    """netCDF4 (HDF5) files, groups included."""

    name: ClassVar[str] = "netcdf4"
    has_groups: ClassVar[bool] = True
    plain_fallback: ClassVar[bool] = True

    def detect(self, head: bytes, url: str) -> bool:
        return any(head[o : o + 8] == HDF5_MAGIC for o in _HDF5_OFFSETS)

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        url = source.url
        hdf5_filters.register()  # files compressed with zstd, blosc, ... (read natively too)
        layout = None
        if scheme_of(url) == "file" and INDEXED_SCANS:
            # Files laid out like one scanned before: only their chunk tables are read.
            ds, layout = _scan_indexed(url, options)
            if ds is not None:
                return [Opened("", ds, self.name)]
        hdf5_index.empty_datasets(url)  # nothing left from an earlier scan of this name
        try:
            ds = scan_parsed(url, options)
        except BaseException:
            if layout is not None:
                hdf5_index.discard(layout)
            raise
        if layout is not None:
            hdf5_index.remember(layout, ds, url, reference_url(url))
        return [Opened("", ds, self.name)]

    def open_dataset(
        self, url: str, options: ScanOptions, *, chunks: Mapping[str, int] | None, raw: bool
    ) -> xr.Dataset:
        hdf5_filters.register()  # zstd, blosc, ... compressed files (workers: worker_setup)
        # Remote files are opened as objects that pickle as (url, storage): the task graph that
        # carries them to the workers holds no credentials, each worker resolves its own.
        remote = scheme_of(url) != "file"
        source: Any = RemoteFile(url, options.storage) if remote else url.removeprefix("file://")
        kwargs: dict[str, Any] = {"group": options.group} if options.group else {}
        return open_xarray(url, "netcdf4", source, "h5netcdf", chunks=chunks, raw=raw, **kwargs)

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        known = hdf5_index.empty_datasets(url)
        return known if known is not None else _empty_datasets(url, options.storage)


def scan_parsed(url: str, options: ScanOptions) -> xr.Dataset:
    """The virtual dataset of ``url`` through VirtualiZarr's HDF parser (the slow route, which
    :mod:`~icepipe.sources.formats.hdf5_index` reproduces for files laid out alike)."""
    from virtualizarr.parsers import HDFParser

    registry = registry_for(url, options.storage)
    if options.group is not None:
        _check_group(url, options.group, registry)
    readers = _KeptReaders()
    parser = HDFParser(group=options.group, reader_factory=readers)
    ds = open_virtual(url, parser, registry, options.order_by)
    virtual = [str(n) for n, v in ds.variables.items() if is_virtual(v)]
    if scheme_of(url) == "file":
        path = url.removeprefix("file://")
        hdf5_index.check_filter_masks(path, url, options.group, virtual)
        ds = _with_unwritten_variables(ds, url, options.group)
    elif readers.last is not None:
        hdf5_index.check_filter_masks_in(readers.last, url, options.group, virtual)
    return ds


class _KeptReaders:
    """VirtualiZarr's default reader factory, keeping the last reader made: its cached blocks
    hold what the parser read of an object-store file (the chunk index included), which the
    filter-mask check reads again."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, store: Any, path: str) -> Any:
        from obspec_utils.readers import BlockStoreReader

        self.last = BlockStoreReader(store, path)
        return self.last


def _scan_indexed(url: str, options: ScanOptions) -> tuple[xr.Dataset | None, Any]:
    """:func:`hdf5_index.scan_indexed` of a local file; a file h5py cannot open goes the slow
    route, whose errors name the problem."""
    path = url.removeprefix("file://")
    try:
        return hdf5_index.scan_indexed(
            path, url, reference_url(url), options.group, options.order_by
        )
    except Exception:
        return None, None


def _check_group(url: str, group: str, registry: Any) -> None:
    """Raise naming the groups the file has when it lacks ``group`` (the parser's own error
    is a bare KeyError)."""
    import h5py
    from obspec_utils.readers import BlockStoreReader

    store, path = registry.resolve(reference_url(url))
    with h5py.File(BlockStoreReader(store, path), "r") as f:
        if isinstance(f.get(group), h5py.Group):
            return
        found: list[str] = []
        f.visit(lambda name: found.append(name) if isinstance(f[name], h5py.Group) else None)
    raise SourceError(
        f"{url}: has no group {group!r} (source.group); its groups: "
        f"{', '.join(found) or '(none: everything is in the root group)'}. Fix source.group",
        url=url,
    )


def _with_unwritten_variables(ds: xr.Dataset, url: str, group: str | None) -> xr.Dataset:
    """Add the variables VirtualiZarr's HDF parser leaves out, loaded.

    The parser takes a dimension-scale dataset that holds no data for a dimension without a
    variable, and drops it: but a coordinate variable that was defined and never written (all
    fill values, storage not allocated) is a variable too (gridMET and Daymet samples have
    them). xarray reads them, so they are read here and stored like loaded coordinates.
    """
    import h5py

    path = url.removeprefix("file://")
    with h5py.File(path, "r") as f:
        root = f[group] if group else f
        names = [
            name
            for name, obj in root.items()
            if isinstance(obj, h5py.Dataset)
            and name not in ds.variables
            and not str(obj.attrs.get("NAME", b"")).count("not a netCDF variable")
        ]
    if not names:
        return ds
    with xr.open_dataset(path, engine="h5netcdf", group=group, decode_times=False) as full:
        missing = full[names].load()
    for var in missing.variables.values():
        if "_FillValue" not in var.encoding and "_FillValue" not in var.attrs:
            var.encoding["_FillValue"] = None  # as open_virtual stores loaded variables
    out: xr.Dataset = ds.assign_coords(
        {n: missing[n].variable for n in names if n in missing.coords}
    ).assign({n: missing[n].variable for n in names if n not in missing.coords})
    return out


def _empty_datasets(url: str, storage: StorageOptions | None) -> list[str]:
    """The netCDF4 variables of ``url`` with no values (a dimension of length 0): VirtualiZarr
    leaves them out of the virtual dataset without a word, with the dimension if no other
    variable uses it."""
    import h5py

    source: Any = url.removeprefix("file://") if scheme_of(url) == "file" else None
    out = []
    try:
        with h5py.File(source or RemoteFile(url, storage), "r") as f:
            for name, node in f.items():
                if not isinstance(node, h5py.Dataset) or node.size:
                    continue
                label = node.attrs.get("NAME", b"")
                if isinstance(label, bytes) and label.startswith(b"This is a netCDF dimension"):
                    continue  # a dimension without a variable, not a variable
                out.append(str(name))
    except Exception:  # the parser read it; only a better message is at stake
        return []
    return out
