"""Zarr 3 codecs that icepipe writes into repositories, so that any zarr reader can decode them.

:class:`GribCodec` (``"icepipe.grib"``) turns the bytes of one GRIB message (edition 1 or 2) into
the field it holds, with ecCodes. Virtual GRIB references point at whole messages in the source
files, so the bytes a reader fetches for a chunk are exactly one message.

:class:`ShortStripCodec` (``"icepipe.short_strip"``) lets a regular chunk grid describe a TIFF
whose strips do not divide its height: libtiff and GDAL store the last strip with only the rows
left, which it pads to a whole strip before the other codecs see it (the padding lies past the
array's end, where zarr never shows it).

Readers find the codecs through the ``zarr.codecs`` entry point in icepipe's package metadata
(nothing to import), or through :func:`zarr.registry.register_codec`, called when this module
is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from zarr.abc.codec import ArrayBytesCodec, BytesBytesCodec
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType
    from zarr.core.metadata.v3 import ChunkGridMetadata

__all__ = [
    "GRIB_CODEC_NAME",
    "SHORT_STRIP_CODEC_NAME",
    "GribCodec",
    "GribDecodeError",
    "ShortStripCodec",
    "decode_grib_message",
]

GRIB_CODEC_NAME = "icepipe.grib"
SHORT_STRIP_CODEC_NAME = "icepipe.short_strip"

#: The value ecCodes is told to put at missing points, then turned into NaN. cfgrib uses the
#: same marker (float32 max), so fields that hold 9999 (ecCodes' default marker) stay data.
_MISSING = float(np.finfo(np.float32).max)


class GribDecodeError(ValueError):
    """A chunk's bytes are not one decodable GRIB message of the expected size."""


def _get_int(handle: Any, key: str, default: int = 0) -> int:
    import eccodes

    try:
        return int(eccodes.codes_get_long(handle, key))
    except eccodes.KeyValueNotFoundError:
        return default


def decode_grib_message(
    data: bytes, *, shape: tuple[int, ...] | None = None, dtype: Any = np.float32
) -> np.ndarray[Any, Any]:
    """Decode one GRIB message into its values, in the orientation cfgrib gives them.

    Values come row by row in the message's scanning directions, as ``(Ny, Nx)`` (or flat for
    grids without regular rows): the layout cfgrib's ``latitude``/``longitude`` (or ``y``/``x``,
    or ``values``) coordinates describe. Two scanning modes are undone where cfgrib does not:

    - ``alternativeRowScanning=1``: every second row is reversed back, for every grid with
      regular rows (cfgrib does it only for 2-D grids, so it leaves NDFD's 1-D Mercator fields
      scrambled; the smoothness of real fields shows which order is right);
    - ``jPointsAreConsecutive=1`` (columns stored first): transposed into rows (cfgrib reshapes
      such fields as if rows came first; ecCodes' own geo-iterator confirms the transposition).

    Missing points (bitmap or missing-value management) become NaN.

    Parameters
    ----------
    data
        The bytes of exactly one GRIB message.
    shape
        The shape to return (any shape with as many elements as the field has points); the
        field's own shape when ``None``.
    dtype
        A floating point dtype; values are decoded in float64 and then cast, like cfgrib.

    Raises
    ------
    GribDecodeError
        ecCodes cannot decode the bytes, or the field does not have ``prod(shape)`` points.
    """
    import eccodes

    if not data.startswith(b"GRIB") or not data.endswith(b"7777"):
        raise GribDecodeError(
            f"{len(data)} bytes are not one GRIB message (starts {data[:4]!r}, ends "
            f"{data[-4:]!r}); the source file changed after it was ingested: re-ingest it"
        )
    try:
        handle = eccodes.codes_new_from_message(data)
    except Exception as exc:
        raise GribDecodeError(f"ecCodes cannot read the GRIB message: {exc}") from exc
    try:
        # Read-only for a few packings, which then have no missing points.
        with contextlib.suppress(eccodes.GribInternalError):
            eccodes.codes_set(handle, "missingValue", _MISSING)
        values = np.asarray(eccodes.codes_get_values(handle), dtype=np.float64)
        nx, ny = _get_int(handle, "Nx", -1), _get_int(handle, "Ny", -1)
        rows = nx > 0 and ny > 0 and nx * ny == values.size
        alternate = bool(_get_int(handle, "alternativeRowScanning"))
        columns_first = bool(_get_int(handle, "jPointsAreConsecutive"))
        if (alternate or columns_first) and not rows:
            raise GribDecodeError(
                f"a scanning mode (alternativeRowScanning={int(alternate)}, "
                f"jPointsAreConsecutive={int(columns_first)}) on a grid without regular rows "
                f"(Nx={nx}, Ny={ny}, {values.size} values) cannot be reordered"
            )
        if alternate or columns_first:
            lines = values.reshape((nx, ny) if columns_first else (ny, nx))
            if alternate:
                lines[1::2] = lines[1::2, ::-1].copy()
            values = np.ascontiguousarray(lines.T if columns_first else lines).reshape(-1)
        natural = (ny, nx) if rows else (values.size,)
    except GribDecodeError:
        raise
    except Exception as exc:
        raise GribDecodeError(f"ecCodes cannot decode the GRIB message: {exc}") from exc
    finally:
        eccodes.codes_release(handle)
    values[values == _MISSING] = np.nan
    target = natural if shape is None else shape
    if math.prod(target) != values.size:
        raise GribDecodeError(
            f"the GRIB message holds {values.size} values, but the chunk has shape {target}; "
            "the source file changed after it was ingested: re-ingest it"
        )
    return values.astype(dtype, copy=False).reshape(target)


@dataclass(frozen=True)
class GribCodec(ArrayBytesCodec):
    """Zarr 3 array-to-bytes codec: one GRIB message in, its 2-D (or 1-D) field out.

    Decode only: chunks of arrays with this codec are virtual references to GRIB messages in
    their source files, and are never written through zarr. The codec has no configuration;
    everything it needs is in the message.
    """

    is_fixed_size = False
    codec_name: ClassVar[str] = GRIB_CODEC_NAME

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        parse_named_configuration(data, GRIB_CODEC_NAME, require_configuration=False)
        return cls()

    def to_dict(self) -> dict[str, JSON]:
        return {"name": GRIB_CODEC_NAME}

    def validate(
        self,
        *,
        shape: tuple[int, ...],
        dtype: ZDType[TBaseDType, TBaseScalar],
        chunk_grid: ChunkGridMetadata,
    ) -> None:
        if np.dtype(dtype.to_native_dtype()).kind != "f":
            raise ValueError(
                f"{GRIB_CODEC_NAME} decodes GRIB fields to floating point; the array has "
                f"dtype {dtype}: use float32 or float64"
            )

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        values = decode_grib_message(
            chunk_bytes.to_bytes(),
            shape=tuple(chunk_spec.shape),
            dtype=chunk_spec.dtype.to_native_dtype(),
        )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        # ecCodes is built thread-safe (ECCODES_THREADS); decoding is CPU work.
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise NotImplementedError(
            f"{GRIB_CODEC_NAME} arrays are read-only views of GRIB messages; write new data to "
            "an array with regular codecs instead (e.g. ingest the source with mode: native)"
        )

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{GRIB_CODEC_NAME} messages have no fixed encoded size")


register_codec(GRIB_CODEC_NAME, GribCodec)


@dataclass(frozen=True)
class ShortStripCodec(BytesBytesCodec):
    """Zarr 3 bytes-to-bytes codec: the short last strip of a TIFF, padded to a whole strip.

    Placed right after the array-to-bytes codec (so decoded first among the bytes-to-bytes
    codecs' outputs, after decompression), it passes whole strips through and pads a strip of
    exactly ``rows`` of the chunk's ``of`` rows with zeros: the rows past the image's end,
    which zarr cuts off. Any other length is an error, so a damaged strip never reads as
    zeros. Encoding passes bytes through (whole chunks only).
    """

    rows: int
    of: int
    is_fixed_size = False
    codec_name: ClassVar[str] = SHORT_STRIP_CODEC_NAME

    def __post_init__(self) -> None:
        if not 0 < self.rows < self.of:
            raise ValueError(
                f"{SHORT_STRIP_CODEC_NAME}: rows={self.rows} must be between 1 and of-1 "
                f"(of={self.of})"
            )

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, conf = parse_named_configuration(data, SHORT_STRIP_CODEC_NAME)
        return cls(rows=int(conf["rows"]), of=int(conf["of"]))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {
            "name": SHORT_STRIP_CODEC_NAME,
            "configuration": {"rows": self.rows, "of": self.of},
        }

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        whole = math.prod(chunk_spec.shape) * chunk_spec.dtype.to_native_dtype().itemsize
        short = whole * self.rows // self.of
        size = len(chunk_bytes)
        if size == whole:
            return chunk_bytes
        if size != short:
            raise ValueError(
                f"{SHORT_STRIP_CODEC_NAME}: a strip decodes to {size} bytes, neither a whole "
                f"strip ({whole}) nor the short last one ({short}); the source file changed "
                "after it was ingested: re-ingest it"
            )
        padded = np.zeros(whole, dtype=np.uint8)
        padded[:size] = chunk_bytes.as_numpy_array().view(np.uint8).reshape(-1)
        return chunk_spec.prototype.buffer.from_array_like(padded)

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        return chunk_bytes

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        return input_byte_length


register_codec(SHORT_STRIP_CODEC_NAME, ShortStripCodec)
