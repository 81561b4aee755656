"""CF encoding fidelity: what icepipe stores decodes exactly as ``xarray.open_mfdataset``
decodes the same files, whether they arrive in one run or night after night.

Each case is a generated series (``tests/cf_series.py``) with one CF edge case real archives
have; ingested in several runs, in virtual and native mode, and compared with
``open_mfdataset`` (values, attributes, and the CF encoding: ``_FillValue``,
``missing_value``, packing, time units and calendar). Cases that cannot be stored faithfully
are refused, with a message naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

import icepipe
from icepipe import target
from icepipe.errors import SchemaMismatchError, SourceError
from tests.cf_series import FileSpec, specs, split_runs, write_cf_series
from tests.conftest import write_pipeline

MODES = ["virtual", "native"]
#: The CF encoding that decides how stored values decode.
ENCODING_KEYS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")


def mfdataset(files: Sequence[Path], *, group: str | None = None) -> xr.Dataset:
    """The files as ``xarray.open_mfdataset`` combines them along ``time``."""
    return xr.open_mfdataset(
        list(files),
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        group=group,
    ).load()


def ingest(
    folder: Path,
    runs: Sequence[Sequence[Path]],
    *,
    client: Any,
    mode: str,
    name: str = "cf",
    extra: str = "",
) -> xr.Dataset:
    """Run one pipeline once per entry of ``runs`` (the files listed that night); return what
    the repository holds."""
    if mode == "native":
        extra += "mode: native\nchunks: {time: 12}\n"
    for files in runs:
        spec = write_pipeline(
            folder,
            name=name,
            urls=[str(f) for f in files],
            repo=f"repo-{name}",
            group=None,
            extra=extra,
        )
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    return icepipe.open_dataset(str(folder / f"repo-{name}")).load()


def assert_like_mfdataset(stored: xr.Dataset, expected: xr.Dataset) -> None:
    """Same decoded values and attributes, and the same CF encoding, variable by variable."""
    xr.testing.assert_identical(stored, expected)
    for name, var in expected.variables.items():
        want = {k: var.encoding[k] for k in ENCODING_KEYS if k in var.encoding}
        got = {k: stored[name].encoding[k] for k in ENCODING_KEYS if k in stored[name].encoding}
        assert got.keys() == want.keys(), (name, got, want)
        for k, v in want.items():
            np.testing.assert_equal(np.asarray(got[k]), np.asarray(v), err_msg=f"{name}.{k}")
        assert stored[name].encoding["dtype"] == var.encoding["dtype"], name


# ----------------------------------------------------------------------------------------------
# The CMIP6 case of the issue: time_bnds without units, appended night after night
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cmip6_series_appends_night_after_night(tmp_path: Path, client: Any, mode: str) -> None:
    files = write_cf_series(tmp_path / "src", 4)
    # Three nights: 2 files, then 1 more, then the last; and the same files in one run.
    nightly = ingest(tmp_path, split_runs(files, [2, 3]), client=client, mode=mode)
    once = ingest(tmp_path, [files], client=client, mode=mode, name="once")
    expected = mfdataset(files)
    assert_like_mfdataset(nightly, expected)
    assert_like_mfdataset(once, expected)
    # Bounds are stored as the files have them: without units, decoded through time's.
    assert "units" not in nightly.time_bnds.attrs
    assert nightly.time_bnds.dtype.kind == "M"
