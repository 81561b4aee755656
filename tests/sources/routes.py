"""Helpers the quick-route tests share: a local source file, its scan by the usual (parser)
route, and the comparison of two scans (schema, dataset, attributes with their types)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from icepipe.model import SourceFile
from icepipe.sources.formats import hdf5_index
from icepipe.sources.formats.base import ScanOptions
from icepipe.sources.packed import PackedDataset
from icepipe.sources.scan import ScannedFile, scan_file


def local_source(path: Path, size: int | None = None) -> SourceFile:
    """``path`` as a listed source file (its size, or ``size`` when the listing is stale)."""
    return SourceFile(f"file://{path}", path.stat().st_size if size is None else size, "0")


def usual_scan(path: Path, options: ScanOptions, reader: ModuleType) -> ScannedFile:
    """``path`` scanned with ``reader``'s quick route off (``reader.INDEXED_SCANS``)."""
    reader.INDEXED_SCANS = False
    try:
        result = scan_file(local_source(path), options)
    finally:
        reader.INDEXED_SCANS = True
    assert isinstance(result, ScannedFile)
    return result


def assert_same_scan(a: Any, b: ScannedFile) -> None:
    """``a`` is a scan equal to ``b``: schema, dataset, and every attribute with its type."""
    assert isinstance(a, ScannedFile)
    assert a.schema == b.schema
    assert hdf5_index.same_dataset(a.dataset, b.dataset)
    for name in b.dataset.variables:  # attribute types too (same_mapping compares them)
        assert hdf5_index.same_mapping(a.dataset[name].attrs, b.dataset[name].attrs), name
    assert hdf5_index.same_mapping(a.dataset.attrs, b.dataset.attrs)


def route(result: Any) -> str:
    """Which route gave a scan: ``"template"`` (packed from a template) or ``"usual"``."""
    return "template" if isinstance(result.content, PackedDataset) else "usual"
