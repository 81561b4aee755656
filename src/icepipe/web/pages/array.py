"""The array page and its quicklook picture (see :mod:`icepipe.web.pages`).

- ``/array?name=KEY&path=/GROUP/ARRAY&ref=REF[&index=DIM:I,...]``: shape, dims, dtype, chunk
  grid (regular or rectilinear), shards, codecs, fill value, attributes, where the chunks
  live (virtual / native / inline / missing, native bytes), the first and last values of the
  coordinates along its dimensions, and the quicklook picture with its index picker;
- ``/api/array?...``: the same as JSON (attributes whole);
- ``/quicklook.png?name=&path=&ref=&index=DIM:I,...``: the picture (see
  :mod:`icepipe.web.quicklook`), cached by (repository, snapshot, path, index).

Every read runs in a worker thread under ``config.request_timeout`` (a 504 naming the array
when it takes longer).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from icepipe.errors import IcepipeError
from icepipe.web.app import JSONResponse, NotFound, render
from icepipe.web.config import WebConfig
from icepipe.web.data import SnapshotCache, cache_for

__all__ = ["ROUTES"]

#: Attribute values longer than this are cut on the HTML page, shown when unfolded up to
#: ATTR_PAGE characters (the JSON API keeps them whole).
ATTR_SHOWN = 300
ATTR_PAGE = 20_000
#: Pictures kept in memory per application.
CACHE_SIZE = 128


@dataclass(frozen=True)
class _Where:
    """An array request: repository key, snapshot, array path, and the ref as asked."""

    key: str
    ref: str
    snapshot_id: str
    path: str
    repo: Any


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def _open(config: WebConfig, key: str, ref: str | None, path: str | None) -> _Where:
    """The repository ``key`` at ``ref`` (``main``, else its first branch, when not given)."""
    from icepipe.web.data import default_branch, open_known, resolve_ref_or_404

    parts = [p for p in (path or "").split("/") if p]
    if not parts:
        raise _bad_request("give the array's path: /array?name=KEY&path=/GROUP/ARRAY")
    if any(p in (".", "..") for p in parts):
        raise NotFound(f"no array {path!r}: paths name nodes from the root, without . or ..")
    repo, _known = open_known(config, key)
    if not ref:
        ref = default_branch(sorted(repo.list_branches())) or "main"
    snapshot_id = resolve_ref_or_404(repo, key, ref, path="/" + "/".join(parts))
    return _Where(key=key, ref=ref, snapshot_id=snapshot_id, path="/" + "/".join(parts), repo=repo)


def _node(where: _Where) -> tuple[Any, Any]:
    """The read-only session and the Zarr array at ``where.path`` (404 when there is none,
    400 for a group)."""
    import zarr

    from icepipe.repository.grids import rectilinear_enabled

    session = where.repo.readonly_session(snapshot_id=where.snapshot_id)
    with rectilinear_enabled():
        try:
            node = zarr.open(session.store, path=where.path.strip("/"), mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError) as exc:
            raise NotFound(
                f"no array {where.path} in {where.key!r} at {where.ref} ({where.snapshot_id})"
            ) from exc
    if isinstance(node, zarr.Group):
        raise _bad_request(
            f"{where.path} in {where.key!r} is a group, not an array: see /repo?name=..."
        )
    return session, node


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: NaN and infinities as strings, numpy as Python, bytes
    as base64."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _edges(grid: tuple[int | tuple[int, ...], ...], shape: tuple[int, ...]) -> list[list[int]]:
    return [
        list(g) if isinstance(g, tuple) else [g] * max(1, -(-int(n) // g)) if n else []
        for g, n in zip(grid, shape, strict=True)
    ]


def _grid(store: Any, node: Any) -> dict[str, Any]:
    """The chunk grid: ``kind`` (regular | rectilinear), ``chunks`` (one entry per dim: a
    length, or the list of edges), ``edges`` (every dim's chunk lengths), ``shards``, and
    the counts of chunks and of storage objects (shards when sharded, else chunks).

    With sharding, the metadata's grid is the grid of shards; the chunks are the shards'
    inner chunks (what a read fetches)."""
    from icepipe.repository.grids import read_chunk_grid

    outer = read_chunk_grid(store, node.path) or tuple(int(c) for c in node.chunks)
    shards = node.shards
    grid = outer if shards is None else tuple(int(c) for c in node.chunks)
    edges = _edges(grid, node.shape)
    return {
        "kind": "rectilinear" if any(isinstance(g, tuple) for g in outer) else "regular",
        "chunks": [list(g) if isinstance(g, tuple) else g for g in grid],
        "edges": edges,
        "shards": [list(g) if isinstance(g, tuple) else g for g in outer] if shards else None,
        "count": math.prod(len(e) for e in edges),
        "objects": math.prod(len(e) for e in _edges(outer, node.shape)),
    }


def _codecs(node: Any) -> list[Any]:
    meta = node.metadata.to_dict()
    if node.metadata.zarr_format == 2:
        return [c for c in [*(meta.get("filters") or []), meta.get("compressor")] if c]
    return list(meta.get("codecs") or [])


def _coordinate(root: Any, group: str, name: str, dim: str) -> dict[str, Any] | None:
    """The first and last values of the 1-D array ``name`` along ``dim`` in ``group`` (two
    reads of one chunk each), decoded as xarray decodes them."""
    import xarray as xr

    arr = root.get(f"{group}/{name}".strip("/"))
    if arr is None or not hasattr(arr, "shape") or arr.ndim != 1 or arr.shape[0] == 0:
        return None
    ends = np.array([arr[0], arr[-1]])
    attrs = dict(arr.attrs)
    attrs.pop("_ARRAY_DIMENSIONS", None)
    try:
        var = xr.decode_cf(xr.Dataset({name: ((dim,), ends, attrs)}))[name]
        values = var.values
    except Exception:  # undecodable units: show the stored numbers
        values = ends
    first, last = (_short_value(v) for v in values)
    return {
        "name": name,
        "dim": dim,
        "length": int(arr.shape[0]),
        "first": first,
        "last": last,
        "units": str(attrs.get("units", "")),
    }


def _short_value(value: Any) -> Any:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s"))
    return _jsonable(value)


def _coordinates(root: Any, node: Any, dims: list[str]) -> list[dict[str, Any]]:
    """The dimension coordinates, and the 1-D ones the ``coordinates`` attribute names."""
    group = node.path.rsplit("/", 1)[0] if "/" in node.path else ""
    names = [(d, d) for d in dims]
    for extra in str(node.attrs.get("coordinates", "")).split():
        names.append((extra, ""))
    out: list[dict[str, Any]] = []
    for name, dim in names:
        arr = root.get(f"{group}/{name}".strip("/"))
        if arr is None or not hasattr(arr, "shape") or arr.ndim != 1:
            continue
        arr_dims = list(getattr(arr.metadata, "dimension_names", None) or [dim])
        if arr_dims[0] not in dims or any(c["name"] == name for c in out):
            continue
        info = _coordinate(root, group, name, arr_dims[0])
        if info is not None:
            out.append(info)
    return out


def _array_info(config: WebConfig, where: _Where) -> dict[str, Any]:
    """Everything the array page shows (JSON-able)."""
    import zarr

    from icepipe.repository.array_share import array_chunk_share
    from icepipe.repository.grids import rectilinear_enabled

    session, node = _node(where)
    with rectilinear_enabled():
        root = zarr.open_group(session.store, mode="r")
        meta = node.metadata
        dims = [str(d) for d in (getattr(meta, "dimension_names", None) or ())]
        dims = dims or list(node.attrs.get("_ARRAY_DIMENSIONS", []))
        grid = _grid(session.store, node)
        share = array_chunk_share(
            where.repo,
            where.snapshot_id,
            where.path,
            grid=grid["objects"],
            zarr_format=meta.zarr_format,
        )
        coords = _coordinates(root, node, dims)
    return {
        "repo": where.key,
        "ref": where.ref,
        "snapshot_id": where.snapshot_id,
        "path": where.path,
        "name": where.path.rsplit("/", 1)[-1],
        "shape": [int(n) for n in node.shape],
        "dims": dims,
        "dtype": str(node.dtype),
        "zarr_format": meta.zarr_format,
        "grid": grid,
        "codecs": _jsonable(_codecs(node)),
        "fill_value": _jsonable(meta.fill_value),
        "attributes": _jsonable(dict(node.attrs)),
        "storage": {
            "objects": share.grid,
            "virtual": share.virtual,
            "native": share.native,
            "inline": share.inline,
            "missing": share.missing,
            "native_bytes": share.native_bytes,
            "exact": share.exact,
            "method": share.method,
        },
        "coordinates": coords,
    }


async def _bounded[T](request: Request, what: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a worker thread, given up after ``config.request_timeout`` (504); an
    icepipe error reading the array is a 502 naming it."""
    from icepipe.web.data import run_blocking

    try:
        return await run_blocking(request, fn, what=what)
    except IcepipeError as exc:
        raise HTTPException(status_code=502, detail=f"cannot read {what}: {exc}") from exc


def _index_param(request: Request) -> str:
    """``index=DIM:I,...`` merged with the picker form's ``i.DIM=I`` fields."""
    items = [i for i in (request.query_params.get("index") or "").split(",") if i.strip()]
    for k, v in request.query_params.items():
        if k.startswith("i.") and v.strip():
            items = [i for i in items if i.split(":", 1)[0].strip() != k[2:]]
            items.append(f"{k[2:]}:{v.strip()}")
    return ",".join(items)


def _where_of(request: Request) -> Callable[[], _Where]:
    q = request.query_params
    config = request.app.state.config
    return lambda: _open(config, q.get("name", ""), q.get("ref"), q.get("path"))


async def _info(request: Request) -> dict[str, Any]:
    config = request.app.state.config
    q = request.query_params
    what = f"array {q.get('path', '')} of {q.get('name', '')!r}"
    cache = cache_for(request, "array_info_cache", CACHE_SIZE)

    def read() -> dict[str, Any]:
        where = _where_of(request)()
        key = (where.key, where.snapshot_id, where.path)
        info = cache.get(key, lambda: _array_info(config, where))
        return {**info, "ref": where.ref}

    return await _bounded(request, what, read)


def _dims(info: dict[str, Any]) -> list[str]:
    """The array's dimension names; ``dim_0``, ``dim_1``... for an array written without
    them (plain zarr), as the quicklook names them (:func:`icepipe.web.quicklook.open_array`)."""
    from icepipe.web.quicklook import unnamed_dims

    dims: list[str] = info["dims"]
    return dims if len(dims) == len(info["shape"]) else unnamed_dims(len(info["shape"]))


def _no_picture(info: dict[str, Any]) -> str | None:
    """Why the array has no quicklook, said on the page instead of a broken picture."""
    shape = info["shape"]
    if not shape:
        return "a single value (a 0-dimensional array): nothing to draw"
    if 0 in shape:
        return f"no values (shape {tuple(shape)}): nothing to draw"
    try:
        kind = np.dtype(info["dtype"]).kind
    except TypeError:
        kind = "O"
    if kind not in "biuf":
        return f"{info['dtype']} values, not numbers: nothing to draw"
    units = info["attributes"].get("units")
    if isinstance(units, str) and " since " in units:
        return f"dates (units {units!r}), not numbers: nothing to draw"
    return None


def _plot_param(request: Request) -> tuple[str, ...]:
    """``plot=DIM`` (a line along DIM) or ``plot=Y,X`` (a map); ``()``: the default."""
    return tuple(
        d.strip() for d in (request.query_params.get("plot") or "").split(",") if d.strip()
    )


def _plotted(info: dict[str, Any], plot: tuple[str, ...]) -> tuple[str, ...]:
    from icepipe.web.quicklook import check_plot, choose_plot_dims

    dims, shape = _dims(info), info["shape"]
    return check_plot(dims, plot) or (choose_plot_dims(dims, shape) if dims else ())


def _picker(info: dict[str, Any], index: str, plot: tuple[str, ...]) -> list[dict[str, Any]]:
    """One input per dimension the picture does not plot, with its length and value."""
    from icepipe.web.quicklook import BadIndex, parse_index

    try:
        chosen = parse_index(index)
        plotted = _plotted(info, plot)
    except BadIndex:
        chosen, plotted = {}, _plotted(info, ())
    return [
        {"dim": d, "length": n, "value": chosen.get(d, 0)}
        for d, n in zip(_dims(info), info["shape"], strict=True)
        if d not in plotted
    ]


def _index_problem(info: dict[str, Any], index: str, plot: tuple[str, ...]) -> str | None:
    """Why ``index`` and ``plot`` cannot be drawn (the picture would be a 400), or ``None``."""
    from icepipe.web.quicklook import BadIndex, check_index, parse_index

    try:
        check_index(_dims(info), info["shape"], _plotted(info, plot), parse_index(index))
    except BadIndex as exc:
        return str(exc)
    return None


async def array_page(request: Request) -> Response:
    info = await _info(request)
    index, plot = _index_param(request), _plot_param(request)
    picker = _picker(info, index, plot)
    chosen = ",".join(f"{p['dim']}:{p['value']}" for p in picker)
    problem = _index_problem(info, index, plot)
    context = {
        "a": info,
        "picker": picker,
        "index": chosen,
        "plot": ",".join(plot),
        "plot_options": [d for d, n in zip(_dims(info), info["shape"], strict=True) if n > 1],
        "no_picture": _no_picture(info),
        "attr_shown": ATTR_SHOWN,
        "attr_page": ATTR_PAGE,
        "index_problem": problem,
    }
    return render(request, "array.html", context, 400 if problem else 200)


async def api_array(request: Request) -> Response:
    return JSONResponse(await _info(request))


def _draw(
    config: WebConfig, where: _Where, index: str, plot: tuple[str, ...], cache: SnapshotCache
) -> tuple[bytes, dict[str, str]]:
    from icepipe.web.quicklook import BadIndex, parse_index

    try:
        chosen = parse_index(index)
    except BadIndex as exc:
        raise _bad_request(str(exc)) from exc
    key = (
        where.key,
        where.snapshot_id,
        where.path,
        ",".join(f"{d}:{i}" for d, i in sorted(chosen.items())),
        ",".join(plot),
    )
    drawn = False

    def draw() -> tuple[bytes, dict[str, str]]:
        nonlocal drawn
        drawn = True
        return _drawn(config, where, chosen, plot)

    png, headers = cache.get(key, draw)
    return png, {**headers, "X-Icepipe-Cache": "miss" if drawn else "hit"}


def _drawn(
    config: WebConfig, where: _Where, chosen: dict[str, int], plot: tuple[str, ...]
) -> tuple[bytes, dict[str, str]]:
    """The quicklook of ``where`` at ``chosen`` and its response headers (not cached)."""
    from icepipe.web.quicklook import (
        BadIndex,
        NotPlottable,
        counting_store,
        quicklook_png,
    )

    session, node = _node(where)
    grid = _grid(session.store, node)
    store = counting_store(session.store, where.path)
    group, _, name = where.path.strip("/").rpartition("/")
    try:
        look = quicklook_png(
            store,
            group=group,
            name=name,
            edges=grid["edges"],
            index=chosen,
            max_chunks=config.max_quicklook_chunks,
            plot=plot,
        )
    except (BadIndex, NotPlottable) as exc:
        raise _bad_request(f"{where.path}: {exc}") from exc
    except (HTTPException, IcepipeError):
        raise
    except Exception as exc:  # a chunk that cannot be fetched or decoded (e.g. a source gone)
        first = str(exc).strip().split("\n", 1)[0][:300]
        raise HTTPException(
            status_code=502, detail=f"cannot read the chunks of {where.path}: {first}"
        ) from exc
    headers = {
        "X-Icepipe-Chunks-Read": str(store.chunk_reads),
        "X-Icepipe-Chunks-Spanned": str(look.selection.chunks_spanned),
        "X-Icepipe-Values": f"{look.finite} of {look.values} not missing",
        "X-Icepipe-Snapshot": where.snapshot_id,
    }
    return look.png, headers


async def quicklook(request: Request) -> Response:
    config = request.app.state.config
    q = request.query_params
    index, plot = _index_param(request), _plot_param(request)
    cache = cache_for(request, "quicklook_cache", CACHE_SIZE)
    what = f"array {q.get('path', '')} of {q.get('name', '')!r}"
    png, headers = await _bounded(
        request, what, lambda: _draw(config, _where_of(request)(), index, plot, cache)
    )
    return Response(png, media_type="image/png", headers=headers)


ROUTES: list[BaseRoute] = [
    Route("/array", array_page, name="array"),
    Route("/api/array", api_array, name="api_array"),
    Route("/quicklook.png", quicklook, name="quicklook"),
]
