"""Storage options and credentials: how to reach an object store, and where secrets come from.

A leaf module (no icechunk, obstore or xarray): the scheme modules of :mod:`icepipe.storage`
build obstore stores from these plain, picklable values, :mod:`icepipe.repository` builds
Icechunk storages and containers from them, and :mod:`icepipe.spec` validates the pipeline's
storage sections with :func:`parse_storage_options`.

Secrets never live in these values. A pipeline names *environment variables*
(``access_key_id_env: ...``); :func:`resolve_s3_credentials` reads them in whichever process
needs them, the client or a Dask worker, at the moment it needs them. Without names, the
standard chains of the libraries apply (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, web identity, instance metadata).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from icepipe.errors import ConfigError
from icepipe.fields import Field, optional_str
from icepipe.fields import describe as _describe
from icepipe.storage.urls import refuse_credentials_in_url

__all__ = [
    "REACH_KEYS",
    "STORAGE_FIELDS",
    "STORAGE_KEYS",
    "S3Secrets",
    "StorageOptions",
    "coerce_storage_options",
    "parse_storage_options",
    "resolve_s3_credentials",
    "secret_key_message",
]

_ENV_DOC = "the NAME of an environment variable holding the {} (never the secret itself)"
_ENV_SCHEMA = {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
#: The storage keys of ``target:`` and ``source.storage:`` (see :class:`StorageOptions`).
STORAGE_FIELDS: dict[str, Field] = {
    "endpoint": Field(
        "string",
        "http(s)://host:port of an S3-compatible service (MinIO, Ceph, SeaweedFS, R2, ...)",
        schema={"pattern": "^https?://"},
    ),
    "region": Field("string", "the bucket's region (us-east-1 when an endpoint has none)"),
    "force_path_style": Field("boolean", "path-style addressing (most S3-compatible services)"),
    "allow_http": Field("boolean", "allow an unencrypted http:// endpoint (local test servers)"),
    "anonymous": Field("boolean", "unsigned requests, for public buckets"),
    "access_key_id_env": Field("string", _ENV_DOC.format("access key id"), schema=_ENV_SCHEMA),
    "secret_access_key_env": Field(
        "string", _ENV_DOC.format("secret access key"), schema=_ENV_SCHEMA
    ),
    "session_token_env": Field("string", _ENV_DOC.format("session token"), schema=_ENV_SCHEMA),
}
STORAGE_KEYS: frozenset[str] = frozenset(STORAGE_FIELDS)
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
#: The options saying how to reach a store (no credential names): persisted per container.
REACH_KEYS: tuple[str, ...] = ("endpoint", "region", "force_path_style", "allow_http", "anonymous")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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

    def reach(self) -> dict[str, Any]:
        """How to reach the store, without credential names: what icepipe persists next to a
        virtual chunk container it configures (see :meth:`from_reach`)."""
        return {k: getattr(self, k) for k in REACH_KEYS}

    def with_reach(self, record: Mapping[str, Any]) -> StorageOptions:
        """These options (the reader's credential choice) reaching the store as ``record``
        (from :meth:`reach`) says; ``anonymous`` stays set when either says so.

        Raises
        ------
        ConfigError
            ``record`` is not a mapping of the :data:`REACH_KEYS` with their types.
        """
        if not isinstance(record, Mapping) or set(record) - set(REACH_KEYS):
            raise ConfigError(f"not a record of storage options: {_describe(record)}")
        values = {k: record[k] for k in REACH_KEYS if k in record}
        for key, value in values.items():
            wanted = str if key in ("endpoint", "region") else bool
            if not (value is None and wanted is str) and not isinstance(value, wanted):
                raise ConfigError(f"not a record of storage options: {key}={_describe(value)}")
        values["anonymous"] = self.anonymous or bool(values.get("anonymous", False))
        return dataclasses.replace(self, **values)


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


# ----------------------------------------------------------------------------------------------
# Validation of the pipeline's storage sections
# ----------------------------------------------------------------------------------------------


def secret_key_message(key: str, prefix: str = "") -> str | None:
    """Why ``key`` is refused in a storage section (it names a secret), or None."""
    if key.lower() not in _SECRET_KEYS:
        return None
    return (
        "secrets never go into a pipeline file (it is recorded in commit metadata and "
        "logs): put the value in an environment variable and name the variable with "
        f"{prefix}access_key_id_env / secret_access_key_env / session_token_env, or "
        "rely on the standard AWS_* variables and profiles"
    )


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
        refused = secret_key_message(str(key), prefix)
        if refused:
            raise ConfigError(refused, field=prefix + str(key))

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
