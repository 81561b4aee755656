"""The only package that imports icechunk: repositories, sessions, history, commits."""

from icepipe.target.history import (
    METADATA_KEY,
    CommitInfo,
    read_group_attrs,
    read_ingested,
    read_ledger,
    read_log,
    read_target_schema,
)
from icepipe.target.layout import native_encoding
from icepipe.target.maintenance import GcReport, collect_garbage
from icepipe.target.native import (
    check_write_args,
    commit_write,
    is_repository,
    is_session,
    is_virtual,
    local_path,
    virtual_locations,
    write_and_commit,
    write_dataset,
)
from icepipe.target.repo import RepoNotFoundError, commit_lock, container_prefixes, open_repo
from icepipe.target.write import commit, without_attrs, writable_session, write_virtual

__all__ = [
    "METADATA_KEY",
    "CommitInfo",
    "GcReport",
    "collect_garbage",
    "RepoNotFoundError",
    "check_write_args",
    "commit",
    "commit_lock",
    "commit_write",
    "native_encoding",
    "container_prefixes",
    "is_repository",
    "is_session",
    "is_virtual",
    "local_path",
    "open_repo",
    "read_group_attrs",
    "read_ingested",
    "read_ledger",
    "read_log",
    "read_target_schema",
    "virtual_locations",
    "without_attrs",
    "writable_session",
    "write_and_commit",
    "write_dataset",
    "write_virtual",
]
