"""Fixtures shared by the scan tests of tests/sources."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from icepipe.sources import grib_quick, quick
from icepipe.sources.formats import hdf5_index, netcdf3


@pytest.fixture
def fresh_templates() -> Iterator[None]:
    """No layout templates left by earlier scans (netCDF4 chunk-index, quick-route and GRIB ones),
    and the netCDF3 header route switched back on afterwards."""
    hdf5_index.forget_templates()
    quick.forget()
    grib_quick.forget()
    yield
    hdf5_index.forget_templates()
    quick.forget()
    grib_quick.forget()
    netcdf3.INDEXED_SCANS = True
