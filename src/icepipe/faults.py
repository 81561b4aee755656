"""Tell permanent storage failures from transient ones.

A scheduler retries exit code 5 (:class:`~icepipe.errors.StorageError`) and gives up on exit
code 2 (:class:`~icepipe.errors.ConfigError`). A repository path that is a regular file, a
read-only folder, a missing bucket or refused credentials never pass on retry, so they must
not exit 5. Icechunk and obstore report all of them as one error type with the cause in the
text (``... Permission denied (os error 13)``, ``service error: NoSuchBucket: ...``, raw S3
XML); :func:`storage_failure` reads the cause and returns the icepipe error a handler can act
on, with a short message (no Rust context trace, no XML) that names the fix.

A leaf module: it inspects exceptions and text only, and imports no storage library.
"""

from __future__ import annotations

import errno
import re

from icepipe.errors import ConfigError, IcepipeError, StorageError

__all__ = ["PERMANENT_ERRNOS", "clean_message", "storage_failure"]

_WRITABLE = (
    "make it readable and writable by this user (and not a read-only mount), or point the "
    "pipeline elsewhere"
)
_PATH = "fix the path: a repository is a folder of its own, created when absent"
#: OS errors no retry can fix (what they mean, the fix): paths, permissions, mounts.
PERMANENT_ERRNOS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", _WRITABLE),
    errno.EPERM: ("operation not permitted", _WRITABLE),
    errno.EROFS: ("read-only file system", _WRITABLE),
    errno.ENOTDIR: ("a file is where a folder should be", _PATH),
    errno.EISDIR: ("a folder is where a file should be", _PATH),
    errno.EEXIST: ("a file is in the way", _PATH),
    errno.ENAMETOOLONG: ("file name too long", _PATH),
    errno.ELOOP: ("too many levels of symbolic links", _PATH),
}
_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}

_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_XML_ERROR = re.compile(r"<\?xml.*?</Error>", re.DOTALL)
_XML_FIELD = re.compile(r"<(Code|Message)>(.*?)</\1>", re.DOTALL)
# S3 error codes (and HTTP statuses) that mean "these credentials may not do this".
_DENIED = re.compile(
    r"AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|InvalidToken|ExpiredToken|"
    r"AuthorizationHeaderMalformed|Forbidden|Unauthenticated|PermissionDenied|"
    r"\b403\b|\b401\b|permission denied",
    re.IGNORECASE,
)
_NO_BUCKET = re.compile(r"NoSuchBucket|bucket does not exist", re.IGNORECASE)
_NO_CREDENTIALS = re.compile(
    r"no providers in chain provided credentials|credential provider was not enabled|"
    r"NoCredentialProviders|could not load credentials|failed to load credentials",
    re.IGNORECASE,
)


def clean_message(exc: BaseException) -> str:
    """``str(exc)`` without Icechunk's ``context:`` trace, obstore's ``Debug source:`` dump, or
    raw S3 XML (replaced by its ``Code: Message``), on one line."""
    text = str(exc)
    for marker in ("\n\ncontext:", "\n\nDebug source:"):
        text = text.split(marker, 1)[0]

    def xml(m: re.Match[str]) -> str:
        fields = dict(_XML_FIELD.findall(m.group(0)))
        return ": ".join(v for v in (fields.get("Code"), fields.get("Message")) if v) or "S3 error"

    text = _XML_ERROR.sub(xml, text)
    return " ".join(text.split()) or type(exc).__name__


def _errno(exc: BaseException) -> int | None:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno
        m = _OS_ERROR.search(str(e))
        if m:
            return int(m.group(1))
        e = e.__cause__ or e.__context__
    return None


def storage_failure(exc: BaseException, doing: str, *, where: str | None = None) -> IcepipeError:
    """The icepipe error for a storage failure while ``doing`` something.

    Parameters
    ----------
    exc
        What Icechunk, obstore or the OS raised (an :class:`IcepipeError` is returned as is).
    doing
        What failed, for the message: ``"cannot open the repository at '/data/r'"``.
    where
        The pipeline field to fix for permanent problems (``"target.repo"``).

    Returns
    -------
    ConfigError
        Permissions, read-only file systems, paths that are files, missing buckets, refused
        credentials: a retry cannot pass; the message names the fix.
    StorageError
        Anything that can pass on retry (network, throttling, timeouts, a full disk once space
        is freed).
    """
    if isinstance(exc, IcepipeError):
        return exc
    message = clean_message(exc)
    code = _errno(exc)
    if code in PERMANENT_ERRNOS:
        what, fix = PERMANENT_ERRNOS[code]
        return ConfigError(f"{doing}: {what} ({message}); {fix}", field=where)
    if code in _FULL:
        return StorageError(f"{doing}: {_FULL[code]} ({message}); free space, then retry")
    if _NO_BUCKET.search(message):
        return ConfigError(
            f"{doing}: the bucket does not exist ({message}); create it, or fix the bucket "
            "name in the URL",
            field=where,
        )
    if _NO_CREDENTIALS.search(message):
        return ConfigError(
            f"{doing}: no credentials found ({message}); name the environment variables "
            "holding them (access_key_id_env / secret_access_key_env), set the standard AWS_* "
            "variables or a profile, or use anonymous: true for a public bucket",
            field=where,
        )
    if _DENIED.search(message):
        return ConfigError(
            f"{doing}: access denied ({message}); check the credentials this process uses "
            "(access_key_id_env / secret_access_key_env, or the standard AWS_* variables and "
            "profiles) and that they may read and write this location",
            field=where,
        )
    return StorageError(f"{doing}: {message}; retry")
