"""The only package that imports icechunk: repositories, sessions, the ingest ledger, history,
commits.

The names below are imported on first use (PEP 562): a run with nothing new reads the ledger
without importing xarray or Dask, which only the write stage needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from icepipe._lazy import lazy_getattr

if TYPE_CHECKING:
    from icepipe.repository.commits import Retry, commit, describe_conflicts
    from icepipe.repository.history import (
        METADATA_KEY,
        CommitInfo,
        arrays_with_codec,
        ledger_cubes,
        read_commits,
        read_commits_below,
        read_group_attrs,
        read_history,
        read_ingested,
        read_ledger,
        read_log,
        read_target_schema,
        subgroup,
    )
    from icepipe.repository.layout import native_encoding
    from icepipe.repository.ledger import LEDGER_VERSION, CommitRecord, FileRecord
    from icepipe.repository.maintenance import GcReport, collect_garbage
    from icepipe.repository.native import (
        check_write_args,
        is_repository,
        is_session,
        is_virtual,
        virtual_locations,
        write_and_commit,
        write_dataset,
    )
    from icepipe.repository.native_rectilinear import stored_edges
    from icepipe.repository.raw_append import append_raw, split_undecodable
    from icepipe.repository.rectilinear import write_rectilinear
    from icepipe.repository.refs import (
        ArrayInfo,
        RefInfo,
        RepoDiff,
        StorageStats,
        chunk_counts,
        container_urls,
        create_branch,
        create_tag,
        delete_branch,
        delete_local_repo,
        diff_refs,
        discard_unused_repo,
        list_refs,
        move_branch,
        resolve_ref,
        storage_stats,
        tree_info,
    )
    from icepipe.repository.repo import (
        RepoNotFoundError,
        commit_lock,
        container_options,
        container_prefixes,
        local_path,
        location_of,
        open_repo,
    )
    from icepipe.repository.write import without_attrs, writable_session, write_virtual

#: Where each public name lives.
_LAZY = {
    "Retry": "icepipe.repository.commits",
    "commit": "icepipe.repository.commits",
    "describe_conflicts": "icepipe.repository.commits",
    "METADATA_KEY": "icepipe.repository.history",
    "CommitInfo": "icepipe.repository.history",
    "arrays_with_codec": "icepipe.repository.history",
    "ledger_cubes": "icepipe.repository.history",
    "read_commits": "icepipe.repository.history",
    "read_commits_below": "icepipe.repository.history",
    "read_group_attrs": "icepipe.repository.history",
    "read_history": "icepipe.repository.history",
    "read_ingested": "icepipe.repository.history",
    "read_ledger": "icepipe.repository.history",
    "read_log": "icepipe.repository.history",
    "read_target_schema": "icepipe.repository.history",
    "subgroup": "icepipe.repository.history",
    "native_encoding": "icepipe.repository.layout",
    "LEDGER_VERSION": "icepipe.repository.ledger",
    "CommitRecord": "icepipe.repository.ledger",
    "FileRecord": "icepipe.repository.ledger",
    "GcReport": "icepipe.repository.maintenance",
    "collect_garbage": "icepipe.repository.maintenance",
    "check_write_args": "icepipe.repository.native",
    "is_repository": "icepipe.repository.native",
    "is_session": "icepipe.repository.native",
    "is_virtual": "icepipe.repository.native",
    "virtual_locations": "icepipe.repository.native",
    "write_and_commit": "icepipe.repository.native",
    "write_dataset": "icepipe.repository.native",
    "stored_edges": "icepipe.repository.native_rectilinear",
    "append_raw": "icepipe.repository.raw_append",
    "split_undecodable": "icepipe.repository.raw_append",
    "write_rectilinear": "icepipe.repository.rectilinear",
    "ArrayInfo": "icepipe.repository.refs",
    "RefInfo": "icepipe.repository.refs",
    "RepoDiff": "icepipe.repository.refs",
    "StorageStats": "icepipe.repository.refs",
    "chunk_counts": "icepipe.repository.refs",
    "storage_stats": "icepipe.repository.refs",
    "container_urls": "icepipe.repository.refs",
    "create_branch": "icepipe.repository.refs",
    "create_tag": "icepipe.repository.refs",
    "delete_branch": "icepipe.repository.refs",
    "delete_local_repo": "icepipe.repository.refs",
    "diff_refs": "icepipe.repository.refs",
    "discard_unused_repo": "icepipe.repository.refs",
    "list_refs": "icepipe.repository.refs",
    "move_branch": "icepipe.repository.refs",
    "resolve_ref": "icepipe.repository.refs",
    "tree_info": "icepipe.repository.refs",
    "RepoNotFoundError": "icepipe.repository.repo",
    "commit_lock": "icepipe.repository.repo",
    "container_options": "icepipe.repository.repo",
    "container_prefixes": "icepipe.repository.repo",
    "local_path": "icepipe.repository.repo",
    "location_of": "icepipe.repository.repo",
    "open_repo": "icepipe.repository.repo",
    "without_attrs": "icepipe.repository.write",
    "writable_session": "icepipe.repository.write",
    "write_virtual": "icepipe.repository.write",
}

__all__ = [
    "ArrayInfo",
    "RefInfo",
    "RepoDiff",
    "StorageStats",
    "chunk_counts",
    "storage_stats",
    "read_history",
    "container_urls",
    "create_branch",
    "create_tag",
    "delete_branch",
    "delete_local_repo",
    "discard_unused_repo",
    "diff_refs",
    "list_refs",
    "move_branch",
    "resolve_ref",
    "tree_info",
    "LEDGER_VERSION",
    "METADATA_KEY",
    "CommitInfo",
    "CommitRecord",
    "FileRecord",
    "GcReport",
    "collect_garbage",
    "RepoNotFoundError",
    "check_write_args",
    "commit",
    "commit_lock",
    "describe_conflicts",
    "Retry",
    "native_encoding",
    "append_raw",
    "split_undecodable",
    "container_options",
    "container_prefixes",
    "is_repository",
    "is_session",
    "is_virtual",
    "local_path",
    "location_of",
    "open_repo",
    "arrays_with_codec",
    "ledger_cubes",
    "read_group_attrs",
    "read_commits",
    "read_commits_below",
    "read_ingested",
    "read_ledger",
    "read_log",
    "read_target_schema",
    "stored_edges",
    "subgroup",
    "virtual_locations",
    "without_attrs",
    "writable_session",
    "write_and_commit",
    "write_dataset",
    "write_rectilinear",
    "write_virtual",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
