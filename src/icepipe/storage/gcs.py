"""Google Cloud Storage: ``gs://``."""

from __future__ import annotations

from typing import Any

from icepipe.storage.base import Scheme
from icepipe.storage.options import S3Secrets, StorageOptions
from icepipe.storage.urls import split_url

__all__ = ["GCSScheme"]


class GCSScheme(Scheme):
    """GCS: ``anonymous`` applies; credentials come from the environment
    (``GOOGLE_SERVICE_ACCOUNT``, ``GOOGLE_APPLICATION_CREDENTIALS`` ..., read by obstore and
    Icechunk themselves)."""

    names = ("gs",)

    def obstore_store(
        self, root_url: str, options: StorageOptions, secrets: S3Secrets | None
    ) -> Any:
        from obstore.store import GCSStore

        _, bucket, key = split_url(root_url)
        return GCSStore(bucket, prefix=key or None, skip_signature=options.anonymous or None)
