"""Plain, picklable value types shared by the stages (no I/O, no heavy imports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FileSchema", "SourceFile", "TargetSchema", "TimeConversion", "VariableSchema"]


@dataclass(frozen=True, order=True, slots=True)
class SourceFile:
    """One source object and its identity at listing time.

    ``url`` is canonical (``file:///abs/path`` or ``s3://bucket/key``); ``size``, ``mtime`` and
    ``etag`` identify the version of the file that was ingested.
    """

    url: str
    size: int
    mtime: str
    etag: str | None = None

    def identity(self) -> dict[str, Any]:
        """The file's identity as the ledger stores it (the keys ``url``, ``size``, ``mtime``
        and ``etag`` of a :class:`icepipe.repository.ledger.FileRecord`)."""
        out: dict[str, Any] = {"url": self.url, "size": self.size, "mtime": self.mtime}
        if self.etag:
            out["etag"] = self.etag
        return out

    def same_version(self, record: Mapping[str, Any]) -> bool:
        """Whether a ledger record describes this very version of the file."""
        if self.etag and record.get("etag"):
            return bool(self.etag == record["etag"] and self.size == record.get("size"))
        return bool(self.size == record.get("size") and self.mtime == record.get("mtime"))


@dataclass(frozen=True, slots=True)
class VariableSchema:
    """What must agree between files for one variable: dims, dtype and (virtual) chunk shape.

    ``chunks`` is the chunk length per dimension (``None`` for loaded, non-virtual variables of
    a file). A stored array on a rectilinear grid (chunks of different lengths along a
    dimension) reports its longest chunk there, and its exact grid in ``edges``.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...] | None  # None for loaded (non-virtual) variables
    attrs_units: str | None = None
    attrs_calendar: str | None = None
    #: The CF attributes that decide how raw values decode (``_FillValue``, ``missing_value``,
    #: ``scale_factor``, ``add_offset``), as comparable numbers (see ``icepipe.cf``).
    packing: tuple[tuple[str, float | str], ...] = ()
    #: Empty for a regular chunk grid. For a rectilinear one, one entry per dimension: the
    #: lengths of its chunks in order (the last may reach past the end: a padded chunk).
    edges: tuple[tuple[int, ...], ...] = ()

    def chunk_lengths(self, axis: int) -> tuple[int, ...]:
        """The lengths of the chunks along ``axis`` in order, the last one as stored (a
        regular grid pads its last chunk to the full length)."""
        if self.edges:
            return self.edges[axis]
        if self.chunks is None:
            return (self.shape[axis],) if self.shape[axis] else ()
        c, n = self.chunks[axis], self.shape[axis]
        return (c,) * (-(-n // c)) if c else ()


@dataclass(frozen=True, slots=True)
class FileSchema:
    """The part of a scanned file that planning needs, without any array data.

    ``concat_values`` are the raw (undecoded) values of the ordering variable (``order_by``,
    by default the concat dimension's coordinate), or ``None`` when the file has none;
    ``concat_units``/``concat_calendar`` are that variable's CF encoding.
    """

    url: str
    format: str
    dims: dict[str, int]
    variables: dict[str, VariableSchema]
    concat_values: tuple[float, ...] | None = None
    concat_units: str | None = None
    concat_calendar: str | None = None
    #: The file's grid (``icepipe.cf.grid_of``: CRS, geotransform, size) where its format has
    #: one (GeoTIFF): files combined into one dataset must share it. ``None``: none.
    grid: str | None = None


@dataclass(frozen=True)
class TargetSchema:
    """The arrays already present in the target group (empty when the group is new)."""

    variables: dict[str, VariableSchema] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    concat_last: float | None = None
    concat_first: float | None = None
    #: Every stored value of the ordering variable (for late arrivals and duplicates).
    order_values: tuple[float, ...] | None = None
    #: The stored raster grid (``icepipe.cf.grid_of`` of ``spatial_ref``), or ``None``.
    grid: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.variables


@dataclass(frozen=True)
class TimeConversion:
    """``new = old * scale + offset``, stored as ``dtype`` with ``units``/``calendar``."""

    scale: float
    offset: float
    dtype: str
    units: str
    calendar: str | None
