"""Real-data fidelity defects found by the conformance matrix, each reproduced on a small file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import scipy.io

import icepipe
from tests.conftest import write_pipeline


def _masked_char_file(path: Path) -> Path:
    # The trait of scipy's example_3_maskedvals.nc: a |S1 variable along an ordinary dimension
    # (not a string dimension) with a _FillValue.
    path.parent.mkdir(parents=True, exist_ok=True)
    with scipy.io.netcdf_file(path, "w") as f:
        f.createDimension("time", 3)
        t = f.createVariable("time", "f8", ("time",))
        t[:] = [0.0, 1.0, 2.0]
        t.units = "days since 2000-01-01"
        c = f.createVariable("flag", "c", ("time",))
        c[:] = np.array([b"a", b"b", b"c"])
        c._FillValue = b"b"
    return path


def test_char_fill_value_is_refused_before_commit(tmp_path: Path, client: Any) -> None:
    _masked_char_file(tmp_path / "src" / "a.nc")
    spec = write_pipeline(tmp_path, urls="src/*.nc", extra="mode: native\n")
    with pytest.raises(icepipe.SourceError, match=r"'flag'.*drop_variables: \[flag\]") as info:
        icepipe.run(icepipe.load_pipeline(spec), client=client)
    assert "a.nc" in str(info.value)
    # Nothing unreadable was committed (the repository is created with the first commit).
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    assert not icechunk.Repository.exists(storage) or (
        len(list(icechunk.Repository.open(storage).ancestry(branch="main"))) == 1
    )
