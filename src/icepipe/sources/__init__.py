"""Sources: WHICH files to ingest (listing) and HOW to read them: one reader per format
(:mod:`icepipe.sources.formats`), scanning into virtual references, lazy opens.

The names below are imported on first use (PEP 562): a run with nothing new reads the ledger
without importing xarray or Dask, which only the write stage needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from icepipe._lazy import lazy_getattr

if TYPE_CHECKING:
    from icepipe.sources.combine import (
        assemble_steps,
        combine_step,
        combine_virtual,
        normalize_times,
        virtual_pieces,
    )
    from icepipe.sources.formats import ScanOptions, detect_format, reader_for
    from icepipe.sources.hooks import load_hook
    from icepipe.sources.lazy import open_files, open_lazy
    from icepipe.sources.listing import changed_since_listing, list_sources, missing_since_ingest
    from icepipe.sources.scan import (
        ScanBatch,
        ScannedCubes,
        ScannedFile,
        sanitize_attrs,
        scan_batch,
        scan_file,
        scan_files,
    )

#: Where each public name lives.
_LAZY = {
    "assemble_steps": "icepipe.sources.combine",
    "combine_step": "icepipe.sources.combine",
    "combine_virtual": "icepipe.sources.combine",
    "normalize_times": "icepipe.sources.combine",
    "virtual_pieces": "icepipe.sources.combine",
    "ScanOptions": "icepipe.sources.formats",
    "detect_format": "icepipe.sources.formats",
    "reader_for": "icepipe.sources.formats",
    "load_hook": "icepipe.sources.hooks",
    "open_files": "icepipe.sources.lazy",
    "open_lazy": "icepipe.sources.lazy",
    "changed_since_listing": "icepipe.sources.listing",
    "list_sources": "icepipe.sources.listing",
    "missing_since_ingest": "icepipe.sources.listing",
    "ScanBatch": "icepipe.sources.scan",
    "ScannedCubes": "icepipe.sources.scan",
    "ScannedFile": "icepipe.sources.scan",
    "sanitize_attrs": "icepipe.sources.scan",
    "scan_batch": "icepipe.sources.scan",
    "scan_file": "icepipe.sources.scan",
    "scan_files": "icepipe.sources.scan",
}

__all__ = [
    "ScanBatch",
    "ScanOptions",
    "ScannedCubes",
    "ScannedFile",
    "assemble_steps",
    "changed_since_listing",
    "combine_step",
    "combine_virtual",
    "detect_format",
    "list_sources",
    "load_hook",
    "missing_since_ingest",
    "normalize_times",
    "open_files",
    "open_lazy",
    "reader_for",
    "sanitize_attrs",
    "scan_batch",
    "scan_file",
    "scan_files",
    "virtual_pieces",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
