"""STAC Collections for repositories: ``icepipe repo stac REPO``.

The collection's asset opens the repository with xpystac's Icechunk convention: media type
``application/vnd.zarr+icechunk``, the snapshot id as ``version``, the repository's storage
scheme (STAC storage extension v2, from the catalog entry or the pipeline's ``target``) under
``storage:schemes``/``storage:refs``, and, for virtual references, one asset per virtual
chunk container linked from ``vrt:hrefs``. The datacube extension describes the group's
dimensions (temporal, spatial x/y/z, other) and variables, read from the snapshot.

Validation is offline: the core Collection schema with pystac's bundled JSON schemas, and the
extension fields (datacube, storage, version, virtual assets, xarray assets) structurally by
:func:`check_collection`, because pystac fetches extension schemas over the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import xarray as xr

from icepipe import repository
from icepipe.catalog import CatalogEntry
from icepipe.errors import ConfigError, IcepipeError
from icepipe.repository.grids import rectilinear_enabled
from icepipe.storage import StorageOptions, is_local, scheme_of, split_url

if TYPE_CHECKING:
    import icechunk

__all__ = [
    "ICECHUNK_MEDIA_TYPE",
    "StacTarget",
    "check_collection",
    "repo_collection",
    "stac_target",
]

#: The media type xpystac opens with icechunk.
ICECHUNK_MEDIA_TYPE = "application/vnd.zarr+icechunk"
DATACUBE = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
STORAGE = "https://stac-extensions.github.io/storage/v2.0.0/schema.json"
VERSION = "https://stac-extensions.github.io/version/v1.2.0/schema.json"
VIRTUAL = "https://stac-extensions.github.io/virtual-assets/v1.0.0/schema.json"
XARRAY = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
_X_NAMES = ("lon", "longitude", "x", "nav_lon")
_Y_NAMES = ("lat", "latitude", "y", "nav_lat")


@dataclass(frozen=True)
class StacTarget:
    """What a collection describes: a repository (its catalog entry or location), a group and
    the branch whose tip is described (or a ref)."""

    entry: CatalogEntry
    group: str | None = None
    branch: str = "main"


def stac_target(arg: str, *, group: str | None = None, branch: str | None = None) -> StacTarget:
    """The repository a ``repo stac`` argument names: a pipeline file (its ``target``: location,
    storage options, group, branch), a catalog name or a location.

    Raises
    ------
    ConfigError
        An invalid pipeline, an unknown catalog name or prefix.
    """
    if arg.endswith((".yaml", ".yml")) and os.path.isfile(arg):
        from icepipe.spec import load_pipeline

        t = load_pipeline(arg).target
        entry = CatalogEntry(name="", url=t.repo, storage=t.storage, config=dict(t.config))
        return StacTarget(entry, group if group is not None else t.group, branch or t.branch)
    from icepipe.ops.repos import resolve_location

    return StacTarget(resolve_location(arg), group, branch or "main")


def repo_collection(
    target: StacTarget,
    *,
    ref: str | None = None,
    collection_id: str | None = None,
    title: str | None = None,
    description: str | None = None,
    license: str = "other",
) -> pystac.Collection:
    """A STAC Collection describing ``target``'s group at ``ref`` (default: the branch tip),
    checked with :func:`check_collection`.

    Raises
    ------
    RepoNotFoundError
        No repository there.
    ConfigError
        No such ref or group; several groups hold data and none was chosen.
    """
    entry = target.entry
    repo = repository.open_repo(entry.url, storage=entry.storage, config=entry.config)
    snapshot = repository.resolve_ref(repo, ref or f"branch:{target.branch}")
    ds, group = _open_group(repo, snapshot, target.group, entry.url)
    cid = collection_id or _default_id(entry)
    schemes: dict[str, dict[str, Any]] = {}
    repo_ref = _add_scheme(schemes, entry.url, entry.storage)
    containers = _container_assets(repo, schemes)
    collection = pystac.Collection(
        id=cid,
        title=title or (entry.name or cid),
        description=description or entry.description or f"Icechunk repository {entry.url}",
        extent=_extent(ds),
        license=license,
    )
    latest = ref is None or ref in (target.branch, f"branch:{target.branch}")
    asset = _repo_asset(entry.url, snapshot, group, repo_ref, list(containers), latest=latest)
    collection.add_asset(f"{cid}@{snapshot}", asset)
    for key, container_asset in containers.items():
        collection.add_asset(key, container_asset)
    extensions = [DATACUBE, VERSION, XARRAY]
    if schemes:
        collection.extra_fields["storage:schemes"] = schemes
        extensions.append(STORAGE)
    if containers:
        extensions.append(VIRTUAL)
    collection.stac_extensions = sorted(extensions)
    collection.extra_fields["version"] = snapshot
    collection.extra_fields["cube:dimensions"] = _dimensions(ds)
    collection.extra_fields["cube:variables"] = _variables(ds)
    check_collection(collection)
    return collection


def _default_id(entry: CatalogEntry) -> str:
    """``org-name`` for catalog names, the folder's name for locations."""
    import re

    name = entry.name or os.path.basename(entry.url.rstrip("/")) or "icechunk"
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", name)


def _open_group(
    repo: icechunk.Repository, snapshot: str, group: str | None, where: str
) -> tuple[xr.Dataset, str | None]:
    """The group's dataset at ``snapshot`` (times decoded when xarray can); the group chosen
    when none was given: the root when it holds arrays, else the only group that does."""
    session = repo.readonly_session(snapshot_id=snapshot)
    with rectilinear_enabled():
        if group is None:
            tree = xr.open_datatree(
                session.store,  # type: ignore[arg-type]
                engine="zarr",
                consolidated=False,
                zarr_format=3,
                decode_times=False,
            )
            full = [n.path for n in tree.subtree if n.has_data and n.data_vars]
            if "/" not in full and len(full) > 1:
                raise ConfigError(
                    f"{where} holds data in several groups ({', '.join(full)}); choose one "
                    "with --group",
                    field="--group",
                )
            group = None if not full or full == ["/"] or "/" in full else full[0].strip("/")
        try:
            return _open_zarr(session, group), group
        except (FileNotFoundError, KeyError) as exc:
            raise ConfigError(f"no group {group!r} in {where}", field="--group") from exc


def _open_zarr(session: icechunk.Session, group: str | None) -> xr.Dataset:
    kw: dict[str, Any] = dict(group=group, consolidated=False, zarr_format=3, chunks=None)
    ds: xr.Dataset
    try:
        ds = xr.open_zarr(session.store, **kw)
    except ValueError:  # times xarray cannot decode (months since ...): described as stored
        ds = xr.open_zarr(session.store, decode_times=False, **kw)
    return ds


def _add_scheme(
    schemes: dict[str, dict[str, Any]], url: str, options: StorageOptions
) -> str | None:
    """Record how ``url`` is reached as a storage scheme; its key (``None`` for local files and
    http(s), which need none)."""
    scheme = scheme_of(url)
    if scheme not in ("s3", "gs", "az"):
        return None
    _, bucket, _ = split_url(url)
    obj: dict[str, Any]
    if scheme == "s3" and options.endpoint is None:
        obj = {
            "type": "aws-s3",
            "platform": "https://{bucket}.s3.{region}.amazonaws.com",
            "bucket": bucket,
            "region": options.effective_region or "us-east-1",
        }
    elif scheme == "s3":
        endpoint = str(options.endpoint)
        if not options.force_path_style:  # virtual-hosted: the bucket in the host name
            proto, _, host = endpoint.partition("://")
            endpoint = f"{proto}://{{bucket}}.{host}"
        obj = {
            "type": "custom-s3",
            "platform": endpoint,
            "bucket": bucket,
            "region": options.effective_region,
        }
    elif scheme == "gs":
        obj = {"type": "gcs", "platform": "https://storage.googleapis.com", "bucket": bucket}
    else:
        obj = {"type": "ms-azure", "platform": "https://{account}.blob.core.windows.net"}
        obj["account"] = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
        obj["container"] = bucket
    if options.anonymous:
        obj["anonymous"] = True
    obj = {k: v for k, v in obj.items() if v not in (None, "")}
    key = f"{obj['type']}-{bucket}"
    schemes.setdefault(key, obj)
    return key


def _container_assets(
    repo: icechunk.Repository, schemes: dict[str, dict[str, Any]]
) -> dict[str, pystac.Asset]:
    """One asset per virtual chunk container: the sources that virtual references point into."""
    out: dict[str, pystac.Asset] = {}
    containers = repo.config.virtual_chunk_containers or {}
    for i, c in enumerate(sorted(containers.values(), key=lambda c: c.url_prefix)):
        try:
            options = repository.container_options(repo, c)
        except IcepipeError:
            options = StorageOptions()
        ref = _add_scheme(schemes, c.url_prefix, options)
        extra: dict[str, Any] = {"storage:refs": [ref]} if ref else {}
        out[f"sources-{i}"] = pystac.Asset(
            href=c.url_prefix,
            title=f"source files virtual references point into ({c.url_prefix})",
            roles=["data", "source"],
            extra_fields=extra,
        )
    return out


def _repo_asset(
    url: str,
    snapshot: str,
    group: str | None,
    ref: str | None,
    containers: list[str],
    *,
    latest: bool,
) -> pystac.Asset:
    href = "file://" + os.path.abspath(url.removeprefix("file://")) if is_local(url) else url
    roles = ["data"] + (["references", "virtual"] if containers else [])
    roles += ["latest-version"] if latest else []
    open_kwargs: dict[str, Any] = {"engine": "icepipe", "snapshot_id": snapshot}
    if group:
        open_kwargs["group"] = group
    extra: dict[str, Any] = {"version": snapshot, "xarray:open_kwargs": open_kwargs}
    if ref:
        extra["storage:refs"] = [ref]
    if containers:
        extra["vrt:hrefs"] = [{"key": k, "href": f"#/assets/{k}"} for k in containers]
    return pystac.Asset(
        href=href,
        media_type=ICECHUNK_MEDIA_TYPE,
        title=f"Icechunk repository{' group ' + group if group else ''} at snapshot {snapshot}",
        roles=roles,
        extra_fields=extra,
    )


def _axis(name: str, var: xr.DataArray) -> str | None:
    """``x``, ``y``, ``z`` or ``None`` from CF attributes and common names."""
    attrs = var.attrs
    axis = str(attrs.get("axis", "")).lower()
    if axis in ("x", "y", "z"):
        return axis
    units = str(attrs.get("units", "")).lower()
    standard = str(attrs.get("standard_name", "")).lower()
    if standard == "longitude" or units.startswith("degrees_e") or name.lower() in _X_NAMES:
        return "x"
    if standard == "latitude" or units.startswith("degrees_n") or name.lower() in _Y_NAMES:
        return "y"
    if "positive" in attrs or standard in ("depth", "height", "air_pressure"):
        return "z"
    return None


def _is_time(var: xr.DataArray) -> bool:
    return np.issubdtype(var.dtype, np.datetime64) or (
        var.dtype == object and var.size > 0 and hasattr(var.values.flat[0], "isoformat")
    )


def _iso(value: Any) -> str:
    """ISO 8601 in UTC, to the second (numpy datetimes and cftime dates)."""
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s")) + "Z"
    text = str(value.isoformat(timespec="seconds") if hasattr(value, "hour") else value)
    return text.replace(" ", "T") + ("" if "+" in text else "Z")


def _dimensions(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``cube:dimensions``: each dimension with its type, extent (or values) and axis."""
    out: dict[str, dict[str, Any]] = {}
    for dim, size in ds.sizes.items():
        name = str(dim)
        if name not in ds.coords:
            out[name] = {"type": "other", "extent": [0, int(size) - 1], "step": 1}
            out[name]["description"] = "index (no coordinate variable)"
            continue
        var = ds[name]
        values = var.values
        entry: dict[str, Any]
        if _is_time(var):
            entry = {"type": "temporal", "extent": [_iso(values.min()), _iso(values.max())]}
        elif np.issubdtype(values.dtype, np.number) and values.size:
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            axis = _axis(name, var)
            entry = {"type": "spatial" if axis else "other", "extent": [lo, hi]}
            if axis:
                entry["axis"] = axis
            if axis in ("x", "y") and _is_degrees(name, var):
                entry["reference_system"] = 4326
        else:
            entry = {"type": "other", "values": [str(v) for v in values.tolist()]}
        if var.attrs.get("units") and entry["type"] != "temporal":
            entry["unit"] = str(var.attrs["units"])
        if var.attrs.get("long_name"):
            entry["description"] = str(var.attrs["long_name"])
        out[name] = entry
    return out


def _is_degrees(name: str, var: xr.DataArray) -> bool:
    units = str(var.attrs.get("units", "")).lower()
    return units.startswith("degree") or name.lower() in ("lon", "longitude", "lat", "latitude")


def _variables(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``cube:variables``: data variables and non-dimension coordinates (auxiliary)."""
    out: dict[str, dict[str, Any]] = {}
    items = [(n, v, "data") for n, v in ds.data_vars.items()]
    items += [(n, v, "auxiliary") for n, v in ds.coords.items() if n not in ds.dims]
    for name, var, kind in items:
        entry: dict[str, Any] = {
            "type": kind,
            "dimensions": [str(d) for d in var.dims],
            "shape": [int(n) for n in var.shape],
        }
        chunks = var.encoding.get("chunks")
        if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks):
            entry["chunks"] = list(chunks)
        if var.attrs.get("units"):
            entry["unit"] = str(var.attrs["units"])
        if var.attrs.get("long_name"):
            entry["description"] = str(var.attrs["long_name"])
        out[str(name)] = entry
    return out


def _extent(ds: xr.Dataset) -> pystac.Extent:
    """The bbox from the longitude/latitude coordinates in degrees (1-D or 2-D; the globe
    without them), the time range from the time dimension or, failing that, a time
    coordinate (NEMO's ``time_centered``)."""
    bbox = [-180.0, -90.0, 180.0, 90.0]
    ranges: dict[str, tuple[float, float]] = {}
    for name, var in ds.coords.items():
        axis = _axis(str(name), var)
        numeric = np.issubdtype(var.dtype, np.number) and var.size > 0
        if axis in ("x", "y") and axis not in ranges and numeric and _is_degrees(str(name), var):
            ranges[axis] = (float(np.nanmin(var.values)), float(np.nanmax(var.values)))
    if len(ranges) == 2:
        (x0, x1), (y0, y1) = ranges["x"], ranges["y"]
        if -180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90:
            bbox = [x0, y0, x1, y1]
    interval: list[Any] = [None, None]
    times = [ds[d] for d in ds.dims if d in ds.coords and _is_time(ds[d])]
    times += [v for n, v in ds.coords.items() if n not in ds.dims and _is_time(v)]
    if times:
        from datetime import datetime

        values = times[0].values
        interval = [
            datetime.fromisoformat(_iso(values.min())),
            datetime.fromisoformat(_iso(values.max())),
        ]
    return pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval]))


def check_collection(collection: pystac.Collection | Mapping[str, Any]) -> None:
    """Validate a collection offline: the core schema with pystac's bundled JSON schemas, and
    the extension fields icepipe writes structurally (pystac would fetch their schemas).

    Raises
    ------
    ConfigError
        The collection is invalid (the message names the field).
    """
    from pystac.validation import validate_dict

    d = dict(collection.to_dict() if isinstance(collection, pystac.Collection) else collection)
    try:
        validate_dict(d, stac_object_type=pystac.STACObjectType.COLLECTION, extensions=[])
    except pystac.STACValidationError as exc:
        raise ConfigError(f"invalid STAC Collection: {exc}", field="stac") from exc
    problems = _datacube_problems(d) + _asset_problems(d)
    if problems:
        raise ConfigError(f"invalid STAC Collection: {'; '.join(problems)}", field="stac")


def _datacube_problems(d: Mapping[str, Any]) -> list[str]:
    out = []
    dims = d.get("cube:dimensions") or {}
    for name, dim in dims.items():
        kind = dim.get("type")
        if kind not in ("spatial", "temporal", "other"):
            out.append(f"cube:dimensions.{name}.type: {kind!r}")
        if kind == "spatial" and dim.get("axis") not in ("x", "y", "z"):
            out.append(f"cube:dimensions.{name}.axis: {dim.get('axis')!r}")
        extent = dim.get("extent")
        if extent is None and "values" not in dim:
            out.append(f"cube:dimensions.{name}: neither extent nor values")
        if extent is not None and len(extent) != 2:
            out.append(f"cube:dimensions.{name}.extent: expected [min, max]")
    for name, var in (d.get("cube:variables") or {}).items():
        if var.get("type") not in ("data", "auxiliary"):
            out.append(f"cube:variables.{name}.type: {var.get('type')!r}")
        missing = [x for x in var.get("dimensions") or [] if x not in dims]
        if missing:
            out.append(f"cube:variables.{name}.dimensions: {missing} not in cube:dimensions")
    return out


def _asset_problems(d: Mapping[str, Any]) -> list[str]:
    out = []
    schemes = d.get("storage:schemes") or {}
    for key, scheme in schemes.items():
        if not scheme.get("platform") or not scheme.get("type"):
            out.append(f"storage:schemes.{key}: needs type and platform")
    assets = d.get("assets") or {}
    for key, asset in assets.items():
        for ref in asset.get("storage:refs") or []:
            if ref not in schemes:
                out.append(f"assets.{key}.storage:refs: {ref!r} not in storage:schemes")
        for link in asset.get("vrt:hrefs") or []:
            if link.get("key") not in assets:
                out.append(f"assets.{key}.vrt:hrefs: no asset {link.get('key')!r}")
    if not any(a.get("type") == ICECHUNK_MEDIA_TYPE for a in assets.values()):
        out.append(f"no asset of type {ICECHUNK_MEDIA_TYPE}")
    return out
