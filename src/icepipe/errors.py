"""The icepipe exception tree.

Exceptions are grouped by what the caller does next, and the CLI maps each group to its own
exit code so that schedulers can decide whether to retry:

============================  =====  ==========================================
exception                     exit   what to do
============================  =====  ==========================================
:class:`ConfigError`          2      fix the pipeline, arguments or environment
:class:`SourceError`          3      fix (or remove) the named source file(s)
:class:`ConflictError`        4      retry later: someone else moved the branch
:class:`StorageError`         5      transient storage/cluster trouble: retry
:class:`ValidationError`      6      stored data differs from the sources: inspect
:class:`IcepipeError`         1      anything else
============================  =====  ==========================================

Every exception pickles with its attributes, because most are raised on Dask workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

__all__ = [
    "ArgumentTypeError",
    "ConfigError",
    "ConflictError",
    "IcepipeError",
    "LedgerError",
    "LedgerVersionError",
    "NotExportableError",
    "SchemaMismatchError",
    "SourceError",
    "StaleWriteError",
    "StorageError",
    "TargetExistsError",
    "TargetNotFoundError",
    "ValidationError",
    "WriteKeyError",
]


class IcepipeError(Exception):
    """Root of all icepipe errors."""

    exit_code: int = 1

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take keyword-only attributes; rebuild from the message plus __dict__.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[IcepipeError], args: tuple[object, ...], state: dict[str, object]) -> object:
    obj = cls.__new__(cls)
    Exception.__init__(obj, *args)
    obj.__dict__.update(state)
    return obj


def short_message(exc: BaseException) -> str:
    """``str(exc)`` without the multi-line ``Debug source:`` dump obstore appends to its errors."""
    return str(exc).split("\n\nDebug source:", 1)[0].strip()


class ConfigError(IcepipeError, ValueError):
    """The pipeline definition or an argument is invalid: fix it and run again.

    Attributes
    ----------
    field
        Dotted name of the offending field (``"source.concat_dim"``), or ``None``.
    """

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class LedgerError(IcepipeError):
    """A commit's ingest ledger record (``icepipe`` commit metadata) cannot be read: the
    message names the snapshot and the field. Inspect the repository's history."""


class LedgerVersionError(LedgerError, ConfigError):
    """The ingest ledger is in a newer format than this icepipe reads: upgrade icepipe.

    Attributes
    ----------
    found
        The format version stored in the repository.
    supported
        The newest format this icepipe reads.
    """

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class NotExportableError(ConfigError):
    """A repository's variable cannot be written as kerchunk references (``icepipe export
    kerchunk``): it holds chunks stored in the repository rather than references, or chunks of
    uneven length. The message says which option or which group to export instead.

    Attributes
    ----------
    variable
        The variable that cannot be exported.
    """

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class SourceError(IcepipeError):
    """A source file cannot be ingested: fix, replace or remove it.

    Attributes
    ----------
    url
        The offending file (the first one when several are involved).
    urls
        All files involved.
    """

    exit_code = 3

    def __init__(self, message: str, *, url: str | None = None, urls: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.urls = tuple(urls) if urls else ((url,) if url else ())
        self.url = url if url is not None else (self.urls[0] if self.urls else None)


class SchemaMismatchError(SourceError):
    """Files (or a file and the existing target) disagree in variables, dimensions or dtypes."""


class ConflictError(IcepipeError):
    """The branch moved under us and the change could not be rebased: retry later.

    Attributes
    ----------
    conflicts
        Human-readable descriptions (``"path: conflict type, chunks [...]"``).
    """

    exit_code = 4

    def __init__(self, message: str, *, conflicts: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.conflicts = tuple(conflicts)


class StaleWriteError(ConflictError):
    """The branch moved under a write in a way only redoing the write on the new tip resolves.

    Raised for appends (which resize arrays and so never rebase) and for writes into arrays
    another writer resized meanwhile. Nothing was committed; :func:`icepipe.to_icechunk`
    redoes the write itself, so users see this only as a :class:`ConflictError` once its
    attempts run out.
    """


class StorageError(IcepipeError):
    """Transient trouble with storage or the cluster (I/O, network, dead workers): retry.

    Storage problems no retry can fix (permissions, read-only file systems, missing buckets,
    refused credentials) are :class:`ConfigError` instead (see :mod:`icepipe.faults`).
    """

    exit_code = 5


class ValidationError(IcepipeError):
    """Data read back from a repository differs from its source files (or cannot be read).

    Raised by ``icepipe validate`` and by staged runs (``icepipe run --stage``), which then
    leave the target branch untouched.

    Attributes
    ----------
    url
        The source file whose data differs.
    variable
        The variable that differs (``None`` when the file could not be compared at all).
    """

    exit_code = 6

    def __init__(self, message: str, *, url: str | None = None, variable: str | None = None):
        super().__init__(message)
        self.url = url
        self.variable = variable


# Errors of icepipe.to_icechunk that xarray (and so icechunk.xarray.to_icechunk) raises as
# built-in exceptions: they subclass both, so ``except KeyError`` code written for Icechunk's
# function catches icepipe's, and ``except ConfigError`` catches all of them.


class TargetExistsError(ConfigError, FileExistsError):
    """The write would create a group or array that already holds data (``mode="w-"``): pass
    another mode. Also a :class:`FileExistsError`, as xarray raises it."""

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        # OSError's instance layout: ValueError.__new__ (first in the MRO) cannot build it.
        return OSError.__new__(cls, *args)


class TargetNotFoundError(ConfigError, FileNotFoundError):
    """The group a write needs (``mode="r+"``, ``region``) does not exist: create it first.
    Also a :class:`FileNotFoundError`, as zarr raises it."""

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        # OSError's instance layout: ValueError.__new__ (first in the MRO) cannot build it.
        return OSError.__new__(cls, *args)


class WriteKeyError(ConfigError, KeyError):
    """A name or coordinate value the write needs is missing (``region="auto"`` with values
    the stored coordinate lacks, an unknown variable). Also a :class:`KeyError`, as xarray
    raises it."""

    def __str__(self) -> str:
        # KeyError quotes its message (it is meant for a key); this one is a sentence.
        return Exception.__str__(self)


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of the wrong type (a region that is not slices, an encoding xarray cannot
    use, an array xarray cannot write). Also a :class:`TypeError`, as xarray raises it."""
