"""The format readers and their registry: detection by magic bytes, ``format: auto``, lookup."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from icepipe.errors import ConfigError, SourceError
from icepipe.model import SourceFile
from icepipe.sources import ScanOptions, list_sources, open_files, scan_file
from icepipe.sources.formats import (
    HEAD_BYTES,
    READERS,
    detect_format,
    detect_head,
    reader_for,
    register,
)
from icepipe.sources.formats.grib import GribReader
from icepipe.spec import FORMATS, pipeline_from_dict
from tests.conftest import write_series

GRIB_FILE = "cfgrib-samples/era5-levels-members.grib"


def test_every_format_of_the_spec_has_one_reader() -> None:
    assert sorted(READERS) == sorted(f for f in FORMATS if f != "auto")
    assert all(name == reader.name for name, reader in READERS.items())


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"CDF\x01" + bytes(4), "netcdf3"),  # classic
        (b"CDF\x02" + bytes(4), "netcdf3"),  # 64-bit offsets
        (b"CDF\x05" + bytes(4), "netcdf3"),  # CDF-5
        (b"\x89HDF\r\n\x1a\n", "netcdf4"),
        (bytes(512) + b"\x89HDF\r\n\x1a\n", "netcdf4"),  # after a 512-byte user block
        (bytes(4096) + b"\x89HDF\r\n\x1a\n", "netcdf4"),
        (b"GRIB\x00\x00\x00\x02", "grib"),
        (b"CDF\x03" + bytes(4), None),  # no such netCDF3 variant
        (bytes(100) + b"\x89HDF\r\n\x1a\n", None),  # superblocks sit at 0, 512, 1024, ...
        (b"PK\x03\x04", None),
        (b"\x00", None),
    ],
)
def test_magic_bytes_name_the_format(head: bytes, expected: str | None) -> None:
    assert detect_head(head, "file:///x") == expected
    assert len(head) <= HEAD_BYTES


def _scan(path: Path, **options: object) -> object:
    (f,) = list_sources([f"file://{path}"], is_glob=False)
    return scan_file(f, ScanOptions(format="auto", concat_dim="time", **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["netcdf3", "netcdf4"])
def test_auto_detects_netcdf_files_whatever_their_name(tmp_path: Path, fmt: str) -> None:
    (path,) = write_series(tmp_path, 1, fmt=fmt)
    disguised = path.rename(tmp_path / "data.cdf")  # extensions are not trusted
    assert detect_format(f"file://{disguised}") == fmt
    scanned = _scan(disguised)
    assert scanned.schema.format == fmt  # type: ignore[attr-defined]


def test_auto_detects_hdf5_after_a_user_block(tmp_path: Path) -> None:
    path = tmp_path / "ub.nc"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.create_dataset("x", data=np.arange(3))
    with open(path, "rb") as fh:
        assert fh.read(4) == b"\x00\x00\x00\x00"  # the file does not start with the magic
    assert detect_format(f"file://{path}") == "netcdf4"


def test_auto_detects_zarr_stores_and_grib(tmp_path: Path, sample_data: Path) -> None:
    store = tmp_path / "s.zarr"
    xr.Dataset({"a": ("time", np.arange(3.0))}).to_zarr(store, zarr_format=3)
    assert detect_format(f"file://{store}") == "zarr"
    assert detect_format(f"file://{sample_data / GRIB_FILE}") == "grib"


def test_unknown_and_empty_files_are_refused_naming_them(tmp_path: Path) -> None:
    text = tmp_path / "notes.nc"
    text.write_text("not a netCDF file")
    with pytest.raises(SourceError, match=r"notes\.nc: not a netCDF3, netCDF4/HDF5 or GRIB"):
        detect_format(f"file://{text}")
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.nc: is empty \(0 bytes\)"):
        detect_format(f"file://{empty}")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(SourceError, match="is a folder but not a Zarr store"):
        detect_format(f"file://{folder}")


def test_reader_for_takes_formats_as_scans_record_them() -> None:
    assert isinstance(reader_for("grib:3"), GribReader)
    assert reader_for("netcdf4") is READERS["netcdf4"]
    with pytest.raises(ConfigError) as info:
        reader_for("hdf4")
    assert info.value.field == "source.format"


class _TextReader:
    """A format a plug-in might add: detected by its magic bytes, after the built-ins."""

    name = "text-test"
    plain_fallback = False

    def detect(self, head: bytes, url: str) -> bool:
        return head.startswith(b"#TEXT")

    def scan_virtual(self, source: SourceFile, options: ScanOptions) -> list[object]:
        raise NotImplementedError

    def open_native(self, url: str, fmt: str, options: ScanOptions, chunks: object) -> object:
        raise NotImplementedError

    def open_plain(self, url: str, options: ScanOptions) -> None:
        return None

    def refused_variables(self, url: str, options: ScanOptions) -> list[str]:
        return []


@pytest.fixture
def text_reader() -> Iterator[None]:
    register(_TextReader())  # type: ignore[arg-type]
    try:
        yield
    finally:
        del READERS[_TextReader.name]


def test_a_registered_reader_is_detected_like_the_built_ins(
    tmp_path: Path, text_reader: None
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"#TEXT v1\n")
    assert detect_format(f"file://{path}") == "text-test"
    assert list(READERS)[-1] == "text-test"  # after the built-ins: they keep precedence
    assert detect_head(b"CDF\x01", "file:///x") == "netcdf3"


def test_scan_options_come_from_the_source_section_and_pickle(tmp_path: Path) -> None:
    p = pipeline_from_dict(
        {
            "name": "p",
            "mode": "native",
            "source": {
                "urls": "src/*.nc",
                "concat_dim": "time",
                "format": "netcdf4",
                "order_by": "t2",
                "drop_variables": ["x"],
                "group": "/g/",
            },
            "target": {"repo": "repo"},
        },
        tmp_path,
    )
    o = ScanOptions.from_source(p.source, p.mode)
    assert (o.format, o.concat_dim, o.order_by, o.drop_variables) == (
        "netcdf4",
        "time",
        "t2",
        ("x",),
    )
    assert (o.mode, o.group, o.search_path, o.keep) == ("native", "g", str(tmp_path), ("t2",))
    assert o.storage == p.source.storage
    assert pickle.loads(pickle.dumps(o)) == o


@pytest.mark.parametrize("fmt", ["netcdf3", "netcdf4"])
def test_open_files_selects_as_the_options_say(tmp_path: Path, fmt: str) -> None:
    paths = write_series(tmp_path, 2, fmt=fmt, variables=("tas", "pr"))
    urls = [f"file://{p}" for p in paths]
    options = ScanOptions(concat_dim="time", drop_variables=("pr",))
    ds = open_files(urls, [fmt, fmt], options, chunks={"time": -1})
    assert "pr" not in ds and "tas" in ds
    assert ds.sizes["time"] == 8
    with xr.open_dataset(paths[1], decode_times=False) as one:
        np.testing.assert_array_equal(ds["tas"].values[4:], one["tas"].values)
