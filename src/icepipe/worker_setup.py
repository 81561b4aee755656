"""What every Dask worker of a run sets up once: a worker plugin, so that workers started
or restarted after the run began get it too (a nanny restarts a worker a parser crashed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icepipe import hdf5_filters

if TYPE_CHECKING:
    from distributed.diagnostics.plugin import WorkerPlugin
else:
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # no usable distributed (every icepipe module imports without it)
        WorkerPlugin = object

__all__ = ["PLUGIN_NAME", "ReadFilters"]

PLUGIN_NAME = "icepipe-read-filters"


class ReadFilters(WorkerPlugin):
    """Registers the HDF5 compression filters (:mod:`icepipe.hdf5_filters`) on a worker:
    native reads of netCDF4 files compressed with zstd, blosc, bzip2, ... run there, on any
    worker, whether or not it scanned a file before."""

    idempotent = True

    def setup(self, worker: Any) -> None:
        hdf5_filters.register()
