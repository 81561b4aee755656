"""icepipe: ingest scientific array data into Icechunk repositories at cluster scale, on Dask.

The public names below are imported on first use: a process that only needs the
``icepipe.grib`` Zarr codec (any reader of a GRIB repository, through zarr's entry point)
does not pay for importing the pipeline machinery (xarray, Dask, VirtualiZarr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from icepipe._lazy import lazy_getattr
from icepipe.errors import (
    ConfigError,
    ConflictError,
    IcepipeError,
    SchemaMismatchError,
    SourceError,
    StorageError,
    ValidationError,
)

__version__ = "0.1.0"


def _load_before_eccodes() -> None:
    """Import pyproj (when installed) and Python's sqlite3 before anything loads ecCodes.

    The eccodes wheels load eckit's bundled PROJ, SQLite and curl into the global symbol
    namespace (findlibs, ``RTLD_GLOBAL``). Extensions loaded after that bind to those copies
    instead of their own: pyproj's made the process abort at exit ("free(): invalid pointer",
    exit 134) although all its work succeeded, and Python's ``sqlite3`` ran on eckit's SQLite
    3.26 (no FTS5 ``remove_diacritics 2``: the web search index failed to build, "error in
    tokenizer constructor"). xarray loads every backend's entry point together (cfgrib's
    before rioxarray's), so any process opening a file could hit it. Loaded first, they keep
    their own libraries. Measured with eccodes 2.50 / eckitlib 2.5 / pyproj 3.8.
    """
    import contextlib
    import importlib
    import os
    import sys

    flags = sys.getdlopenflags()
    if "gribapi" in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        # ecCodes came first (xarray loaded cfgrib's entry point before icepipe's): these
        # extensions must then prefer their own libraries to the global ones (Linux).
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        for name in ("sqlite3", "pyproj"):
            if name not in sys.modules:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
    finally:
        sys.setdlopenflags(flags)


_load_before_eccodes()

if TYPE_CHECKING:
    from icepipe.ops.repos import get_or_create_repo, open_repo
    from icepipe.pipeline import RunResult, run
    from icepipe.spec import Pipeline, load_pipeline
    from icepipe.xarray import open_dataset, to_icechunk

#: Where each lazily imported public name lives.
_LAZY = {
    "RunResult": "icepipe.pipeline",
    "run": "icepipe.pipeline",
    "Pipeline": "icepipe.spec",
    "load_pipeline": "icepipe.spec",
    "open_dataset": "icepipe.xarray",
    "to_icechunk": "icepipe.xarray",
    "open_repo": "icepipe.ops.repos",
    "get_or_create_repo": "icepipe.ops.repos",
}

__all__ = [
    "ConfigError",
    "ConflictError",
    "IcepipeError",
    "Pipeline",
    "RunResult",
    "SchemaMismatchError",
    "SourceError",
    "StorageError",
    "ValidationError",
    "__version__",
    "get_or_create_repo",
    "load_pipeline",
    "open_dataset",
    "open_repo",
    "run",
    "to_icechunk",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
