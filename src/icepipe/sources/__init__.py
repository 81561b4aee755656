"""Sources: WHICH files to ingest (listing) and HOW to read them (format detection, scanning)."""

from icepipe.sources.combine import combine_virtual
from icepipe.sources.listing import list_sources
from icepipe.sources.scan import ScannedFile, detect_format, scan_file

__all__ = ["ScannedFile", "combine_virtual", "detect_format", "list_sources", "scan_file"]
