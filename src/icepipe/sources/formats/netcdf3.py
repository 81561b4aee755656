"""netCDF3 files (CDF-1, CDF-2, CDF-5): virtual references through VirtualiZarr's netCDF3
parser; lazy opens through netCDF4-python (local) or the parser's Zarr view (object storage)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import xarray as xr

from icepipe.errors import SourceError
from icepipe.model import SourceFile
from icepipe.sources.formats.base import Opened, ScanOptions
from icepipe.sources.formats.common import XarrayOpens, open_virtual, open_xarray
from icepipe.sources.stores import netcdf3_store, registry_for
from icepipe.storage import scheme_of

__all__ = ["INDEXED_SCANS", "NetCDF3Reader"]

#: Whether local files laid out like one already scanned take the header route
#: (:mod:`~icepipe.sources.formats.netcdf3_header` through :mod:`~icepipe.sources.quick`;
#: benchmarks and tests switch it off to measure and compare VirtualiZarr's route).
INDEXED_SCANS = True


class NetCDF3Reader(XarrayOpens):
    """netCDF3 classic files; they hold no groups."""

    name: ClassVar[str] = "netcdf3"
    has_groups: ClassVar[bool] = False
    plain_fallback: ClassVar[bool] = True

    def detect(self, head: bytes, url: str) -> bool:
        return head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05")

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        from virtualizarr.parsers import NetCDF3Parser

        if options.group is not None:
            raise SourceError(
                f"{source.url}: is netcdf3, which has no groups, but source.group is "
                f"{options.group!r}; remove source.group, or remove the file",
                url=source.url,
            )
        registry = registry_for(source.url, options.storage)
        ds = open_virtual(source.url, NetCDF3Parser(), registry, options.order_by)
        return [Opened("", ds, self.name)]

    def open_dataset(
        self, url: str, options: ScanOptions, *, chunks: Mapping[str, int] | None, raw: bool
    ) -> xr.Dataset:
        kwargs: dict[str, Any] = {"group": options.group} if options.group else {}
        if scheme_of(url) == "file":
            # netCDF4-python reads every netCDF3 variant (CDF-1, CDF-2 and CDF-5; scipy misses
            # CDF-5).
            source: Any = url.removeprefix("file://")
            return open_xarray(url, "netcdf3", source, "netcdf4", chunks=chunks, raw=raw, **kwargs)
        # netCDF4-python reads paths only: on object storage, the file is read as the Zarr view
        # VirtualiZarr's parser gives it (the same view virtual ingests store). It pickles as
        # (url, storage): the task graph holds no credentials, each worker resolves its own.
        kwargs.update(consolidated=False, zarr_format=3)
        source = netcdf3_store(url, options.storage)
        return open_xarray(url, "netcdf3", source, "zarr", chunks=chunks, raw=raw, **kwargs)

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        return []
