"""GRIB (editions 1 and 2): virtual references per message, lazy opens through cfgrib (local
files only). :mod:`icepipe.sources.formats.grib_index` indexes the messages as cfgrib does.

A GRIB file holds one or more hypercubes; ``source.grib_cube`` / ``source.grib_cubes`` choose
them. Variables the codec cannot decode correctly are read natively (virtual mode) or refused.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import ClassVar

import xarray as xr

from icepipe.errors import SourceError
from icepipe.model import SourceFile, VariableSchema
from icepipe.sources.formats.base import Opened, ScanOptions
from icepipe.sources.formats.grib_index import GRIB_MAGIC, encode_times, open_grib_native, scan_grib
from icepipe.storage import scheme_of

__all__ = ["GribReader", "cube_names"]


class GribReader:
    """GRIB files, one :class:`Opened` per hypercube."""

    name: ClassVar[str] = "grib"
    has_groups: ClassVar[bool] = False
    plain_fallback: ClassVar[bool] = False

    def detect(self, head: bytes, url: str) -> bool:
        return head[:4] == GRIB_MAGIC

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        """The selected hypercubes of a GRIB file.

        A variable the codec cannot decode correctly is left out of the virtual dataset; in
        virtual mode it is read natively (through cfgrib) and written as ordinary chunks, with
        the same chunk grid.
        """
        url, o = source.url, options
        if o.mode == "native" and scheme_of(url) != "file":
            raise SourceError(
                f"{url}: GRIB on object storage can be ingested virtually only (cfgrib reads "
                "local files, which Dask workers on other machines would not see); set mode: "
                "virtual, or copy the files to a file system every worker mounts",
                url=url,
            )
        # Length-1 time/step/level dimensions stay, so that files concatenate along them.
        cubes = scan_grib(url, size=source.size, squeeze=False, storage=o.storage)
        names = [c.name for c in cubes]
        if o.grib_cubes is not None:
            chosen = [c for c in cubes if not o.grib_cubes or c.name in o.grib_cubes]
            if not chosen:
                raise SourceError(
                    f"{url}: holds none of the GRIB hypercubes {', '.join(o.grib_cubes)} named "
                    f"in source.grib_cubes; it holds {', '.join(names)}. Fix source.grib_cubes, "
                    "or remove the file",
                    url=url,
                )
        elif o.grib_cube is not None:
            chosen = [c for c in cubes if c.name == o.grib_cube]
            if not chosen:
                raise SourceError(
                    f"{url}: has no GRIB hypercube {o.grib_cube!r}; it holds "
                    f"{', '.join(names)}. Fix source.grib_cube",
                    url=url,
                )
        elif len(cubes) == 1:
            chosen = cubes
        else:
            raise SourceError(
                f"{url}: holds {len(cubes)} GRIB hypercubes that cannot be combined into one "
                f"dataset ({', '.join(names)}); set source.grib_cubes: all (one group per "
                "hypercube, under target.group), or source.grib_cube to one of them",
                url=url,
            )
        return [
            Opened(
                name=cube.name,
                dataset=encode_times(cube.dataset),
                format=f"grib:{cube.index}",
                native={
                    n: VariableSchema(
                        dims=v.dims,
                        shape=v.shape,
                        dtype="float32",
                        chunks=v.chunks,
                        attrs_units=v.units,
                    )
                    for n, v in cube.variables.items()
                    if not v.decodable and not v.refused
                },
                fallback=cube.fallback,
                refused=cube.refused,
            )
            for cube in chosen
        ]

    def open_native(
        self, url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
    ) -> xr.Dataset:
        # GRIB is read through cfgrib (local files); the cube index comes from the scan.
        # Times raw, with their units, as the scan has them (and as netCDF is opened).
        ds = encode_times(open_grib_native(url, squeeze=False)[int(fmt.split(":", 1)[1])])
        return ds.chunk({d: n for d, n in (chunks or {}).items() if d in ds.dims})

    def open_plain(self, url: str, options: ScanOptions) -> xr.Dataset | None:
        return None

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        return []  # in Opened.refused, with the reasons, per hypercube


@functools.lru_cache(maxsize=8)
def _cube_names(url: str, size: int, mtime_ns: int) -> list[str]:
    return [c.name for c in scan_grib(url, squeeze=False)]


def cube_names(url: str, size: int, mtime_ns: int) -> list[str]:
    """The hypercube names of the local GRIB file ``url``, in file order, scanned once per
    file version (``size``, ``mtime_ns``) rather than once per cube.

    Raises
    ------
    SourceError
        The file cannot be scanned.
    """
    return _cube_names(url, size, mtime_ns)
