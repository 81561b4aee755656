"""The only package that imports icechunk: repositories, sessions, history, commits."""

from icepipe.target.history import (
    METADATA_KEY,
    CommitInfo,
    read_ingested,
    read_ledger,
    read_log,
    read_target_schema,
)
from icepipe.target.repo import RepoNotFoundError, commit_lock, container_prefixes, open_repo
from icepipe.target.write import commit, writable_session, write_virtual

__all__ = [
    "METADATA_KEY",
    "CommitInfo",
    "RepoNotFoundError",
    "commit",
    "commit_lock",
    "container_prefixes",
    "open_repo",
    "read_ingested",
    "read_ledger",
    "read_log",
    "read_target_schema",
    "writable_session",
    "write_virtual",
]
