"""The storage-scheme contract: what one module per URL scheme owns.

A :class:`Scheme` answers everything icepipe does differently per scheme, except building
Icechunk objects (only :mod:`icepipe.repository` imports icechunk: its
:mod:`~icepipe.repository.schemes` module holds that half, one class per scheme keyed by the
same :attr:`Scheme.name`). Schemes hold no state: they pickle, and any process rebuilds the
same one from a URL with :func:`icepipe.storage.scheme_for`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from icepipe.storage.options import S3Secrets, StorageOptions

__all__ = ["Scheme"]


class Scheme(ABC):
    """One URL scheme (or a family: ``http``/``https``) and how icepipe reaches its data.

    Attributes
    ----------
    names
        The URL schemes it serves; the first is its :attr:`name`.
    remote
        Reached over the network: objects are identified by ETag and size (local files by size
        and modification time), and checks run in parallel.
    object_store
        A bucket of objects: a prefix with Zarr metadata at its root is a Zarr store.
    listable
        Globs work: the location can be listed.
    holds_repositories
        Icechunk repositories may live there (``target.repo``).
    """

    names: ClassVar[tuple[str, ...]]
    remote: ClassVar[bool] = True
    object_store: ClassVar[bool] = True
    listable: ClassVar[bool] = True
    holds_repositories: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """The scheme's canonical name (``file``, ``s3``, ``gs``, ``az``, ``http``)."""
        return self.names[0]

    def __repr__(self) -> str:
        return f"<storage scheme {self.name}>"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def validate_options(self, url: str, options: StorageOptions, where: str) -> None:
        """Refuse ``options`` that cannot reach ``url`` (the default: any options do).

        Raises
        ------
        ConfigError
            The options do not fit this scheme (the message names ``where`` and the fix).
        """
        return None

    def container_reach(self, options: StorageOptions) -> dict[str, Any]:
        """What icepipe records about how it reaches a virtual chunk container it configures
        with ``options`` (JSON, no credential names; see :meth:`reader_options`). The default:
        nothing (the location alone says how to reach it)."""
        return {}

    def reader_options(self, source: StorageOptions, reach: Mapping[str, Any]) -> StorageOptions:
        """How a reader with ``source`` options reaches a container recorded as ``reach``:
        the recorded endpoint options, with the reader's credential choice.

        Raises
        ------
        ConfigError
            ``reach`` is not such a record.
        """
        return source.with_reach(reach)

    def credentials(self, options: StorageOptions) -> S3Secrets | None:
        """The secrets ``options`` names, read from this process's environment (``None``: the
        library's own chain, or none needed)."""
        return None

    @abstractmethod
    def obstore_store(
        self, root_url: str, options: StorageOptions, secrets: S3Secrets | None
    ) -> Any:
        """An obstore store rooted at ``root_url`` (a folder, bucket prefix or HTTP base).

        Raises
        ------
        ConfigError
            ``options`` cannot reach it (see :meth:`validate_options`).
        """
