"""URLs: schemes, the parts of a location, and the URLs virtual references store.

A leaf module (the standard library and :mod:`icepipe.errors` only): every storage scheme module
and every caller that needs a location's scheme or parts goes through these few functions.
"""

from __future__ import annotations

import re

from icepipe.errors import ConfigError

__all__ = [
    "is_local",
    "reference_url",
    "refuse_credentials_in_url",
    "scheme_of",
    "split_url",
]

_URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


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
