"""Local folders (plain paths and ``file://`` URLs)."""

from __future__ import annotations

from typing import Any

from icepipe.storage.base import Scheme
from icepipe.storage.options import S3Secrets, StorageOptions
from icepipe.storage.urls import split_url

__all__ = ["LocalScheme"]


class LocalScheme(Scheme):
    """Local disks: files identified by size and modification time; repositories are folders
    (committed under icepipe's OS lock, see :func:`icepipe.repository.commit_lock`)."""

    names = ("file",)
    remote = False
    object_store = False

    def obstore_store(
        self, root_url: str, options: StorageOptions, secrets: S3Secrets | None
    ) -> Any:
        from obstore.store import LocalStore

        _, _, path = split_url(root_url)
        return LocalStore(path or "/")
