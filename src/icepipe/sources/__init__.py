"""Sources: WHICH files to ingest (listing) and HOW to read them: one reader per format
(:mod:`icepipe.sources.formats`), scanning into virtual references, lazy opens."""

from icepipe.sources.combine import (
    assemble_steps,
    combine_step,
    combine_virtual,
    normalize_times,
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
]
