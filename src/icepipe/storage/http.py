"""HTTP(S) servers: ``https://`` and (with ``allow_http``) ``http://``; sources only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from icepipe.errors import ConfigError
from icepipe.storage.base import Scheme
from icepipe.storage.options import S3Secrets, StorageOptions
from icepipe.storage.urls import scheme_of

__all__ = ["HTTPScheme"]


class HTTPScheme(Scheme):
    """HTTP(S): servers cannot be listed (explicit lists of files only), hold no repositories,
    and need no credentials; unencrypted ``http://`` needs ``allow_http``."""

    names = ("http", "https")
    object_store = False
    listable = False
    holds_repositories = False

    def validate_options(self, url: str, options: StorageOptions, where: str) -> None:
        if scheme_of(url) == "http" and not options.allow_http:
            raise ConfigError(
                f"{url!r} is unencrypted http: set source.storage.allow_http: true to allow it",
                field="source.storage.allow_http",
            )

    def container_reach(self, options: StorageOptions) -> dict[str, Any]:
        return {"allow_http": options.allow_http}

    def reader_options(self, source: StorageOptions, reach: Mapping[str, Any]) -> StorageOptions:
        # Readers reach the servers that references name, http:// included: the pipeline that
        # wrote them allowed it.
        return dataclasses.replace(source, allow_http=True)

    def obstore_store(
        self, root_url: str, options: StorageOptions, secrets: S3Secrets | None
    ) -> Any:
        from obstore.store import HTTPStore

        self.validate_options(root_url, options, "source.storage")
        return HTTPStore.from_url(
            root_url, client_options={"allow_http": True} if options.allow_http else None
        )
