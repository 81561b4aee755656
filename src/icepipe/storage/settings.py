"""Repository settings (``target.config``): validated into a plain nested dict.

A leaf module: :mod:`icepipe.repository` builds an ``icechunk.RepositoryConfig`` from what
:func:`parse_repo_config` returns; :mod:`icepipe.spec`, :mod:`icepipe.catalog` and
:mod:`icepipe.ops` validate with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from icepipe.errors import ConfigError
from icepipe.fields import describe as _describe
from icepipe.fields import no_unknown

__all__ = ["parse_repo_config", "repo_config_json_schema"]

# Repository settings (``target.config``): a schema of nested mappings whose leaves are
# (kind, minimum). Built into an icechunk.RepositoryConfig by icepipe.repository.
_INT0 = ("int", 0)
_INT1 = ("int", 1)
_STR = ("str", None)
_REPO_CONFIG_SCHEMA: dict[str, Any] = {
    "inline_chunk_threshold_bytes": _INT0,
    "get_partial_values_concurrency": _INT1,
    "max_concurrent_requests": _INT1,
    "compression": {"level": _INT1},
    "caching": {
        "num_snapshot_nodes": _INT0,
        "num_chunk_refs": _INT0,
        "num_transaction_changes": _INT0,
        "num_bytes_attributes": _INT0,
        "num_bytes_chunks": _INT0,
    },
    "storage": {
        "concurrency": {
            "max_concurrent_requests_for_object": _INT1,
            "ideal_concurrent_request_size": _INT1,
        },
        "retries": {"max_tries": _INT1, "initial_backoff_ms": _INT0, "max_backoff_ms": _INT0},
        "timeouts": {
            "connect_timeout_ms": _INT1,
            "read_timeout_ms": _INT1,
            "operation_timeout_ms": _INT1,
            "operation_attempt_timeout_ms": _INT1,
        },
        "storage_class": _STR,
        "metadata_storage_class": _STR,
        "chunks_storage_class": _STR,
        "minimum_size_for_multipart_upload": _INT1,
    },
    "manifest": {
        "preload": "preload",
        "splitting": "splitting",
    },
}
_PRELOAD_SCHEMA: dict[str, Any] = {
    "max_total_refs": _INT0,
    "max_arrays_to_scan": _INT0,
    "names": ("regex", None),
}


def parse_repo_config(raw: object, field: str = "target.config") -> dict[str, Any]:
    """Validate ``target.config`` (Icechunk repository settings) into a plain nested dict.

    Supported keys mirror ``icechunk.RepositoryConfig``: ``inline_chunk_threshold_bytes``,
    ``get_partial_values_concurrency``, ``max_concurrent_requests``, ``compression.level``,
    ``caching.*``, ``storage.{concurrency,retries,timeouts}.*`` and storage classes,
    ``manifest.preload`` (``false`` or ``{max_total_refs, max_arrays_to_scan, names}``) and
    ``manifest.splitting`` (a list of ``{arrays: REGEX, dims: {DIM or '*': N}}``).

    Raises
    ------
    ConfigError
        An unknown key, a wrong type or an out-of-range value, naming the dotted field.
    """
    if raw is None:
        return {}
    return cast(dict[str, Any], _check(raw, _REPO_CONFIG_SCHEMA, field))


def repo_config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``target.config``, from the schema
    :func:`parse_repo_config` checks against."""
    return _json(_REPO_CONFIG_SCHEMA)


def _json(schema: Any) -> dict[str, Any]:
    if isinstance(schema, dict):
        return {
            "type": "object",
            "properties": {k: _json(v) for k, v in schema.items()},
            "additionalProperties": False,
        }
    if schema == "preload":
        return {"oneOf": [{"const": False}, _json(_PRELOAD_SCHEMA)]}
    if schema == "splitting":
        rule = {
            "type": "object",
            "properties": {
                "arrays": _json(("regex", None)),
                "dims": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": _json(_INT1),
                },
            },
            "required": ["dims"],
            "additionalProperties": False,
        }
        return {"type": "array", "minItems": 1, "items": rule}
    kind, minimum = schema
    if kind == "int":
        return {"type": "integer", "minimum": minimum}
    return {"type": "string", "minLength": 1, **({"format": "regex"} if kind == "regex" else {})}


def _check(value: object, schema: Any, where: str) -> Any:
    if isinstance(schema, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping; got {_describe(value)}", field=where)
        if "storage" in where and any(str(k).startswith("unsafe_") for k in value):
            key = next(str(k) for k in value if str(k).startswith("unsafe_"))
            raise ConfigError(
                "icepipe relies on the conditional writes of object stores to never lose a "
                "racing commit; this setting cannot be changed from a pipeline",
                field=f"{where}.{key}",
            )
        no_unknown(value, schema, f"{where}.")
        return {str(k): _check(v, schema[k], f"{where}.{k}") for k, v in value.items()}
    if schema == "preload":
        if value is False:
            return False
        return _check(value, _PRELOAD_SCHEMA, where)
    if schema == "splitting":
        return _splitting(value, where)
    kind, minimum = schema
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(
                f"expected an integer >= {minimum}; got {_describe(value)}", field=where
            )
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string; got {_describe(value)}", field=where)
    if kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"not a valid regular expression: {exc}", field=where) from exc
    return value


def _splitting(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            "expected a list of {arrays: REGEX, dims: {DIM: N}} rules (arrays optional: all "
            f"arrays); got {_describe(value)}",
            field=where,
        )
    rules = []
    for i, rule in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(rule, Mapping):
            raise ConfigError(f"expected a mapping; got {_describe(rule)}", field=at)
        no_unknown(rule, ("arrays", "dims"), f"{at}.")
        dims = rule.get("dims")
        if not isinstance(dims, Mapping) or not dims:
            raise ConfigError(
                "expected a mapping of dimension name (or '*' for any) to the number of chunks "
                f"per manifest; got {_describe(dims)}",
                field=f"{at}.dims",
            )
        checked = {
            "dims": {str(d): _check(n, _INT1, f"{at}.dims.{d}") for d, n in dims.items()},
        }
        if "arrays" in rule:
            checked["arrays"] = _check(rule["arrays"], ("regex", None), f"{at}.arrays")
        rules.append(checked)
    return rules
