"""One dispatch on the URL: :func:`scheme_for` finds the module serving a location."""

from __future__ import annotations

from icepipe.errors import ConfigError
from icepipe.storage.azure import AzureScheme
from icepipe.storage.base import Scheme
from icepipe.storage.gcs import GCSScheme
from icepipe.storage.http import HTTPScheme
from icepipe.storage.local import LocalScheme
from icepipe.storage.s3 import S3Scheme
from icepipe.storage.urls import scheme_of

__all__ = [
    "OBJECT_SCHEMES",
    "REPO_SCHEMES",
    "SCHEMES",
    "SOURCE_SCHEMES",
    "find_scheme",
    "scheme_for",
]

#: Every scheme icepipe serves, in the order messages list them.
SCHEMES: tuple[Scheme, ...] = (LocalScheme(), S3Scheme(), GCSScheme(), AzureScheme(), HTTPScheme())
_BY_NAME: dict[str, Scheme] = {name: s for s in SCHEMES for name in s.names}

#: Object stores icepipe reads sources from and writes repositories to.
OBJECT_SCHEMES: tuple[str, ...] = tuple(n for s in SCHEMES if s.object_store for n in s.names)
#: URL schemes accepted in ``source.urls`` (``http``/``https``: explicit lists only).
SOURCE_SCHEMES: tuple[str, ...] = tuple(n for s in SCHEMES for n in s.names)
#: URL schemes accepted in ``target.repo``.
REPO_SCHEMES: tuple[str, ...] = tuple(n for s in SCHEMES if s.holds_repositories for n in s.names)


def find_scheme(url: str) -> Scheme | None:
    """The scheme serving ``url`` (plain paths are ``file``), ``None`` when none does."""
    return _BY_NAME.get(scheme_of(url))


def scheme_for(url: str) -> Scheme:
    """The scheme serving ``url`` (plain paths are ``file``).

    Raises
    ------
    ConfigError
        No scheme serves it (the message lists the supported ones).
    """
    scheme = find_scheme(url)
    if scheme is None:
        raise ConfigError(
            f"unsupported URL scheme {scheme_of(url)!r} in {url!r}; use file://, s3://, gs://, "
            "az://, http:// or https://",
            field="source.urls",
        )
    return scheme
