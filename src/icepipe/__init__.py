"""icepipe: ingest scientific array data into Icechunk repositories at cluster scale, on Dask."""

from __future__ import annotations

__version__ = "0.1.0"

from icepipe.errors import (
    ConfigError,
    ConflictError,
    IcepipeError,
    SchemaMismatchError,
    SourceError,
    StorageError,
    ValidationError,
)
from icepipe.pipeline import RunResult, run
from icepipe.spec import Pipeline, load_pipeline
from icepipe.xarray import open_dataset, to_icechunk

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
    "load_pipeline",
    "open_dataset",
    "run",
    "to_icechunk",
]
