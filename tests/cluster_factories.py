"""Cluster factories for ``--cluster tests.cluster_factories:NAME`` (tests/test_clusters.py)."""

from __future__ import annotations

from typing import Any

#: What the factories made, so tests can check icepipe closed them.
MADE: list[Any] = []


def local() -> Any:
    """A cluster object (not a client): one spawned worker process."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    MADE.append(cluster)
    return cluster


def threads() -> Any:
    """A ``distributed.Client`` of an in-process cluster (cheap to start)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    )
    client = Client(cluster)
    MADE.append(client)
    return client


def not_a_cluster() -> Any:
    return 42


def broken() -> Any:
    raise RuntimeError("no SLURM here")
