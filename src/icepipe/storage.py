"""Where data lives: locations, storage options, credentials and repository settings.

A leaf module (no icechunk, obstore or xarray): :mod:`icepipe.sources` builds obstore stores
and :mod:`icepipe.repository` builds Icechunk storages from the plain, picklable values defined
here, and :mod:`icepipe.spec` validates the pipeline's storage sections with it.

Secrets never live in these values. A pipeline names *environment variables*
(``access_key_id_env: ...``); :func:`resolve_s3_credentials` reads them in whichever process
needs them, the client or a Dask worker, at the moment it needs them. Without names, the
standard chains of the libraries apply (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, web identity, instance metadata).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from icepipe.errors import ConfigError
from icepipe.fields import describe as _describe
from icepipe.fields import no_unknown, optional_str

__all__ = [
    "OBJECT_SCHEMES",
    "REPO_SCHEMES",
    "SOURCE_SCHEMES",
    "STORAGE_KEYS",
    "S3Secrets",
    "StorageOptions",
    "coerce_storage_options",
    "is_local",
    "refuse_credentials_in_url",
    "parse_repo_config",
    "parse_storage_options",
    "reference_url",
    "resolve_s3_credentials",
    "scheme_of",
    "split_url",
]

#: Object stores icepipe reads sources from and writes repositories to.
OBJECT_SCHEMES: tuple[str, ...] = ("s3", "gs", "az")
#: URL schemes accepted in ``source.urls`` (``http``/``https``: explicit lists only).
SOURCE_SCHEMES: tuple[str, ...] = ("file", *OBJECT_SCHEMES, "http", "https")
#: URL schemes accepted in ``target.repo``.
REPO_SCHEMES: tuple[str, ...] = ("file", *OBJECT_SCHEMES)

#: The storage keys of ``target:`` and ``source.storage:``.
STORAGE_KEYS: frozenset[str] = frozenset(
    {
        "endpoint",
        "region",
        "force_path_style",
        "allow_http",
        "anonymous",
        "access_key_id_env",
        "secret_access_key_env",
        "session_token_env",
    }
)
# Keys people write when they paste a secret into the pipeline: refused with the fix.
_SECRET_KEYS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "key",
        "secret",
        "token",
        "password",
        "credentials",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


@dataclass(frozen=True)
class StorageOptions:
    """How to reach an object store: endpoint, addressing, and where credentials come from.

    Every field is optional; the defaults reach AWS S3 with the standard credential chain.
    Instances hold no secret (only environment variable *names*), so they travel to Dask
    workers inside tasks, where credentials are resolved from the worker's environment.

    Attributes
    ----------
    endpoint
        ``http(s)://host:port`` of an S3-compatible service (MinIO, Ceph, SeaweedFS, R2, ...).
    region
        The bucket's region (``us-east-1`` when an endpoint is given without one).
    force_path_style
        ``http://host/bucket/key`` addressing instead of ``http://bucket.host/key``; most
        S3-compatible services need it.
    allow_http
        Allow unencrypted ``http://`` endpoints (local test servers).
    anonymous
        Unsigned requests, for public buckets; no credentials are looked up.
    access_key_id_env, secret_access_key_env, session_token_env
        Names of environment variables holding the credentials, read where they are used.
    """

    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = False
    allow_http: bool = False
    anonymous: bool = False
    # Not in the repr: a secret pasted here by mistake must not reach logs and messages.
    access_key_id_env: str | None = field(default=None, repr=False)
    secret_access_key_env: str | None = field(default=None, repr=False)
    session_token_env: str | None = field(default=None, repr=False)

    @property
    def is_default(self) -> bool:
        """Whether no option is set (plain AWS S3, standard credential chain)."""
        return self == StorageOptions()

    @property
    def effective_region(self) -> str | None:
        """The region to use: the configured one; ``us-east-1`` for custom endpoints."""
        if self.region:
            return self.region
        return "us-east-1" if self.endpoint else None


@dataclass(frozen=True, repr=False)
class S3Secrets:
    """Credentials read from the environment. Never pickled into tasks, logged or printed."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "S3Secrets(<redacted>)"

    def __reduce__(self) -> Any:
        raise TypeError(
            "S3Secrets must not be pickled: send StorageOptions (environment variable names) "
            "to workers and resolve the credentials there"
        )


def resolve_s3_credentials(options: StorageOptions) -> S3Secrets | None:
    """The credentials named by ``options``, read from this process's environment.

    Returns ``None`` when ``options`` names no variables (anonymous access, or the standard
    credential chain of the library doing the request).

    Raises
    ------
    ConfigError
        A named variable is not set (the message names the variable, never a value).
    """
    if options.anonymous or options.access_key_id_env is None:
        return None
    names = {
        "access_key_id_env": options.access_key_id_env,
        "secret_access_key_env": options.secret_access_key_env,
        "session_token_env": options.session_token_env,
    }
    values: dict[str, str | None] = {}
    for key, name in names.items():
        if name is None:
            values[key] = None
            continue
        value = os.environ.get(name)
        if not value:
            # The variable's name is not shown: a secret pasted into a *_env key by mistake
            # can look like a variable name, and messages end up in logs and run reports.
            raise ConfigError(
                f"the environment variable named by {key} is not set (or empty) in this "
                f"process (pid {os.getpid()}); export it where icepipe and its Dask workers "
                f"run, and check that {key} holds the variable's NAME, not the secret itself"
            )
        values[key] = value
    return S3Secrets(
        access_key_id=cast(str, values["access_key_id_env"]),
        secret_access_key=cast(str, values["secret_access_key_env"]),
        session_token=values["session_token_env"],
    )


def refuse_credentials_in_url(url: str, where: str) -> None:
    """Refuse a URL with ``user:password@`` in it, without echoing it.

    Such URLs end up in places every reader sees: the repository config (endpoints of virtual
    chunk containers), commit metadata, run reports and logs.

    Raises
    ------
    ConfigError
        The URL holds credentials (the message shows it with them removed).
    """
    m = _URL_SCHEME.match(url.strip())
    if not m:
        return
    rest = url.strip()[m.end() :]
    netloc = rest.split("/", 1)[0]
    if "@" not in netloc:
        return
    shown = f"{m.group(1)}://***@{netloc.rsplit('@', 1)[1]}"
    raise ConfigError(
        f"the URL ({shown}...) holds credentials (user:password@): they would be stored where "
        "every reader of the repository sees them. Remove them from the URL and name the "
        "environment variables holding them instead (access_key_id_env / "
        "secret_access_key_env); the given value is not shown",
        field=where,
    )


def scheme_of(url: str) -> str:
    """The URL scheme (``s3``, ``https``, ...); ``file`` for plain paths."""
    m = _URL_SCHEME.match(url)
    return m.group(1).lower() if m else "file"


def is_local(location: str) -> bool:
    """Whether ``location`` is a local path or ``file://`` URL."""
    return scheme_of(location) == "file"


def split_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b.nc`` -> ``("s3", "bucket", "a/b.nc")``; ``https://host/p`` ->
    ``("https", "host", "p")``; ``file:///a/b`` -> ``("file", "", "/a/b")``."""
    scheme = scheme_of(url)
    if scheme == "file":
        return "file", "", url.removeprefix("file://")
    rest = url[len(scheme) + 3 :]
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


def reference_url(url: str) -> str:
    """The URL that virtual references to the source ``url`` store: its path percent-encoded
    (letters, digits, ``-._~/`` stay), so that URL parsers find exactly that file.

    Icechunk parses (normalising spaces, non-ASCII ...) and decodes the URLs of references, and
    VirtualiZarr cuts them at ``#`` and ``?``: a file named ``a%20b.nc`` would be read as
    ``a b.nc``. Encoded, every name means itself, and the virtual chunk containers (prefixes of
    these URLs) match what Icechunk compares them with. icepipe's own identifiers (the ledger,
    messages) keep the literal ``url``. ``http(s)://`` URLs are URLs already and stay as they
    are.
    """
    from urllib.parse import quote

    scheme, bucket, key = split_url(url)
    if scheme in ("http", "https"):
        return url
    head = "file://" if scheme == "file" else f"{scheme}://{bucket}/"
    return head + quote(key, safe="/")


# ----------------------------------------------------------------------------------------------
# Validation of the pipeline's storage sections
# ----------------------------------------------------------------------------------------------


def parse_storage_options(m: Mapping[str, Any], prefix: str) -> StorageOptions:
    """Validate the :data:`STORAGE_KEYS` of a mapping (other keys are the caller's business).

    ``prefix`` is the dotted location for messages (``"target."``, ``"source.storage."``).

    Raises
    ------
    ConfigError
        A wrong type, an inconsistent combination, or a secret written into the pipeline.
        Values of ``*_env`` keys are never echoed: they might be secrets pasted by mistake.
    """
    for key in m:
        if str(key).lower() in _SECRET_KEYS:
            raise ConfigError(
                "secrets never go into a pipeline file (it is recorded in commit metadata and "
                "logs): put the value in an environment variable and name the variable with "
                f"{prefix}access_key_id_env / secret_access_key_env / session_token_env, or "
                "rely on the standard AWS_* variables and profiles",
                field=prefix + str(key),
            )

    def flag(key: str) -> bool:
        value = m.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false; got {_describe(value)}", field=prefix + key)
        return value

    def text(key: str) -> str | None:
        return optional_str(m, key, prefix)

    def env_name(key: str) -> str | None:
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not _ENV_NAME.match(value.strip()):
            # Not echoed: a secret pasted here by mistake must not reach logs.
            raise ConfigError(
                "expected the NAME of an environment variable (letters, digits and '_', e.g. "
                "MY_S3_SECRET), not its value; the given value is not shown",
                field=prefix + key,
            )
        return value.strip()

    if isinstance(m.get("endpoint"), str):
        refuse_credentials_in_url(m["endpoint"], prefix + "endpoint")
    endpoint = text("endpoint")
    allow_http = flag("allow_http")
    if endpoint is not None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"expected an http:// or https:// URL; got {endpoint!r}", field=prefix + "endpoint"
            )
        if endpoint.startswith("http://") and not allow_http:
            raise ConfigError(
                f"{endpoint!r} is unencrypted http: set {prefix}allow_http: true to allow it",
                field=prefix + "endpoint",
            )
        endpoint = endpoint.rstrip("/")
    options = StorageOptions(
        endpoint=endpoint,
        region=text("region"),
        force_path_style=flag("force_path_style"),
        allow_http=allow_http,
        anonymous=flag("anonymous"),
        access_key_id_env=env_name("access_key_id_env"),
        secret_access_key_env=env_name("secret_access_key_env"),
        session_token_env=env_name("session_token_env"),
    )
    named = [
        k
        for k in ("access_key_id_env", "secret_access_key_env", "session_token_env")
        if getattr(options, k) is not None
    ]
    if named and options.anonymous:
        raise ConfigError(
            f"anonymous access uses no credentials: remove {prefix}{named[0]} or anonymous",
            field=prefix + "anonymous",
        )
    if named and (options.access_key_id_env is None or options.secret_access_key_env is None):
        missing = (
            "access_key_id_env" if options.access_key_id_env is None else "secret_access_key_env"
        )
        raise ConfigError(
            f"missing; {prefix}{named[0]} is set, and credentials from named environment "
            "variables need both access_key_id_env and secret_access_key_env",
            field=prefix + missing,
        )
    return options


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


def coerce_storage_options(value: object, where: str) -> StorageOptions:
    """``value`` as :class:`StorageOptions`: itself, a pipeline-style mapping (validated), or
    ``None`` (the defaults). For the Python API (``storage=`` arguments).

    Raises
    ------
    ConfigError
        A bad mapping (unknown key, wrong type, a secret), naming ``where``.
    """
    if value is None:
        return StorageOptions()
    if isinstance(value, StorageOptions):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"expected a mapping of storage options or StorageOptions; got {_describe(value)}",
            field=where,
        )
    options = parse_storage_options(value, where + ".")
    unknown = sorted(str(k) for k in value if k not in STORAGE_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(sorted(STORAGE_KEYS))}",
            field=f"{where}.{unknown[0]}",
        )
    return options
