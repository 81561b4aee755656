"""Declarative pipeline definitions: load a YAML file into frozen, validated dataclasses.

Everything is validated before any work starts: unknown keys, wrong types and missing fields
raise :class:`ConfigError` naming the field, what was expected and what was found. Besides the
YAML file itself, it reads only the catalog (for ``target.repo: catalog:ORG/NAME``, see
:mod:`icepipe.catalog`) and the time-zone database (``schedule.timezone``); no source file,
bucket or repository is touched (glob patterns are listed later, by :mod:`icepipe.sources`).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from icepipe.callables import PATTERN as CALLABLE_PATTERN
from icepipe.callables import split_callable
from icepipe.catalog import resolve_target as _catalog_target
from icepipe.cron import Schedule, parse_schedule
from icepipe.errors import ConfigError
from icepipe.fields import Field, did_you_mean
from icepipe.fields import describe as _describe
from icepipe.fields import no_unknown as _no_unknown
from icepipe.fields import optional_str as _str
from icepipe.globs import glob_to_regex
from icepipe.storage import (
    REPO_SCHEMES,
    SOURCE_SCHEMES,
    STORAGE_FIELDS,
    STORAGE_KEYS,
    StorageOptions,
    is_local,
    parse_repo_config,
    parse_storage_options,
    refuse_credentials_in_url,
    repo_config_json_schema,
    scheme_of,
    secret_key_message,
    split_url,
)

__all__ = [
    "CHUNK_RULES",
    "COMPRESSIONS",
    "FORMATS",
    "GeoTiffSpec",
    "NativeSpec",
    "MODES",
    "ON_CHANGED",
    "ON_ERROR",
    "PIPELINE",
    "Pipeline",
    "SOURCE_FIELDS",
    "SourceSpec",
    "TARGET_FIELDS",
    "TargetSpec",
    "load_pipeline",
    "pipeline_from_dict",
]

Format = Literal["auto", "netcdf3", "netcdf4", "zarr", "grib", "geotiff", "kerchunk"]
Mode = Literal["virtual", "native"]
OnError = Literal["fail", "skip"]
OnChanged = Literal["fail", "reingest"]
FORMATS: tuple[str, ...] = ("auto", "netcdf3", "netcdf4", "zarr", "grib", "geotiff", "kerchunk")
COMPRESSIONS: tuple[str, ...] = ("zstd", "blosc", "gzip", "none")
#: ``chunks.<concat_dim>`` rules: one chunk per source file, or per calendar day, month, year.
CHUNK_RULES: tuple[str, ...] = ("file", "day", "month", "year")
MODES: tuple[str, ...] = ("virtual", "native")
ON_ERROR: tuple[str, ...] = ("fail", "skip")
ON_CHANGED: tuple[str, ...] = ("fail", "reingest")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_URL_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


@dataclass(frozen=True)
class GeoTiffSpec:
    """``source.geotiff``: how GeoTIFF files become one dataset (``format: geotiff``).

    Each file is one variable ``variable`` along ``(band, y, x)``. Files are stacked along
    ``time`` with the time taken from the file name (``time_from_filename``: a regular
    expression whose first group, or group named ``time``, is parsed with ``time_format``, or
    as ISO 8601 / ``YYYYMMDD`` without it) or from a TIFF tag (``time_from_tag``, e.g.
    ``TIFFTAG_DATETIME``); or along ``band`` with each single-band file's band number taken
    from its name (``band_from_filename``: the first group, an integer). ``overview`` picks a
    reduced-resolution level (0, the default: full resolution; overviews are ignored).
    """

    variable: str = "band_data"
    time_from_filename: str | None = None
    time_from_tag: str | None = None
    time_format: str | None = None
    band_from_filename: str | None = None
    overview: int = 0


@dataclass(frozen=True)
class SourceSpec:
    """Which files to ingest and how to combine them.

    ``urls`` is either one glob pattern or an explicit list; every entry is an absolute
    ``file://`` URL after loading (relative paths resolve against the pipeline file's folder),
    or an ``s3://``, ``gs://``, ``az://`` or ``http(s)://`` URL reached as ``storage`` says.
    ``order_by`` names the 1-D variable along ``concat_dim`` whose values order the files and
    detect duplicates (default: the ``concat_dim`` coordinate itself). ``variables`` keeps only
    the named variables (and the coordinates they use); ``drop_variables`` removes some.
    """

    urls: tuple[str, ...]
    concat_dim: str
    format: Format = "auto"
    is_glob: bool = False
    order_by: str | None = None
    variables: tuple[str, ...] | None = None
    drop_variables: tuple[str, ...] = ()
    preprocess: str | None = None
    #: Other dimensions files are combined along (``concat_dims`` after the first).
    stack_dims: tuple[str, ...] = ()
    #: Files holding the same concat_dim values but different variables are merged.
    merge: bool = False
    #: The GRIB hypercube (cfgrib's split of a file into datasets) this pipeline ingests.
    grib_cube: str | None = None
    #: Several GRIB hypercubes, each into the group ``<target.group>/<cube name>``: these
    #: names, or every cube when empty (``grib_cubes: all``). ``None``: one cube.
    grib_cubes: tuple[str, ...] | None = None
    #: Folder searched first for the preprocess module: the pipeline file's folder.
    search_path: str | None = None
    #: How to reach object-store sources (``source.storage``); names, never secrets.
    storage: StorageOptions = field(default_factory=StorageOptions)
    #: The netCDF4/HDF5 (or Zarr) group of each file to ingest; the root group when None.
    group: str | None = None
    #: ``source.geotiff`` (``format: geotiff`` only).
    geotiff: GeoTiffSpec = field(default_factory=GeoTiffSpec)


@dataclass(frozen=True)
class TargetSpec:
    """Where to write: an Icechunk repository, branch and group.

    ``storage`` says how to reach an object-store repository (``s3://...``); ``config`` holds
    validated Icechunk repository settings (``target.config``).
    """

    repo: str
    branch: str = "main"
    group: str | None = None
    storage: StorageOptions = field(default_factory=StorageOptions)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NativeSpec:
    """How ``mode: native`` lays out the rewritten data.

    ``chunks`` maps dimension names to chunk lengths (missing dimensions: the whole dimension,
    except ``concat_dim``, which defaults to the first file's length along it); ``shards``
    optionally groups chunks into Zarr shards (each a multiple of the chunk length).
    ``concat_dim`` may instead be chunked by a rule (:data:`CHUNK_RULES`): ``file`` (one chunk
    per source file), ``day``, ``month`` or ``year`` (one chunk per calendar day, month or year
    of its decoded time values), stored as a rectilinear chunk grid.
    """

    chunks: dict[str, int | str] = field(default_factory=dict)
    shards: dict[str, int] | None = None
    compression: str = "zstd"


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline definition."""

    name: str
    source: SourceSpec
    target: TargetSpec
    mode: Mode = "virtual"
    path: str | None = field(default=None, compare=False)
    native: NativeSpec = field(default_factory=lambda: NativeSpec())
    on_error: OnError = "fail"
    on_changed: OnChanged = "fail"
    #: When to run (``schedule:``), for ``icepipe schedule serve|export``.
    schedule: Schedule | None = None
    #: ``cluster: "module:factory"``: the Dask cluster or client to run on (``icepipe.execute``).
    cluster: str | None = None


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Read and validate a pipeline definition from a YAML file.

    Parameters
    ----------
    path
        The YAML file. Relative paths inside it resolve against its folder.

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, or does not follow the schema.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {str(p)!r}: {exc.strerror}") from exc
    try:
        # YAML is UTF-8 (a byte-order mark is allowed), whatever this machine's locale says.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{p} is not UTF-8 text (byte {data[exc.start : exc.start + 1]!r} at line {line}); "
            "save it as UTF-8"
        ) from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    return pipeline_from_dict(raw, base_dir=p.resolve().parent, path=str(p))


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key given twice in one mapping: PyYAML keeps the last
    silently, so a second ``source:`` block would replace the first unnoticed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice (first at line {first.start_mark.line + 1}); "
                    "keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


#: The keys of ``source.geotiff`` (format: geotiff; docs/geotiff.md).
GEOTIFF_FIELDS: dict[str, Field] = {
    "variable": Field("string", "the data variable's name", default="band_data"),
    "time_from_filename": Field(
        "string", "a regular expression whose first group is each file's time"
    ),
    "time_from_tag": Field("string", "a TIFF tag holding each file's time (TIFFTAG_DATETIME)"),
    "time_format": Field(
        "string",
        "strptime format of the time (default: parsed by pandas; TIFF's own for TIFFTAG_DATETIME)",
    ),
    "band_from_filename": Field(
        "string", "a regular expression whose first group is each single-band file's band"
    ),
    "overview": Field(
        "integer",
        "the overview level to read (0: full resolution)",
        default=0,
        schema={"minimum": 0},
    ),
}


_STRINGS = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
_LENGTH = {"type": "integer", "minimum": 1}
#: The keys of ``source:`` (read by the loader, ``icepipe check`` and ``icepipe schema``).
SOURCE_FIELDS: dict[str, Field] = {
    "urls": Field(
        "custom",
        "one glob pattern (*, ?, [...], **) or a list of paths/URLs; relative paths resolve "
        "against the pipeline file's folder; s3://, gs://, az://, http(s)://",
        required=True,
        schema={"oneOf": [{"type": "string", "minLength": 1}, _STRINGS]},
    ),
    "format": Field(
        "choice",
        "the source files' format (auto: from their first bytes)",
        choices=FORMATS,
        default="auto",
    ),
    "concat_dim": Field("string", "the dimension files are combined (appended) along"),
    "concat_dims": Field(
        "strings",
        "instead of concat_dim: the append dimension first, then dimensions stacked "
        "by coordinate within each step",
    ),
    "merge": Field(
        "boolean", "merge files holding the same steps but different variables", default=False
    ),
    "order_by": Field("string", "a 1-D variable along concat_dim ordering the files"),
    "variables": Field("strings", "keep only these variables (and their coordinates)"),
    "drop_variables": Field("strings", "drop these variables (not with variables)"),
    "preprocess": Field(
        "string",
        "'module:function' (or 'module.function') called with each opened dataset",
        schema={"pattern": CALLABLE_PATTERN},
    ),
    "storage": Field(
        "section",
        "how to reach object-store sources (variable names, never secrets)",
        fields=STORAGE_FIELDS,
        refuse=secret_key_message,
    ),
    "grib_cube": Field("string", "the GRIB hypercube to ingest (files holding several)"),
    "grib_cubes": Field(
        "custom",
        "'all', or GRIB hypercube names, each into <target.group>/<cube>",
        schema={"oneOf": [{"const": "all"}, _STRINGS]},
    ),
    "group": Field("string", "the netCDF4/HDF5 or Zarr group of each file (default: root)"),
    "geotiff": Field(
        "section",
        "format: geotiff only: the variable's name, where each file's coordinate comes from",
        fields=GEOTIFF_FIELDS,
    ),
}
#: The keys of ``target:``: the repository, and how to reach it (:data:`STORAGE_FIELDS`).
TARGET_FIELDS: dict[str, Field] = {
    "repo": Field(
        "string",
        "the Icechunk repository: a local path, s3://, gs://, az://, or catalog:org/name",
        required=True,
    ),
    "branch": Field("string", "the branch to commit to (created from main)", default="main"),
    "group": Field("string", "the Zarr group the dataset goes into (default: root)"),
    "config": Field("custom", "Icechunk repository settings", schema=repo_config_json_schema()),
    **STORAGE_FIELDS,
}
_SCHEDULE_CRON = {"type": "string", "minLength": 1, "description": "5-field cron or @daily"}
#: Every key of a pipeline file, section by section (see :class:`icepipe.fields.Field`).
PIPELINE = Field(
    "section",
    "An icepipe pipeline: which files to ingest (source), where (target), and how",
    fields={
        "name": Field(
            "string",
            "the pipeline's name (letters, digits, _ - .)",
            required=True,
            schema={"pattern": _NAME_RE.pattern},
        ),
        "source": Field(
            "section",
            "which files to ingest and how to combine them",
            required=True,
            fields=SOURCE_FIELDS,
            schema={
                "oneOf": [{"required": ["concat_dim"]}, {"required": ["concat_dims"]}],
                "not": {"required": ["variables", "drop_variables"]},
                # grib_cubes applies to format: grib only.
                "if": {
                    "not": {"required": ["format"], "properties": {"format": {"const": "grib"}}}
                },
                "then": {"properties": {"grib_cubes": False}},
            },
        ),
        "mode": Field(
            "choice",
            "virtual: references to the source files; native: rewritten chunks",
            choices=MODES,
            default="virtual",
        ),
        "target": Field(
            "section",
            "where to write",
            required=True,
            fields=TARGET_FIELDS,
            refuse=secret_key_message,
        ),
        "chunks": Field(
            "custom",
            "mode: native: chunk length per dimension (concat_dim: also file, day, month or year)",
            schema={
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"oneOf": [_LENGTH, {"enum": list(CHUNK_RULES)}]},
            },
        ),
        "shards": Field(
            "custom",
            "mode: native: shard length per dimension",
            schema={"type": "object", "minProperties": 1, "additionalProperties": _LENGTH},
        ),
        "compression": Field(
            "choice", "mode: native: the chunks' codec", choices=COMPRESSIONS, default="zstd"
        ),
        "on_error": Field(
            "choice",
            "skip: leave unreadable files out (retried next run)",
            choices=ON_ERROR,
            default="fail",
        ),
        "on_changed": Field(
            "choice",
            "reingest: overwrite a changed file's region in place",
            choices=ON_CHANGED,
            default="fail",
        ),
        "schedule": Field(
            "custom",
            "when icepipe schedule serve/export runs it: cron, or {cron, timezone}",
            schema={
                "oneOf": [
                    _SCHEDULE_CRON,
                    {
                        "type": "object",
                        "required": ["cron"],
                        "additionalProperties": False,
                        "properties": {
                            "cron": _SCHEDULE_CRON,
                            "timezone": {
                                "type": "string",
                                "minLength": 1,
                                "description": "IANA zone",
                                "default": "UTC",
                            },
                        },
                    },
                ]
            },
        ),
        "cluster": Field(
            "string",
            "the Dask cluster runs use: 'module:factory' returning a distributed.Client or a "
            "cluster object (imported from the pipeline's folder first)",
            schema={"pattern": CALLABLE_PATTERN},
        ),
    },
    # chunks, shards and compression apply to mode: native only.
    schema={
        "if": {"not": {"required": ["mode"], "properties": {"mode": {"const": "native"}}}},
        "then": {"properties": {"chunks": False, "shards": False, "compression": False}},
    },
)
_TOP_KEYS = frozenset(PIPELINE.fields)
_SOURCE_KEYS = frozenset(SOURCE_FIELDS)


def pipeline_from_dict(
    raw: object, base_dir: str | os.PathLike[str], *, path: str | None = None
) -> Pipeline:
    """Validate a parsed pipeline mapping (see :func:`load_pipeline`).

    Sections are checked in the order they are documented (``name``, ``mode``, ``source``,
    ``target``, the native layout, ``schedule``): the first problem found is reported.

    Raises
    ------
    ConfigError
        The mapping does not follow the schema.
    """
    base = Path(base_dir)
    top = _mapping(raw, "pipeline")
    _no_unknown(top, _TOP_KEYS, "")
    name = _required_str(top, "name", "")
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"expected letters, digits, '_', '-' or '.', starting with a letter or digit; "
            f"got {name!r}",
            field="name",
        )
    mode = _choice(top, "mode", "", MODES, default="virtual")
    on_error = _choice(top, "on_error", "", ON_ERROR, default="fail")
    on_changed = _choice(top, "on_changed", "", ON_CHANGED, default="fail")
    source = _source(_mapping(top.get("source"), "source"), base)
    tgt = _mapping(top.get("target"), "target")
    target_storage = parse_storage_options(tgt, "target.")  # first: it refuses pasted secrets
    _no_unknown(tgt, TARGET_FIELDS, "target.")
    repo = _required_str(tgt, "repo", "target.")
    repo_settings = parse_repo_config(tgt.get("config"), "target.config")
    branch = _str(tgt, "branch", "target.") or "main"
    group = _group_path(_str(tgt, "group", "target."))
    native = _native(top, mode, source.concat_dim)
    return Pipeline(
        native=native,
        on_error=cast(OnError, on_error),
        on_changed=cast(OnChanged, on_changed),
        name=name,
        source=source,
        target=_target(
            repo,
            source.urls,
            source.is_glob,
            base,
            branch,
            group,
            target_storage,
            repo_settings,
            tgt,
        ),
        mode=cast(Mode, mode),
        path=path,
        schedule=parse_schedule(top.get("schedule")),
        cluster=_cluster(top),
    )


def _cluster(top: Mapping[str, Any]) -> str | None:
    """``cluster: "module:factory"`` (imported from the pipeline's folder first)."""
    spec = _str(top, "cluster", "")
    if spec is not None:
        split_callable(spec, what="cluster factory", field="cluster")
    return spec


def _source(src: Mapping[str, Any], base: Path) -> SourceSpec:
    """The ``source`` section; ``base`` is the folder relative paths resolve against."""
    _no_unknown(src, _SOURCE_KEYS, "source.")
    urls, is_glob = _source_urls(src, base)
    fmt = _choice(src, "format", "source.", FORMATS, default="auto")
    concat_dim, stack_dims = _concat_dims(src)
    merge = src.get("merge", False)
    if not isinstance(merge, bool):
        raise ConfigError(f"expected true or false; got {_describe(merge)}", field="source.merge")
    order_by = _str(src, "order_by", "source.")
    variables = _str_list(src, "variables", "source.")
    drop_variables = _str_list(src, "drop_variables", "source.") or ()
    grib_cubes = _grib_cubes(src, fmt)
    preprocess = _str(src, "preprocess", "source.")
    if preprocess is not None:
        split_callable(preprocess, what="preprocess hook", field="source.preprocess")
    if variables is not None and drop_variables:
        raise ConfigError(
            "give either source.variables (keep these) or source.drop_variables, not both",
            field="source.drop_variables",
        )
    source_group = _str(src, "group", "source.")
    if source_group is not None:
        source_group = source_group.strip("/") or None
    if source_group is not None and fmt in ("netcdf3", "grib"):
        raise ConfigError(
            f"{fmt} files have no groups; remove source.group, or set source.format to "
            "netcdf4, zarr or auto",
            field="source.group",
        )
    return SourceSpec(
        urls=urls,
        concat_dim=concat_dim,
        format=cast(Format, fmt),
        is_glob=is_glob,
        order_by=order_by,
        variables=variables,
        drop_variables=drop_variables,
        preprocess=preprocess,
        stack_dims=stack_dims,
        merge=merge,
        grib_cube=_str(src, "grib_cube", "source."),
        grib_cubes=grib_cubes,
        search_path=str(base),
        storage=_source_storage(src, urls),
        group=source_group,
        geotiff=_geotiff(src, fmt, concat_dim),
    )


def _geotiff(src: Mapping[str, Any], fmt: str, concat_dim: str) -> GeoTiffSpec:
    """``source.geotiff``: only with ``format: geotiff``, which needs it to stack files along
    a dimension GeoTIFFs do not have (``time``)."""
    raw = src.get("geotiff")
    if raw is not None and fmt != "geotiff":
        raise ConfigError(
            "applies to format: geotiff only; set source.format: geotiff, or remove it",
            field="source.geotiff",
        )
    m = _mapping(raw if raw is not None else {}, "source.geotiff")
    _no_unknown(m, GEOTIFF_FIELDS, "source.geotiff.")
    for key in ("time_from_filename", "band_from_filename"):
        pattern = _str(m, key, "source.geotiff.")
        try:
            if pattern is not None and re.compile(pattern).groups < 1:
                raise ConfigError(
                    f"expected a regular expression with a group around the value; got "
                    f"{pattern!r} (e.g. '_(\\d{{8}})\\.tif$')",
                    field=f"source.geotiff.{key}",
                )
        except re.error as exc:
            raise ConfigError(
                f"not a regular expression ({exc}): {pattern!r}", field=f"source.geotiff.{key}"
            ) from exc
    overview = m.get("overview", 0)
    if isinstance(overview, bool) or not isinstance(overview, int) or overview < 0:
        raise ConfigError(
            f"expected a whole number >= 0; got {_describe(overview)}",
            field="source.geotiff.overview",
        )
    spec = GeoTiffSpec(
        variable=_str(m, "variable", "source.geotiff.") or "band_data",
        time_from_filename=_str(m, "time_from_filename", "source.geotiff."),
        time_from_tag=_str(m, "time_from_tag", "source.geotiff."),
        time_format=_str(m, "time_format", "source.geotiff."),
        band_from_filename=_str(m, "band_from_filename", "source.geotiff."),
        overview=overview,
    )
    if spec.time_from_filename and spec.time_from_tag:
        raise ConfigError(
            "give either time_from_filename or time_from_tag", field="source.geotiff.time_from_tag"
        )
    timed = spec.time_from_filename or spec.time_from_tag
    if fmt == "geotiff" and concat_dim not in ("band", "y", "x") and not timed:
        raise ConfigError(
            f"GeoTIFF files have no {concat_dim!r} dimension: set source.geotiff."
            "time_from_filename (a regular expression taking the time from each file name) or "
            "time_from_tag, or set source.concat_dim: band",
            field="source.geotiff",
        )
    return spec


def _source_urls(src: Mapping[str, Any], base: Path) -> tuple[tuple[str, ...], bool]:
    """``source.urls`` as canonical URLs, and whether it is one glob pattern."""
    urls_raw = src.get("urls")
    if isinstance(urls_raw, str):
        if not urls_raw.strip():
            raise ConfigError(
                "expected a glob pattern or a list of paths; got ''", field="source.urls"
            )
        return (_resolve_url(urls_raw, base),), True
    if isinstance(urls_raw, list) and urls_raw:
        if not all(isinstance(u, str) and u.strip() for u in urls_raw):
            raise ConfigError("expected a list of non-empty path/URL strings", field="source.urls")
        return tuple(_resolve_url(u, base) for u in urls_raw), False
    if urls_raw is None:
        raise ConfigError(
            "missing; expected a glob pattern or a list of paths", field="source.urls"
        )
    raise ConfigError(
        f"expected a glob pattern or a non-empty list of paths; got {_describe(urls_raw)}",
        field="source.urls",
    )


def _concat_dims(src: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """``source.concat_dim`` or ``source.concat_dims``: the append dimension, and the others."""
    concat_dims = _str_list(src, "concat_dims", "source.")
    if concat_dims is None:
        return _required_str(src, "concat_dim", "source."), ()
    if "concat_dim" in src:
        raise ConfigError(
            "give either concat_dim or concat_dims (whose first entry is the dimension "
            "new files are appended along)",
            field="source.concat_dims",
        )
    if len(set(concat_dims)) != len(concat_dims):
        raise ConfigError(f"repeated dimension in {list(concat_dims)}", field="source.concat_dims")
    return concat_dims[0], concat_dims[1:]


def _native(top: Mapping[str, Any], mode: str, concat_dim: str) -> NativeSpec:
    """``chunks``, ``shards`` and ``compression`` (``mode: native`` only)."""
    chunks = _chunk_map(top, concat_dim) or {}
    shards = _dim_map(top, "shards")
    compression = _choice(top, "compression", "", COMPRESSIONS, default="zstd")
    if mode != "native" and (chunks or shards or "compression" in top):
        raise ConfigError(
            "chunks, shards and compression apply to mode: native only; remove them or set "
            "mode: native",
            field="chunks" if chunks else ("shards" if shards else "compression"),
        )
    rule = chunks.get(concat_dim)
    if isinstance(rule, str) and shards:
        # zarr 3.4: "Rectilinear chunks with sharding is not supported".
        raise ConfigError(
            f"shards cannot be combined with chunks.{concat_dim}: {rule} (chunks that follow "
            "the files or the calendar form a rectilinear grid, which Zarr cannot shard); "
            f"remove shards, or give chunks.{concat_dim} a length",
            field="shards",
        )
    for dim, n in (shards or {}).items():
        c = chunks.get(dim)
        if c is None or n % int(c):
            raise ConfigError(
                f"the shard length of {dim!r} ({n}) must be a multiple of its chunk length "
                f"(chunks.{dim}: {c if c is not None else 'not set'})",
                field=f"shards.{dim}",
            )
    return NativeSpec(chunks=chunks, shards=shards, compression=compression)


def _chunk_map(top: Mapping[str, Any], concat_dim: str) -> dict[str, int | str] | None:
    """``chunks``: a length per dimension, or for ``concat_dim`` a rule (``file``, ``day``,
    ``month``, ``year``)."""
    value = top.get("chunks")
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"expected a mapping of dimension name to length; got {_describe(value)}",
            field="chunks",
        )
    out: dict[str, int | str] = {}
    rules = ", ".join(CHUNK_RULES)
    for dim, n in value.items():
        if isinstance(n, str) and n in CHUNK_RULES:
            if str(dim) != concat_dim:
                raise ConfigError(
                    f"{n!r} chunks apply to the concat dimension ({concat_dim!r}) only; give "
                    f"{dim!r} a chunk length (a positive integer)",
                    field=f"chunks.{dim}",
                )
            out[str(dim)] = n
            continue
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            allowed = (
                f"a positive integer, or one of {rules}"
                if str(dim) == concat_dim
                else ("a positive integer")
            )
            raise ConfigError(f"expected {allowed}; got {_describe(n)}", field=f"chunks.{dim}")
        out[str(dim)] = n
    return out


def _group_path(value: str | None) -> str | None:
    """``target.group`` as a Zarr group path (``a/b``), or None for the root group.

    Zarr node names cannot be ``.`` or ``..``, empty, or start with ``__`` (reserved): such a
    path fails only when the first array is written, after the whole scan.
    """
    if value is None:
        return None
    path = value.strip("/")
    if not path:
        return None
    for name in path.split("/"):
        reason = (
            "an empty name (two '/' in a row)"
            if not name
            else f"the name {name!r}, which Zarr does not allow"
            if name in (".", "..")
            else f"the name {name!r}, starting with '__', which Zarr reserves"
            if name.startswith("__")
            else f"the name {name!r}, holding a control character"
            if any(ord(c) < 32 or ord(c) == 127 for c in name)
            else None
        )
        if reason:
            raise ConfigError(
                f"the group path {value!r} has {reason}; give names separated by '/' (e.g. "
                "'sst' or 'ocean/sst'), or leave target.group out for the root group",
                field="target.group",
            )
    return path


def _resolve_url(value: str, base: Path) -> str:
    value = value.strip()
    if value.startswith("file://"):
        return "file://" + os.path.normpath(base / value[len("file://") :])
    if _URL_SCHEME_RE.match(value):
        return _canonical_object_url(value, SOURCE_SCHEMES, "source.urls")
    # One canonical URL per file (no "..", no "//"): the ingest ledger compares URLs.
    return "file://" + os.path.normpath(base / os.path.expanduser(value))


def _canonical_object_url(value: str, schemes: tuple[str, ...], where: str) -> str:
    refuse_credentials_in_url(value, where)
    scheme, bucket, key = split_url(value)
    if scheme not in schemes:
        raise ConfigError(
            f"unsupported URL scheme {scheme!r} in {value!r}; use a local path or one of "
            f"{', '.join(s + '://' for s in schemes)}",
            field=where,
        )
    key = key.strip("/")
    if not bucket or not key:
        raise ConfigError(
            f"expected {scheme}://{'HOST' if scheme.startswith('http') else 'BUCKET'}/PATH; "
            f"got {value!r}",
            field=where,
        )
    # One canonical URL per object (no "..", no "//"): the ingest ledger compares URLs.
    return f"{scheme}://{bucket}/{posixpath.normpath(key)}"


def _resolve_repo(value: str, base: Path) -> str:
    value = value.strip()
    if value.startswith("file://"):
        value = value[len("file://") :]
    elif _URL_SCHEME_RE.match(value):
        return _canonical_object_url(value, REPO_SCHEMES, "target.repo")
    return os.path.normpath(base / os.path.expanduser(value))


def _source_storage(src: Mapping[str, Any], urls: tuple[str, ...]) -> StorageOptions:
    """``source.storage``: how to reach object-store sources (not allowed for local ones)."""
    raw = src.get("storage")
    if raw is None:
        return StorageOptions()
    m = _mapping(raw, "source.storage")
    options = parse_storage_options(m, "source.storage.")
    _no_unknown(m, set(STORAGE_KEYS), "source.storage.")
    if all(scheme_of(u) == "file" for u in urls):
        raise ConfigError(
            "applies to sources in object stores or on http(s) servers, and source.urls names "
            "local files; remove it",
            field="source.storage",
        )
    return options


def _target(
    repo: str,
    urls: tuple[str, ...],
    is_glob: bool,
    base: Path,
    branch: str,
    group: str | None,
    storage: StorageOptions,
    settings: dict[str, Any],
    raw: Mapping[str, Any],
) -> TargetSpec:
    repo, storage, settings = _catalog_target(repo, storage, settings, base=base)  # org/name
    location = _resolve_repo(repo, base)
    if is_local(location) and not storage.is_default:
        key = next(k for k in sorted(STORAGE_KEYS) if k in raw)
        raise ConfigError(
            f"applies to repositories in object stores (s3://BUCKET/PREFIX), and target.repo "
            f"is the local path {location!r}; remove it",
            field=f"target.{key}",
        )
    _check_sources_outside(urls, is_glob, location)
    return TargetSpec(
        repo=location,
        branch=branch,
        group=group,
        storage=storage,
        config=settings,
    )


# Objects Icechunk (and icepipe's lock and staging folder, beside it) write for a repository.
_REPO_OBJECTS = (
    "/repo",
    "/config.yaml",
    "/snapshots/1CECHNKREP0F1RSTCMT0",
    "/manifests/0123456789ABCDEFGHJK",
    "/chunks/0123456789ABCDEFGHJK",
    "/transactions/0123456789ABCDEFGHJK",
    "/refs/branch.main/ref.json",
)


def _check_sources_outside(urls: tuple[str, ...], is_glob: bool, repo: str) -> None:
    """Refuse sources that name the pipeline's own repository: its internal objects would be
    listed as source files, and fail one by one as corrupt."""
    root = ("file://" + repo if is_local(repo) else repo).rstrip("/")
    folder, _, name = root.rpartition("/")
    owned = [root + o for o in _REPO_OBJECTS] + [
        f"{folder}/.{name}.icepipe.lock",
        f"{folder}/.{name}.icepipe-creating-0/repo",
    ]
    if is_glob:
        regex = glob_to_regex(urls[0])
        hits = [u for u in owned if regex.match(u)]
    else:
        hits = [u for u in urls if u == root or u.startswith(root + "/") or u in owned]
    if hits:
        raise ConfigError(
            f"source.urls {urls[0] if is_glob else hits[0]!r} covers the pipeline's own "
            f"repository {repo!r} (e.g. {hits[0]!r}); narrow the glob (e.g. '*.nc'), or move "
            "target.repo out of the source folder",
            field="source.urls",
        )


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        raise ConfigError("missing; expected a mapping", field=where)
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping; got {_describe(value)}", field=where)
    return cast(Mapping[str, Any], value)


def _required_str(m: Mapping[str, Any], key: str, prefix: str) -> str:
    value = _str(m, key, prefix)
    if value is None:
        raise ConfigError("missing; expected a string", field=prefix + key)
    return value


def _dim_map(m: Mapping[str, Any], key: str) -> dict[str, int] | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"expected a mapping of dimension name to length; got {_describe(value)}", field=key
        )
    out: dict[str, int] = {}
    for dim, n in value.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(
                f"expected a positive integer; got {_describe(n)}", field=f"{key}.{dim}"
            )
        out[str(dim)] = n
    return out


def _grib_cubes(src: Mapping[str, Any], fmt: str) -> tuple[str, ...] | None:
    """``source.grib_cubes``: ``all`` (every hypercube: ``()``) or a list of cube names."""
    raw = src.get("grib_cubes")
    if raw is None:
        return None
    if fmt != "grib":
        raise ConfigError(
            f"applies to format: grib only; got format: {fmt}", field="source.grib_cubes"
        )
    if src.get("grib_cube") is not None:
        raise ConfigError(
            "set either grib_cube (one hypercube, into target.group) or grib_cubes (several, "
            "each into <target.group>/<cube>), not both",
            field="source.grib_cubes",
        )
    if src.get("concat_dims") is not None or src.get("merge"):
        raise ConfigError(
            "grib_cubes cannot be combined with concat_dims or merge yet; run one pipeline per "
            "hypercube (grib_cube) instead",
            field="source.grib_cubes",
        )
    if raw == "all":
        return ()
    names = _str_list(src, "grib_cubes", "source.") if isinstance(raw, list) and raw else None
    if not names:
        raise ConfigError(
            f"expected 'all' or a non-empty list of hypercube names; got {_describe(raw)}",
            field="source.grib_cubes",
        )
    return names


def _str_list(m: Mapping[str, Any], key: str, prefix: str) -> tuple[str, ...] | None:
    value = m.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise ConfigError(
            f"expected a non-empty list of names; got {_describe(value)}", field=prefix + key
        )
    return tuple(v.strip() for v in value)


def _choice(
    m: Mapping[str, Any], key: str, prefix: str, choices: tuple[str, ...], *, default: str
) -> str:
    value = m.get(key, default)
    if value not in choices:
        guess = did_you_mean(value, choices) if isinstance(value, str) else None
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise ConfigError(
            f"expected one of {', '.join(choices)}; got {_describe(value)}{hint}",
            field=prefix + key,
        )
    return cast(str, value)
