"""The per-process store of scan templates (by layout key) that the quick routes share
(:mod:`~icepipe.sources.quick`, :mod:`~icepipe.sources.grib_quick`, the HDF5 layout templates
of :mod:`~icepipe.sources.formats.hdf5_index`, the GRIB mapping
templates of :mod:`~icepipe.sources.formats.grib_index`): thread-safe (a worker's threads
scan at once), least recently used dropped past its size. A key holding ``None`` is a layout
known to go the usual way."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["Templates"]


class Templates[V]:
    """Templates (or ``None``: no template for that layout) by layout key."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Hashable, V | None] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """Whether ``key`` is known, and its value (marked as just used)."""
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def peek(self, key: Hashable) -> V | None:
        """The value of ``key`` (``None`` when unknown), without marking it used."""
        with self._lock:
            return self._items.get(key)

    def put(self, key: Hashable, value: V | None) -> None:
        """Store ``value`` for ``key``, dropping the least recently used past the size."""
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def replace(self, key: Hashable, old: V, new: V | None) -> None:
        """Store ``new`` for ``key`` if ``key`` still holds ``old`` (another thread may have
        replaced or dropped it meanwhile)."""
        with self._lock:
            if self._items.get(key) is old:
                self._items[key] = new

    def values(self) -> list[V | None]:
        """Every stored value (tests)."""
        with self._lock:
            return list(self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
