"""HDF5 compression filters beyond zlib and shuffle, for h5py in this process.

netCDF-C 4.9 writes netCDF4 files compressed with zstd, bzip2, blosc, ... (``compression=``
in netCDF4-python) through HDF5 filter plugins. h5py's HDF5 loads none of them by itself: a
read fails with ``can't open directory (/usr/local/lib/plugin)``. The ``hdf5plugin`` package
(a dependency) registers them with h5py's HDF5 when imported: :func:`register` does that once
per process, before icepipe opens an HDF5 file, and a Dask worker plugin
(:mod:`icepipe.worker_setup`) does it on every worker, including workers that never scanned.
"""

from __future__ import annotations

import functools

__all__ = ["register"]


@functools.cache
def register() -> bool:
    """Register hdf5plugin's filters with h5py's HDF5 in this process (once); whether they
    are available (``hdf5plugin`` installed)."""
    try:
        import hdf5plugin  # noqa: F401  (registers its filters on import)
    except ImportError:
        return False
    return True
