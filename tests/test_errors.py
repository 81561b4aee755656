"""errors.py: every exception pickles with its attributes (they travel back from Dask
workers), and the attributes the messages are built from."""

from __future__ import annotations

import pickle

import pytest

import icepipe.cli  # noqa: F401 - imports every module that defines an error class
from icepipe.catalog import UnknownSchemeError
from icepipe.errors import (
    ArgumentTypeError,
    ConfigError,
    ConflictError,
    IcepipeError,
    LedgerError,
    LedgerVersionError,
    NotExportableError,
    SchemaMismatchError,
    SourceError,
    StaleWriteError,
    StorageError,
    TargetExistsError,
    TargetNotFoundError,
    ValidationError,
    WriteKeyError,
)
from icepipe.repository import RepoNotFoundError

EXCEPTIONS = [
    IcepipeError("something unexpected"),
    ConfigError("expected a string; got int 3", field="source.concat_dim"),
    ConfigError("no field"),
    RepoNotFoundError("no Icechunk repository at '/x'"),
    UnknownSchemeError("'katalog:a/b' starts with 'katalog:'", value="katalog:a/b", field="repo"),
    SourceError("file:///d/a.nc: truncated", url="file:///d/a.nc"),
    SourceError("two bad files", urls=["file:///d/a.nc", "file:///d/b.nc"]),
    SourceError("no file"),
    SchemaMismatchError("differ", urls=("file:///d/b.nc", "file:///d/a.nc")),
    ConflictError("branch moved", conflicts=["/g/tas: ChunkDoubleUpdate, chunks [(0, 0, 0)]"]),
    StaleWriteError("redo on the tip", conflicts=["/g/tas: Zarr metadata double update"]),
    StorageError("listing failed; retry"),
    ValidationError("file:///d/a.nc: variable 'tas' differs", url="file:///d/a.nc", variable="tas"),
    LedgerError("snapshot ABC: ledger field 'files' is not a list"),
    LedgerVersionError("snapshot ABC: ledger version 2; upgrade icepipe", found=2, supported=1),
    NotExportableError("variable 'tas' holds 800 bytes of native chunks", variable="tas"),
    TargetExistsError("'g' already holds data; pass mode='w'", field="mode"),
    TargetNotFoundError("no group 'g'; create it first"),
    WriteKeyError("not all values of coordinate 'x' were found", field="region"),
    ArgumentTypeError("expected a slice or 'auto'; got 3", field="region"),
]

ATTRIBUTES = (
    "url",
    "urls",
    "field",
    "conflicts",
    "exit_code",
    "args",
    "variable",
    "found",
    "supported",
    "value",
)


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: f"{type(e).__name__}-{e}"[:40])
def test_exceptions_pickle_with_attributes(exc: IcepipeError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    for name in ATTRIBUTES:
        assert getattr(back, name, None) == getattr(exc, name, None), name


def test_every_exception_type_is_covered() -> None:
    def subclasses(cls: type) -> set[type]:
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}

    icepipe_types = {c for c in subclasses(IcepipeError) if c.__module__.startswith("icepipe")}
    assert icepipe_types <= {type(e) for e in EXCEPTIONS}


def test_source_error_attributes() -> None:
    one = SourceError("m", url="file:///a")
    assert (one.url, one.urls) == ("file:///a", ("file:///a",))
    many = SourceError("m", urls=["file:///a", "file:///b"])
    assert (many.url, many.urls) == ("file:///a", ("file:///a", "file:///b"))
    assert SourceError("m").url is None
