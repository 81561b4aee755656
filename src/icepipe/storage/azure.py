"""Azure Blob Storage: ``az://CONTAINER/PATH``."""

from __future__ import annotations

import os
from typing import Any

from icepipe.errors import ConfigError
from icepipe.storage.base import Scheme
from icepipe.storage.options import S3Secrets, StorageOptions
from icepipe.storage.urls import split_url

__all__ = ["AzureScheme", "azure_account"]


def azure_account() -> str:
    """The storage account, from ``AZURE_STORAGE_ACCOUNT_NAME``.

    Raises
    ------
    ConfigError
        The variable is not set.
    """
    account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not account:
        raise ConfigError(
            "az:// locations need the storage account name in the environment variable "
            "AZURE_STORAGE_ACCOUNT_NAME"
        )
    return account


class AzureScheme(Scheme):
    """Azure: ``anonymous`` applies; the account (``AZURE_STORAGE_ACCOUNT_NAME``) and its
    credentials come from the environment."""

    names = ("az",)

    def obstore_store(
        self, root_url: str, options: StorageOptions, secrets: S3Secrets | None
    ) -> Any:
        from obstore.store import AzureStore

        _, bucket, key = split_url(root_url)
        # AZURE_STORAGE_ACCOUNT_NAME and its credentials are read by obstore.
        return AzureStore(bucket, prefix=key or None, skip_signature=options.anonymous or None)
