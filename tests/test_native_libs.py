"""Native libraries bundled by different wheels must not crash the process together.

eccodes' wheels put eckit's PROJ/SQLite in the global symbol namespace; pyproj (rioxarray's
dependency) loaded after them aborted the interpreter at exit with "free(): invalid pointer"
(exit 134), after every line of work had succeeded: a CLI run reported a crash instead of its
exit code. ``import icepipe`` loads pyproj first.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import icepipe
import xarray as xr
import eccodes, cfgrib.xarray_plugin
xr.backends.list_engines()  # loads cfgrib's entry point, then rioxarray's (pyproj)
import pyproj
print(pyproj.CRS(4326).name)
"""


@pytest.mark.parametrize("first", ["import icepipe.cli", "import icepipe.codecs"])
def test_icepipe_then_grib_then_pyproj_exits_cleanly(first: str) -> None:
    script = first + "\n" + SCRIPT
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WGS 84" in done.stdout


def test_xarray_first_then_icepipe_engine_exits_cleanly() -> None:
    """A user's process: xarray loads every backend (cfgrib's before icepipe's engine), so
    ecCodes is loaded before icepipe; pyproj is then imported with its own libraries."""
    script = "import xarray as xr\nprint(sorted(xr.backends.list_engines()))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "icepipe" in done.stdout


@pytest.mark.parametrize("first", ["import icepipe", "import eccodes; import icepipe"])
def test_sqlite_is_pythons_own_whatever_loads_eccodes_first(first: str) -> None:
    """eckit's bundled SQLite 3.26 must not become the process's: the web search index
    needs FTS5's ``remove_diacritics 2`` (3.27+); seen as "error in tokenizer constructor"
    in every search test run after a test module had imported eccodes."""
    script = (
        first
        + "\nimport sqlite3\nc = sqlite3.connect(':memory:')\n"
        + 'c.execute("create virtual table f using fts5(a, tokenize = '
        + "'unicode61 remove_diacritics 2')\")\nprint(sqlite3.sqlite_version)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
