"""faults.py: how a storage failure is classified (permanent: ``ConfigError``, exit 2; may
pass on retry: ``StorageError``, exit 5) and what its message keeps."""

from __future__ import annotations

import errno
import inspect

import pytest

from icepipe import errors, faults


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), errors.ConfigError),
        (OSError(errno.EROFS, "Read-only file system"), errors.ConfigError),
        (OSError(errno.ENOSPC, "No space left on device"), errors.StorageError),
        (RuntimeError("I/O error: Not a directory (os error 20)\n\ncontext:\n 0: x"), None),
        (
            RuntimeError(
                'service error: <?xml version="1.0"?><Error><Code>AccessDenied</Code>'
                "<Message>Access Denied</Message></Error>"
            ),
            errors.ConfigError,
        ),
        (RuntimeError("service error: NoSuchBucket: The bucket does not exist"), None),
        (RuntimeError("dispatch failure: timeout: HTTP read timeout"), errors.StorageError),
        (RuntimeError("<Error><Code>SlowDown</Code></Error> 503"), errors.StorageError),
    ],
)
def test_storage_failure_classification(exc: BaseException, cls: type | None) -> None:
    got = faults.storage_failure(exc, "doing it", where="target.repo")
    assert type(got) is (cls or errors.ConfigError)
    assert "<?xml" not in str(got) and "context:" not in str(got)
    assert str(got).startswith(("target.repo: doing it", "doing it"))
    assert inspect.getmodule(type(got)) is errors
