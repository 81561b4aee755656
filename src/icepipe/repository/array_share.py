"""Where one array's chunks live: how many are virtual, native, inline or never written, and
how many bytes its native chunks take, read within a bound (the web's array page).

Counts come from the manifests' own statistics (milliseconds, however many chunks; read
through :func:`icepipe.repository.refs.inspect_manifests`, which does not stall the process's
other threads while it waits for storage); bytes
from asking each written chunk its size, or, past ``limit`` written chunks, from a sample of
them (the result says which).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from icepipe.faults import storage_failure
from icepipe.repository.refs import counts_by_path, inspect_manifests

if TYPE_CHECKING:
    import icechunk

__all__ = ["ChunkShare", "array_chunk_share"]

#: Written chunks asked for their type and size before the page samples instead.
DEFAULT_LIMIT = 2000


@dataclass(frozen=True)
class ChunkShare:
    """One array's chunks by where their bytes live.

    ``grid``: storage objects of the grid (chunks, or shards); ``missing``: never written
    (reads give the fill value). ``native_bytes``: the native chunks' size (estimated from
    ``sampled`` chunks when ``exact`` is false; ``None`` when nothing could be sized).
    ``method`` says in words how the numbers were got.
    """

    grid: int
    native: int
    inline: int
    virtual: int
    native_bytes: int | None
    exact: bool
    sampled: int
    method: str

    @property
    def missing(self) -> int:
        return max(0, self.grid - self.native - self.inline - self.virtual)


def _key(path: str, coords: tuple[int, ...], zarr_format: int) -> str:
    base = path.strip("/")
    if zarr_format == 2:
        tail = ".".join(map(str, coords)) or "0"
    else:
        tail = "c/" + "/".join(map(str, coords)) if coords else "c"
    return f"{base}/{tail}" if base else tail


async def _walk(
    session: icechunk.Session, path: str, zarr_format: int, limit: int
) -> tuple[Counter[str], int, int, bool]:
    """Kinds of the first ``limit`` written chunks, their native bytes and native count, and
    whether every written chunk was seen."""
    kinds: Counter[str] = Counter()
    native_bytes = native_seen = 0
    store = session.store
    seen = 0
    async for coords in session.chunk_coordinates(path):
        if seen >= limit:
            return kinds, native_bytes, native_seen, False
        seen += 1
        kind = str(session.chunk_type(path, list(coords))).rsplit(".", 1)[-1].lower()
        kinds[kind] += 1
        if kind == "native":
            native_bytes += await store.getsize(_key(path, coords, zarr_format))
            native_seen += 1
    return kinds, native_bytes, native_seen, True


def array_chunk_share(
    repo: icechunk.Repository,
    snapshot_id: str,
    path: str,
    *,
    grid: int,
    zarr_format: int = 3,
    limit: int = DEFAULT_LIMIT,
) -> ChunkShare:
    """The chunks of the array at ``path`` (``/group/name``) in ``snapshot_id`` by kind, and
    its native bytes, asking at most ``limit`` chunks their size.

    ``grid``: how many storage objects the array's grid has (chunks, or shards).

    Raises
    ------
    StorageError
        The snapshot, its manifests or the chunk index cannot be read.
    """
    import icechunk

    try:
        session = repo.readonly_session(snapshot_id=snapshot_id)
        kinds, nbytes, nseen, complete = asyncio.run(_walk(session, path, zarr_format, limit))
        if complete:
            return ChunkShare(
                grid=grid,
                native=kinds["native"],
                inline=kinds["inline"],
                virtual=kinds["virtual"],
                native_bytes=nbytes,
                exact=True,
                sampled=sum(kinds.values()),
                method="every written chunk asked its kind and size",
            )
        manifests = inspect_manifests(repo, snapshot_id, path=path)
        counts = counts_by_path(*manifests).get(path, Counter())
    except icechunk.IcechunkError as exc:
        raise storage_failure(exc, f"cannot read the chunk index of {path}") from exc
    estimate = round(nbytes / nseen * counts["native"]) if nseen else None
    if counts["native"] == 0:
        estimate = 0
    return ChunkShare(
        grid=grid,
        native=counts["native"],
        inline=counts["inline"],
        virtual=counts["virtual"],
        native_bytes=estimate,
        exact=False,
        sampled=sum(kinds.values()),
        method=(
            f"counts from the manifests' statistics; native bytes estimated from the first "
            f"{sum(kinds.values())} written chunks"
        ),
    )
