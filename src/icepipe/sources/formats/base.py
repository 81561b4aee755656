"""The reader contract every source format implements, and the options all of them read.

A format is one module of :mod:`icepipe.sources.formats` holding one :class:`Reader`; the
registry there maps ``source.format`` names to readers. :class:`ScanOptions` is built once from
the pipeline's ``source`` section and handed to every reader and to every verb (scan, lazy
open, validation) instead of keyword lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import xarray as xr

from icepipe.model import SourceFile, VariableSchema
from icepipe.storage import StorageOptions

if TYPE_CHECKING:
    from icepipe.spec import GeoTiffSpec, SourceSpec

__all__ = ["Opened", "Reader", "ScanOptions"]


@dataclass(frozen=True)
class ScanOptions:
    """How to read the files of one pipeline (``source.*`` fields); pickles, sent to workers.

    Attributes
    ----------
    format
        ``auto`` (magic bytes) or one of ``netcdf3``, ``netcdf4``, ``zarr``, ``grib``,
        ``kerchunk``.
    concat_dim, order_by, variables, drop_variables, preprocess
        As in the pipeline's ``source`` section.
    search_path
        Folder searched first for the ``preprocess`` module.
    storage
        How to reach object stores: names of credential variables, never values.
    grib_cube
        The one GRIB hypercube to ingest (files holding several need it, or ``grib_cubes``).
    grib_cubes
        Ingest several hypercubes, each into its own group: these names, or every cube when
        empty. ``None``: one cube per pipeline.
    mode
        ``virtual`` or ``native``.
    group
        The netCDF4/HDF5 (or Zarr) group of each file to read; the root group when None.
    geotiff
        ``source.geotiff`` (GeoTIFF files): variable name, where times or band numbers come
        from, overview level; ``None`` reads as the defaults.
    """

    format: str = "auto"
    concat_dim: str = "time"
    order_by: str | None = None
    variables: tuple[str, ...] | None = None
    drop_variables: tuple[str, ...] = ()
    preprocess: str | None = None
    search_path: str | None = None
    storage: StorageOptions | None = None
    grib_cube: str | None = None
    grib_cubes: tuple[str, ...] | None = None
    mode: str = "virtual"
    group: str | None = None
    geotiff: GeoTiffSpec | None = None

    @classmethod
    def from_source(cls, source: SourceSpec, mode: str = "virtual") -> ScanOptions:
        """The options of a pipeline's ``source`` section (and its ``mode``)."""
        return cls(
            format=source.format,
            concat_dim=source.concat_dim,
            order_by=source.order_by,
            variables=source.variables,
            drop_variables=source.drop_variables,
            preprocess=source.preprocess,
            search_path=source.search_path,
            # Names of credential variables, never values: workers read their own environment.
            storage=source.storage,
            grib_cube=source.grib_cube,
            grib_cubes=source.grib_cubes,
            mode=mode,
            group=source.group,
            geotiff=source.geotiff,
        )

    @property
    def keep(self) -> tuple[str, ...]:
        """Variables kept whatever ``variables`` says: the one files are ordered by."""
        return (self.order_by,) if self.order_by else ()

    def selects(self, name: str) -> bool:
        """Whether ``variables``/``drop_variables`` keep the variable ``name``."""
        return (self.variables is None or name in self.variables) and (
            name not in self.drop_variables
        )


@dataclass(frozen=True)
class Opened:
    """One dataset of a file before selection: the whole file, or one GRIB hypercube.

    Attributes
    ----------
    name
        The hypercube's name (empty for other formats).
    dataset
        The virtual dataset.
    format
        The format native reads use (``grib:<cube index>`` for GRIB).
    native
        Schemas of the variables not in ``dataset`` because they must be read natively
        (GRIB fallback), with ``fallback`` giving the reasons.
    refused
        Variables no route reads correctly, with the reasons.
    """

    name: str
    dataset: xr.Dataset
    format: str
    native: Mapping[str, VariableSchema] = field(default_factory=dict)
    fallback: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def elsewhere(self) -> set[str]:
        """Variables of the file that are not in ``dataset``."""
        return set(self.native) | set(self.refused)


class Reader(Protocol):
    """One source format: how to recognise, scan (virtual references) and open (xarray) it.

    Built-in readers register in :data:`icepipe.sources.formats.READERS` as a new one would
    (:func:`icepipe.sources.formats.register`). Readers run on Dask workers: they take and
    return picklable values, and raise :class:`~icepipe.errors.SourceError` naming the file.
    Other exceptions a parser raises are turned into a ``SourceError`` by the scan.
    """

    #: The ``source.format`` value naming this format.
    name: ClassVar[str]
    #: Whether ``source.group`` applies (files of this format hold groups).
    has_groups: ClassVar[bool]
    #: Whether xarray can open a file of this format that the virtual parser refuses, so that a
    #: native ingest still takes it (:meth:`open_plain`).
    plain_fallback: ClassVar[bool]

    def detect(self, head: bytes, url: str) -> bool:
        """Whether a file starting with ``head`` (its first bytes, up to
        :data:`~icepipe.sources.formats.HEAD_BYTES`) is of this format."""
        ...

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[Opened]:
        """The file as virtual datasets (one, or one per GRIB hypercube), before selection."""
        ...

    def open_native(
        self, url: str, fmt: str, options: ScanOptions, chunks: Mapping[str, int] | None
    ) -> xr.Dataset:
        """The file as a lazy (Dask when ``chunks``) xarray dataset, before selection; ``fmt``
        is the format the scan recorded (``grib:<index>`` names a GRIB hypercube)."""
        ...

    def open_plain(self, url: str, options: ScanOptions) -> xr.Dataset | None:
        """The file opened by xarray without Dask nor CF decoding, for a native scan of a file
        the virtual parser refuses; ``None`` when this format has no such route."""
        ...

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        """Variables of the file the virtual parser leaves out without a word (netCDF4
        variables holding no values), so that the scan names them instead of losing them.
        GRIB variables no route reads are in :attr:`Opened.refused` instead."""
        ...
