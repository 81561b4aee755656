"""The Icechunk half of each storage scheme: repository storage, virtual chunk container
store, and container credentials.

:mod:`icepipe.storage` holds one module per scheme (validation, obstore stores, what icepipe
records about a container); only this package imports icechunk, so the Icechunk objects of
each scheme are built here, by one class per scheme registered under the same
:attr:`~icepipe.storage.Scheme.name` and found with :func:`icechunk_scheme`.

Credentials are never baked into what pickles: object-store repositories and S3 containers
get either Icechunk's ``from_env`` chain or an :class:`EnvS3Credentials` callback that reads
*named* environment variables in whichever process (client or Dask worker) talks to storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import icechunk

from icepipe.errors import ConfigError
from icepipe.storage import (
    Scheme,
    StorageOptions,
    azure_account,
    resolve_s3_credentials,
    split_url,
)

__all__ = ["EnvS3Credentials", "IcechunkScheme", "icechunk_scheme"]


@dataclass(frozen=True)
class EnvS3Credentials:
    """An Icechunk credential callback reading S3 credentials from named environment variables.

    It pickles as the variable *names*: Icechunk sends it with repositories and forks to Dask
    workers, where it is called to read that worker's environment.
    """

    # Not in the repr (see StorageOptions).
    access_key_id_env: str = field(repr=False)
    secret_access_key_env: str = field(repr=False)
    session_token_env: str | None = field(default=None, repr=False)

    @classmethod
    def from_options(cls, options: StorageOptions) -> EnvS3Credentials | None:
        """The callback for ``options``' named variables (``None`` when it names none)."""
        if options.anonymous or not options.access_key_id_env or not options.secret_access_key_env:
            return None
        return cls(
            options.access_key_id_env, options.secret_access_key_env, options.session_token_env
        )

    def options(self) -> StorageOptions:
        return StorageOptions(
            access_key_id_env=self.access_key_id_env,
            secret_access_key_env=self.secret_access_key_env,
            session_token_env=self.session_token_env,
        )

    def __call__(self) -> icechunk.S3StaticCredentials:
        secrets = resolve_s3_credentials(self.options())
        if secrets is None:  # pragma: no cover - names are always set
            raise ConfigError("no credential environment variables named")
        return icechunk.S3StaticCredentials(
            access_key_id=secrets.access_key_id,
            secret_access_key=secrets.secret_access_key,
            session_token=secrets.session_token,
        )


class IcechunkScheme(ABC):
    """How Icechunk reaches one storage scheme."""

    name: ClassVar[str]

    def storage(self, bucket: str, prefix: str, options: StorageOptions) -> icechunk.Storage:
        """The storage of a repository at ``bucket``/``prefix`` (object stores only).

        Raises
        ------
        ConfigError
            Repositories cannot live there, or credentials named in ``options`` are missing.
        """
        raise ConfigError(f"{self.name}:// locations cannot hold repositories")

    @abstractmethod
    def container_store(self, prefix: str, options: StorageOptions) -> Any:
        """The store of a virtual chunk container for ``prefix``, reached as ``options`` say
        (only how to reach it is persisted; readers give credentials when they open)."""

    @abstractmethod
    def credentials(self, options: StorageOptions) -> Any:
        """The credential a reader with ``options`` authorizes the container with."""

    def legacy_reach(self, store: Any) -> dict[str, Any]:
        """What a container configured before icepipe recorded its choices says about how to
        reach it (see :meth:`icepipe.storage.Scheme.container_reach`); nothing by default."""
        return {}


class _Local(IcechunkScheme):
    name = "file"

    def container_store(self, prefix: str, options: StorageOptions) -> Any:
        return icechunk.local_filesystem_store(prefix[len("file://") :])

    def credentials(self, options: StorageOptions) -> Any:
        return icechunk.credentials.LocalFileSystemAccess


def _s3_credential_kwargs(options: StorageOptions) -> dict[str, Any]:
    """``s3_storage`` keyword arguments choosing where credentials come from (never values)."""
    if options.anonymous:
        return {"anonymous": True}
    callback = EnvS3Credentials.from_options(options)
    if callback is None:
        return {"from_env": True}
    resolve_s3_credentials(options)  # fail now, naming the missing variable
    return {"get_credentials": callback, "scatter_initial_credentials": False}


class _S3(IcechunkScheme):
    name = "s3"

    def storage(self, bucket: str, prefix: str, options: StorageOptions) -> icechunk.Storage:
        return icechunk.s3_storage(
            bucket=bucket,
            prefix=prefix,
            region=options.effective_region,
            endpoint_url=options.endpoint,
            allow_http=options.allow_http,
            force_path_style=options.force_path_style,
            **_s3_credential_kwargs(options),
        )

    def container_store(self, prefix: str, options: StorageOptions) -> Any:
        return icechunk.s3_store(
            region=options.effective_region,
            endpoint_url=options.endpoint,
            allow_http=options.allow_http,
            anonymous=options.anonymous,
            s3_compatible=options.endpoint is not None,
            force_path_style=options.force_path_style,
        )

    def credentials(self, options: StorageOptions) -> Any:
        callback = EnvS3Credentials.from_options(options)
        if options.anonymous:
            return icechunk.s3_anonymous_credentials()
        if callback is not None:
            return icechunk.s3_refreshable_credentials(callback)
        return icechunk.s3_from_env_credentials()

    def legacy_reach(self, store: Any) -> dict[str, Any]:
        # pyo3 gives the variants of ObjectStoreConfig __match_args__; the stubs do not say so.
        match store:
            case icechunk.ObjectStoreConfig.S3Compatible(s3) | icechunk.ObjectStoreConfig.S3(s3):  # type: ignore[misc]
                return {
                    "endpoint": s3.endpoint_url,
                    "region": s3.region,
                    "force_path_style": bool(s3.force_path_style),
                    "allow_http": bool(s3.allow_http),
                    "anonymous": bool(s3.anonymous),
                }
        return {}


class _GCS(IcechunkScheme):
    name = "gs"

    def storage(self, bucket: str, prefix: str, options: StorageOptions) -> icechunk.Storage:
        return icechunk.gcs_storage(
            bucket=bucket,
            prefix=prefix,
            anonymous=True if options.anonymous else None,
            from_env=None if options.anonymous else True,
        )

    def container_store(self, prefix: str, options: StorageOptions) -> Any:
        return icechunk.gcs_store()

    def credentials(self, options: StorageOptions) -> Any:
        if options.anonymous:
            return icechunk.credentials.gcs_anonymous_credentials()
        return icechunk.gcs_from_env_credentials()


class _Azure(IcechunkScheme):
    name = "az"

    def storage(self, bucket: str, prefix: str, options: StorageOptions) -> icechunk.Storage:
        return icechunk.azure_storage(
            account=azure_account(),
            container=bucket,
            prefix=prefix,
            anonymous=True if options.anonymous else None,
            from_env=None if options.anonymous else True,
        )

    def container_store(self, prefix: str, options: StorageOptions) -> Any:
        return icechunk.storage.azure_store(account=azure_account())

    def credentials(self, options: StorageOptions) -> Any:
        if options.anonymous:
            return icechunk.azure_anonymous_credentials()
        return icechunk.azure_from_env_credentials()


class _HTTP(IcechunkScheme):
    name = "http"

    def container_store(self, prefix: str, options: StorageOptions) -> Any:
        return icechunk.http_store({"allow_http": "true"} if options.allow_http else None)

    def credentials(self, options: StorageOptions) -> Any:
        return icechunk.credentials.HttpAccess


_BY_NAME: dict[str, IcechunkScheme] = {
    s.name: s for s in (_Local(), _S3(), _GCS(), _Azure(), _HTTP())
}


def icechunk_scheme(scheme: Scheme) -> IcechunkScheme:
    """The Icechunk half of ``scheme`` (every :data:`icepipe.storage.SCHEMES` has one)."""
    return _BY_NAME[scheme.name]


def bucket_and_prefix(repo: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``.

    Raises
    ------
    ConfigError
        No bucket or no prefix (Icechunk does not create repositories at a bucket's root).
    """
    scheme, bucket, key = split_url(repo)
    prefix = key.strip("/")
    if not bucket or not prefix:
        raise ConfigError(
            f"expected {scheme}://BUCKET/PREFIX (Icechunk does not create repositories at a "
            f"bucket's root); got {repo!r}",
            field="target.repo",
        )
    return bucket, prefix
