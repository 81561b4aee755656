"""Quicklook pictures of one array: a 2-D map or, for 1-D data, a line plot, as PNG.

Reads are bounded: the picture reads at most ``max_chunks`` chunks of the array. The slice at
the chosen index of the other dimensions spans some chunks of the two plotted dimensions; when
it spans more, every ``s``-th chunk is read along each plotted dimension (a strided subset,
centred) and the title says so. Values are decoded as xarray decodes them (scale factors,
fill values as NaN, times as dates): the array is opened with xarray over the repository's
session, lazily (no dask, no default indexes), and indexed with integer positions, so zarr
fetches only the chunks holding them.

Pictures are drawn with matplotlib's object API on the Agg canvas (no pyplot: no global state
shared between the server's threads).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from icepipe.web.text import safe_text, shorten

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "MAX_CELLS",
    "BadIndex",
    "NotPlottable",
    "Quicklook",
    "Selection",
    "check_index",
    "check_plot",
    "choose_plot_dims",
    "counting_store",
    "parse_index",
    "plan_selection",
    "quicklook_png",
    "read_selection",
    "render_png",
]

#: The most cells of the picture along one plotted dimension (read data are thinned to it).
MAX_CELLS = 600
_Y_NAMES = ("lat", "latitude", "y", "nav_lat", "rlat", "j", "yc", "south_north")
_X_NAMES = ("lon", "longitude", "x", "nav_lon", "rlon", "i", "xc", "west_east")
_INDEX_ITEM = re.compile(r"^\s*([^:,]+?)\s*:\s*(-?\d+)\s*$")


class BadIndex(ValueError):
    """An ``index=`` parameter naming an unknown dimension or a position out of range."""


def parse_index(text: str | None) -> dict[str, int]:
    """``"time:3,depth:0"`` as ``{"time": 3, "depth": 0}``.

    Raises
    ------
    BadIndex
        An item is not ``DIM:INTEGER``, or a dimension is given twice.
    """
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        m = _INDEX_ITEM.match(item)
        if m is None:
            raise BadIndex(f"index item {item!r} is not DIM:POSITION (e.g. time:0)")
        if m[1] in out:
            raise BadIndex(f"dimension {m[1]!r} is given twice in index={text!r}")
        out[m[1]] = int(m[2])
    return out


def choose_plot_dims(dims: Sequence[str], shape: Sequence[int]) -> tuple[str, ...]:
    """The dimensions a picture plots, among those longer than 1: the y and x dimensions
    (named lat/lon, y/x, ...) or else the last two (a map); the only one (a line plot, e.g.
    a time series at one grid point); the last dimension when every one has length 1."""
    long = [d for d, n in zip(dims, shape, strict=True) if n > 1]
    if len(long) <= 1:
        return tuple(long) or tuple(dims[-1:])
    dims = long
    lower = [d.lower() for d in dims]
    y = next((dims[lower.index(n)] for n in _Y_NAMES if n in lower), None)
    x = next((dims[lower.index(n)] for n in _X_NAMES if n in lower), None)
    if y is not None and x is not None and y != x:
        return (y, x)
    return (dims[-2], dims[-1])


def _chunk_starts(edges: Sequence[int]) -> list[int]:
    starts = [0]
    for e in edges[:-1]:
        starts.append(starts[-1] + e)
    return starts


def _strides(counts: Sequence[int], budget: int) -> list[int]:
    """Strides along each plotted dimension so that the chunks picked fit ``budget``."""
    strides = [1] * len(counts)

    def picked() -> list[int]:
        return [math.ceil(c / s) for c, s in zip(counts, strides, strict=True)]

    while math.prod(picked()) > max(1, budget):
        k = max(range(len(counts)), key=lambda i: picked()[i])
        strides[k] += 1
    return strides


def _picked_chunks(count: int, stride: int) -> list[int]:
    """Every ``stride``-th of ``count`` chunks, centred."""
    n = math.ceil(count / stride)
    first = (count - 1 - (n - 1) * stride) // 2
    return [first + i * stride for i in range(n)]


@dataclass(frozen=True)
class Selection:
    """What one picture reads: positions along the plotted dimensions, one position along
    each other dimension, and how many of the slice's chunks that is."""

    plot_dims: tuple[str, ...]
    index: dict[str, int]
    positions: dict[str, np.ndarray[Any, Any]] = field(repr=False)
    chunks_spanned: int
    chunks_read: int
    strides: dict[str, int]
    steps: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)

    @property
    def decimated(self) -> bool:
        return self.chunks_read < self.chunks_spanned

    def note(self) -> str:
        """What the title says about decimation ("" when the whole slice was read)."""
        if not self.decimated:
            return ""
        every = ", ".join(
            f"every {_nth(s)} chunk along {d}" for d, s in self.strides.items() if s > 1
        )
        return f"decimated: {every} ({self.chunks_read} of {self.chunks_spanned} chunks read" + (
            ", grey: not read)" if len(self.plot_dims) == 2 else ")"
        )


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def check_plot(dims: Sequence[str], plot: Sequence[str]) -> tuple[str, ...]:
    """The dimensions ``plot`` asks for, checked (``()``: let the picture choose).

    Raises
    ------
    BadIndex
        An unknown dimension, one named twice, or more than two.
    """
    for d in plot:
        if d not in dims:
            raise BadIndex(f"cannot plot along {d!r}; the array's dimensions: {', '.join(dims)}")
    if len(plot) > 2 or len(set(plot)) != len(plot):
        raise BadIndex(f"plot one dimension (a line) or two (a map, y,x); got {','.join(plot)}")
    return tuple(plot)


def check_index(
    dims: Sequence[str], shape: Sequence[int], plot_dims: Sequence[str], index: Mapping[str, int]
) -> dict[str, int]:
    length = dict(zip(dims, shape, strict=True))
    for d, i in index.items():
        if d not in length:
            raise BadIndex(f"no dimension {d!r}; the array's dimensions: {', '.join(dims)}")
        if d in plot_dims:
            raise BadIndex(f"dimension {d!r} is plotted; pick positions of the others only")
        if not 0 <= i < length[d]:
            raise BadIndex(
                f"position {i} is out of range for dimension {d!r} of length {length[d]} "
                f"(0 to {length[d] - 1})"
            )
    return {d: int(index.get(d, 0)) for d in dims if d not in plot_dims}


def plan_selection(
    dims: Sequence[str],
    shape: Sequence[int],
    edges: Sequence[Sequence[int]],
    index: Mapping[str, int],
    *,
    max_chunks: int,
    max_cells: int = MAX_CELLS,
    plot: Sequence[str] = (),
) -> Selection:
    """The positions a picture reads (pure: no I/O).

    ``edges``: the chunk lengths along each dimension (one entry per chunk; a regular grid's
    last chunk may reach past the end). At most ``max_chunks`` chunks are picked; along each
    plotted dimension at most ``max_cells`` positions are kept (evenly thinned). ``plot``:
    the dimensions to plot (one: a line plot, e.g. a time series; two: a map, y then x);
    by default as :func:`choose_plot_dims` says.

    Raises
    ------
    BadIndex
        ``index`` names an unknown or plotted dimension, or a position out of range; ``plot``
        names an unknown dimension, or more than two.
    """
    plot_dims = check_plot(dims, plot) or choose_plot_dims(dims, shape)
    fixed = check_index(dims, shape, plot_dims, index)
    axes = [list(dims).index(d) for d in plot_dims]
    counts = [len(edges[a]) for a in axes]
    strides = _strides(counts, max_chunks)
    positions: dict[str, np.ndarray[Any, Any]] = {}
    steps: dict[str, int] = {}
    read = 1
    for d, a, count, s in zip(plot_dims, axes, counts, strides, strict=True):
        starts = _chunk_starts(edges[a])
        picked = _picked_chunks(count, s)
        read *= len(picked)
        pos = np.concatenate(
            [np.arange(starts[c], min(starts[c] + edges[a][c], shape[a])) for c in picked]
        )
        steps[d] = max(1, math.ceil(len(pos) / max_cells))
        positions[d] = pos[:: steps[d]]
    return Selection(
        plot_dims=plot_dims,
        index=fixed,
        positions=positions,
        chunks_spanned=math.prod(counts),
        chunks_read=read,
        strides=dict(zip(plot_dims, strides, strict=True)),
        steps=steps,
        lengths={d: int(shape[a]) for d, a in zip(plot_dims, axes, strict=True)},
    )


def read_selection(da: xr.DataArray, sel: Selection) -> xr.DataArray:
    """The decoded values ``sel`` picks from the lazily opened ``da`` (only their chunks are
    read), with the coordinates along the plotted dimensions."""
    picked = da.isel({**sel.index, **sel.positions})
    picked = picked.transpose(*sel.plot_dims)
    return picked.load()


def _monotonic(values: np.ndarray[Any, Any]) -> bool:
    if len(values) < 2:
        return True
    if values.dtype.kind == "M":
        values = values.astype("datetime64[ns]").view("int64")
    steps = np.diff(values.astype("float64"))
    return bool(np.all(steps > 0) or np.all(steps < 0))


def _axis_values(
    da: xr.DataArray, dim: str, positions: np.ndarray[Any, Any], *, dates: bool
) -> tuple[np.ndarray[Any, Any], str]:
    """Values along ``dim`` to plot against and the axis label: the first 1-D coordinate
    along ``dim`` (the dimension's own first) holding numbers, or dates when ``dates``,
    that rise or fall strictly; else the ``positions`` read."""
    names = sorted((c for c in da.coords if da[c].dims == (dim,)), key=lambda c: c != dim)
    for c in names:
        values = np.asarray(da[c].values)
        units = _label(da[c].attrs.get("units", ""), 40)
        kinds = "iufM" if dates else "iuf"
        if values.dtype.kind in kinds and _monotonic(values):
            return values, f"{_label(c)} [{units}]" if units else _label(c)
    return positions, f"{_label(dim)} (position)"


def _runs(positions: np.ndarray[Any, Any], step: int) -> list[slice]:
    """The runs of ``positions`` read without a gap (chunks skipped by a decimated read)."""
    cuts = [0, *(np.flatnonzero(np.diff(positions) > step) + 1).tolist(), len(positions)]
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


def _cells(
    positions: np.ndarray[Any, Any], values: np.ndarray[Any, Any], step: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Cell edges along one axis of a decimated map (in the axis' values) and, per cell, the
    column of the data it shows (-1: a gap of chunks not read, drawn empty)."""
    edges: list[float] = [positions[0] - step / 2]
    take: list[int] = []
    for r in _runs(positions, step):
        if take:  # the gap before this run
            edges.append(positions[r.start] - step / 2)
            take.append(-1)
        for j in range(r.start, r.stop):
            edges.append(positions[j] + step / 2)
            take.append(j)
    return _to_axis(np.asarray(edges, dtype="float64"), positions, values), np.asarray(take)


def _to_axis(
    at: np.ndarray[Any, Any], positions: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Fractional positions ``at`` in the axis' values (linear between the positions read,
    extrapolated past them)."""
    if values is positions or len(positions) < 2:
        return at + (float(values[0]) - float(positions[0]))
    p, v = positions.astype("float64"), values.astype("float64")
    out = np.interp(at, p, v)
    lo, hi = at < p[0], at > p[-1]
    out[lo] = v[0] + (at[lo] - p[0]) * (v[1] - v[0]) / (p[1] - p[0])
    out[hi] = v[-1] + (at[hi] - p[-1]) * (v[-1] - v[-2]) / (p[-1] - p[-2])
    return np.asarray(out, dtype="float64")


def _gap_map(ax: Any, data: Any, x: Any, y: Any, sel: Selection) -> Any:
    """A decimated map: the chunks read at their places, the chunks skipped left empty."""
    ydim, xdim = sel.plot_dims
    ey, ty = _cells(sel.positions[ydim], y, sel.steps.get(ydim, 1))
    ex, tx = _cells(sel.positions[xdim], x, sel.steps.get(xdim, 1))
    grid = np.asarray(data, dtype="float64")[np.ix_(np.maximum(ty, 0), np.maximum(tx, 0))]
    unread = (ty < 0)[:, None] | (tx < 0)[None, :]
    grid[unread] = np.nan
    for dim, values, set_lim in ((ydim, y, ax.set_ylim), (xdim, x, ax.set_xlim)):
        n = sel.lengths.get(dim)
        if n:  # the whole extent of the array, read or not
            set_lim(*_to_axis(np.array([-0.5, n - 0.5]), sel.positions[dim], values))
    ax.set_facecolor("#dddddd")  # chunks not read: grey; missing values read: white
    ax.pcolormesh(
        ex,
        ey,
        np.ma.masked_array(np.ones_like(grid), unread),
        cmap="Greys_r",
        shading="flat",
        vmin=0,
        vmax=1,
    )
    return ax.pcolormesh(ex, ey, np.ma.masked_invalid(grid), shading="flat", cmap="viridis")


def _even(values: np.ndarray[Any, Any]) -> bool:
    """Whether ``values`` are evenly spaced numbers (an image's pixels can stand for them)."""
    if values.dtype.kind not in "iuf" or len(values) < 2:
        return values.dtype.kind in "iuf"
    steps = np.diff(values.astype("float64"))
    return bool(np.allclose(steps, steps[0], rtol=1e-3) and steps[0] != 0)


def _draw_map(ax: Any, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], values: Any) -> Any:
    """An image when both axes are evenly spaced (fast), else a mesh on the coordinates (gaps
    of a decimated read, uneven grids)."""
    if _even(x) and _even(y):
        dx = float(x[1] - x[0]) if len(x) > 1 else 1.0
        dy = float(y[1] - y[0]) if len(y) > 1 else 1.0
        extent = (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)
        return ax.imshow(
            values,
            origin="lower",
            extent=[float(e) for e in extent],
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
        )
    return ax.pcolormesh(x, y, values, shading="nearest", cmap="viridis")


def _label(text: object, most: int = 80) -> str:
    """Text from the repository as a picture's label: UTF-8 (:func:`safe_text`), at most
    ``most`` characters, ``$`` meaning a dollar (matplotlib would read ``$...$`` as TeX, and
    fail on what is not)."""
    return shorten(safe_text(str(text)), most).replace("$", r"\$")


def _title(name: str, units: str, where: str, note: str) -> str:
    name, where = _label(name), _label(where, 200)  # units: a label already
    head = f"{name} [{units}]" if units else name
    lines = [f"{head} at {where}" if where else head]
    if note:
        lines.append(note)
    return "\n".join(lines)


def render_png(
    data: xr.DataArray,
    sel: Selection,
    *,
    name: str,
    where: str,
    size: tuple[int, int] = (800, 500),
) -> bytes:
    """The PNG picture of ``data`` (1-D: a line plot; 2-D: a map with a colour bar), titled
    with ``name``, its units, ``where`` (the index chosen) and ``note``; ``size`` in pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    units = _label(data.attrs.get("units", ""), 40)
    values = np.asarray(data.values, dtype="float64")
    finite = np.isfinite(values)
    title = _title(name, units, where, sel.note())
    if not finite.any():
        ax.text(
            0.5,
            0.5,
            "no data: every value here is missing (fill value / NaN)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    elif data.ndim == 1:
        dim = str(data.dims[0])
        x, xlabel = _axis_values(data, dim, sel.positions[dim], dates=True)
        for r in _runs(sel.positions[dim], sel.steps.get(dim, 1)):
            ax.plot(x[r], values[r], lw=1.2, color="C0", marker="." if len(x) < 80 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(units or _label(name))
        ax.grid(alpha=0.3)
        if x.dtype.kind == "M":
            fig.autofmt_xdate()
    else:
        ydim, xdim = sel.plot_dims
        y, ylabel = _axis_values(data, ydim, sel.positions[ydim], dates=False)
        x, xlabel = _axis_values(data, xdim, sel.positions[xdim], dates=False)
        if sel.decimated:
            mesh = _gap_map(ax, values, x, y, sel)
        else:
            mesh = _draw_map(ax, x, y, np.ma.masked_invalid(values))
        fig.colorbar(mesh, ax=ax, label=units or _label(name))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    # Fixed margins rather than tight_layout: a second full draw costs ~40 % of a picture.
    fig.subplots_adjust(left=0.1, right=0.98 if data.ndim == 1 else 0.99, top=0.88, bottom=0.14)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def counting_store(store: Any, path: str) -> Any:
    """``store`` wrapped so that it counts the chunk reads of the array at ``path``
    (``.chunk_reads``): what the response of a picture reports."""
    from zarr.storage import WrapperStore

    prefix = path.strip("/") + "/"

    class _Counting(WrapperStore[Any]):
        chunk_reads = 0

        def _count(self, key: str) -> None:
            if key.startswith(prefix) and not key.endswith(("zarr.json", ".zarray", ".zattrs")):
                self.chunk_reads += 1

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            self._count(key)
            return await self._store.get(key, prototype, byte_range)

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
            key_ranges = list(key_ranges)
            for key, _ in key_ranges:
                self._count(key)
            return await self._store.get_partial_values(prototype, key_ranges)

    return _Counting(store)


class NotPlottable(ValueError):
    """The array holds no numbers (strings, dates, ...) or has no values (a dimension of 0)."""


def _where(da: xr.DataArray, index: Mapping[str, int]) -> str:
    """The chosen index in words, with the coordinate values there (at most two per dim)."""
    parts = []
    for d, i in index.items():
        named = [c for c in da.coords if da[c].dims == (d,)][:2]
        vals = ", ".join(f"{c} {_short(da[c].isel({d: i}).values[()])}" for c in named)
        parts.append(f"{d}={i}" + (f" ({vals})" if vals else ""))
    return "; ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s")).replace("T00:00:00", "")
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


@dataclass(frozen=True)
class Quicklook:
    """A picture, what it read, and how many of the values read are not missing."""

    png: bytes = field(repr=False)
    selection: Selection
    values: int
    finite: int


def unnamed_dims(ndim: int) -> list[str]:
    """The names given to the dimensions of an array stored without any (plain zarr)."""
    return [f"dim_{i}" for i in range(ndim)]


def _dimension_names(arr: Any) -> list[str] | None:
    """``arr``'s dimension names (zarr 3 metadata, or xarray's ``_ARRAY_DIMENSIONS`` in
    zarr 2), ``None`` when it has none for some dimension."""
    names = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS")
    if not isinstance(names, list | tuple) or len(names) != arr.ndim:
        return None
    return None if any(n is None for n in names) else [str(n) for n in names]


def open_array(store: Any, group: str, name: str) -> xr.DataArray:
    """Array ``name`` of ``group``, opened lazily (nothing read), CF-decoded, with its 1-D
    coordinates.

    xarray opens no group holding an array without dimension names (written with plain
    zarr): such a group's array is built here instead (lazily: reading only the chunks asked
    for, :mod:`icepipe.web.lazy_zarr`), an array without names getting ``dim_0``, ``dim_1``...
    """
    import xarray as xr
    import zarr

    from icepipe.web.lazy_zarr import lazy_variable as _variable

    node = zarr.open_group(store, path=group, mode="r")
    arrays = dict(node.arrays())
    dims = {n: _dimension_names(a) for n, a in arrays.items()}
    if all(d is not None for d in dims.values()):
        ds = xr.open_zarr(
            store,
            group=group or None,
            consolidated=False,
            chunks=None,
            create_default_indexes=False,
        )
        da: xr.DataArray = ds[name]
        return da
    target = dims[name] or unnamed_dims(arrays[name].ndim)
    variables = {name: _variable(arrays[name], target)}
    for n, d in dims.items():
        if n != name and d is not None and len(d) == 1 and d[0] in target:
            variables[n] = _variable(arrays[n], d)
    ds = xr.Dataset({name: variables.pop(name)}, coords=variables)
    with contextlib.suppress(Exception):  # units xarray cannot decode: the stored numbers
        ds = xr.decode_cf(ds)
    da = ds[name]
    return da


def quicklook_png(
    store: Any,
    *,
    group: str,
    name: str,
    edges: Sequence[Sequence[int]],
    index: Mapping[str, int],
    max_chunks: int,
    plot: Sequence[str] = (),
) -> Quicklook:
    """The picture of array ``name`` of ``group`` in ``store`` at ``index`` (positions of the
    dimensions not plotted; 0 when not given), reading at most ``max_chunks`` of its chunks.
    ``edges``: its chunk lengths per dimension; ``plot``: the dimensions to plot (see
    :func:`plan_selection`).

    Raises
    ------
    BadIndex
        ``index`` names an unknown or plotted dimension, or a position out of range.
    NotPlottable
        The array's decoded values are not numbers, or it has no values.
    """

    da = open_array(store, group, name)
    if da.ndim == 0:
        raise NotPlottable(f"{name!r} is a single value (a 0-dimensional array): nothing to plot")
    if da.dtype.kind not in "biuf":
        raise NotPlottable(f"{name!r} holds {da.dtype} values, not numbers: nothing to plot")
    if 0 in da.shape:
        raise NotPlottable(f"{name!r} has no values (shape {da.shape})")
    da = da.drop_vars([c for c in da.coords if da[c].ndim != 1])
    sel = plan_selection(
        [str(d) for d in da.dims], da.shape, edges, index, max_chunks=max_chunks, plot=plot
    )
    data = read_selection(da, sel)
    where = _where(da, sel.index)
    png = render_png(data, sel, name=name, where=where)
    finite = int(np.isfinite(np.asarray(data.values, dtype="float64")).sum())
    return Quicklook(png=png, selection=sel, values=int(data.size), finite=finite)
