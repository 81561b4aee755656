# Ported from Icechunk (https://github.com/earth-mover/icechunk), Apache License 2.0
# (tests/icechunk_port/LICENSE), copyright the Icechunk authors (Earthmover PBC).
# Source: icechunk-python/tests/conftest.py at commit 224519be49795c91fa35c2404b04ad5cb298a065.
# Kept: the fixtures the ported tests use (any_spec_version, repo, Permission), verbatim.
# Left out, because they would change the whole icepipe suite or need servers we do not run:
# zarr's global rectilinear flag (icepipe tests check when it is set), the Hypothesis profiles
# (icepipe's own Hypothesis tests set theirs) and the MinIO client (boto3, localhost:4200).
import os
from enum import Enum
from collections.abc import Iterator
from typing import Literal, cast

import pytest

from icechunk import Repository, SpecVersion, in_memory_storage, local_filesystem_storage


class Permission(Enum):
    READONLY = 1
    MODIFY = 2
    SUPERUSER = 3  # temporary, while figuring out right permissions

    def keys(self) -> tuple[str, str]:
        match self:
            case Permission.READONLY:
                return ("readonly", "basicuser")
            case Permission.MODIFY:
                return ("modify", "modifydata")
            case Permission.SUPERUSER:
                return ("test123", "test123")


def parse_repo(
    store: Literal["local", "memory"], path: str, spec_version: SpecVersion | int | None
) -> Repository:
    if store == "local":
        return Repository.create(
            storage=local_filesystem_storage(path),
            spec_version=spec_version,
        )
    if store == "memory":
        return Repository.create(
            storage=in_memory_storage(),
            spec_version=spec_version,
        )
    raise ValueError(f"Unknown store type: {store}")


@pytest.fixture(scope="function")
def repo(
    request: pytest.FixtureRequest,
    tmpdir: str,
    any_spec_version: SpecVersion | int | None,
) -> tuple[Repository, str]:
    param = request.param
    repo = parse_repo(param, tmpdir, spec_version=any_spec_version)
    return repo, tmpdir


@pytest.fixture(
    scope="function",
    params=[1, SpecVersion.v2, None],
    ids=["spec-v1", "spec-v2", "no-spec-version"],
)
def any_spec_version(request: pytest.FixtureRequest) -> SpecVersion | int | None:
    return cast(SpecVersion | int | None, request.param)


def pytest_configure(config: pytest.Config) -> None:
    # Not from Icechunk: markers xarray's own test module (imported by
    # test_xarray_backends.py) uses, which icepipe's --strict-markers would refuse.
    for marker in ("flaky", "network", "skip_if_param", "skip_with_dask_array", "asyncio"):
        config.addinivalue_line("markers", f"{marker}: used by xarray.tests.test_backends")


# Not from Icechunk: what icepipe's suite runs of the port (see tests/icechunk_port/README.md).
# Tests that never call to_icechunk test Icechunk itself (its own CI runs them); the first one
# also needs the Hypothesis profile of Icechunk's conftest (HealthCheck.too_slow suppressed).
ICECHUNK_ONLY = {
    "test_store_dask": "calls icechunk.dask.store_dask, not to_icechunk",
    "test_session_merge_reduction_rejects_unknown_arrays": "tests icechunk.dask only",
    "test_splitting_config_dict_roundtrip": "tests ManifestSplittingConfig only",
    "test_manifest_splitting_magic_methods": "tests ManifestSplitCondition only",
}
# Worker processes (Dask's "processes" scheduler, a distributed.Client) cost 10-60 s a test on
# 2 cores; they run for the default spec version, and for spec 1 and 2 explicitly: icepipe's
# code path is the same for every spec version, which the threaded variants cover.
SLOW = ("processes", "test_distributed[")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    every_spec = os.environ.get("ICEPIPE_PORT_ALL_SPECS") == "1"
    if not os.environ.get("ICECHUNK_XARRAY_BACKENDS_TESTS"):
        # xarray's ZarrBase suite on Icechunk stores (3 x 1086 cases): Icechunk skips it unless
        # asked (the classes' skipif), so leave it out of the report instead of 3258 skips.
        unwanted = [i for i in items if "test_xarray_backends.py::TestIcechunkStore" in i.nodeid]
        if unwanted:
            config.hook.pytest_deselected(items=unwanted)
            dropped = set(unwanted)
            items[:] = [i for i in items if i not in dropped]
    for item in items:
        if "icechunk_port" not in item.nodeid:
            continue
        reason = ICECHUNK_ONLY.get(getattr(item, "originalname", item.name))
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"Icechunk-only test: {reason}"))
        elif any(s in item.nodeid for s in SLOW):
            item.add_marker(pytest.mark.slow)
            if not every_spec and ("spec-v1" in item.nodeid or "spec-v2" in item.nodeid):
                item.add_marker(
                    pytest.mark.skip(
                        reason="worker-process variant for a non-default spec version: "
                        "run with ICEPIPE_PORT_ALL_SPECS=1"
                    )
                )


@pytest.fixture(scope="package")
def _process_pool() -> Iterator[object]:
    """Not from Icechunk: one pool of 2 spawned worker processes for every test of the port
    that picks Dask's ``processes`` scheduler. Dask otherwise spawns a new pool per
    ``compute`` (each worker importing numpy, xarray, icechunk: 5-20 s a test on 2 cores);
    the tasks still run, pickled, in other processes, which is what those tests check.
    ``dask.config.set(pool=...)`` would also reach the threaded scheduler: the pool is given to
    the ``processes`` scheduler only (see below)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from dask.multiprocessing import initialize_worker_process

    # What dask.multiprocessing.get does before it spawns its own pool: one hash seed for all.
    os.environ.setdefault("PYTHONHASHSEED", "6640")
    pool = ProcessPoolExecutor(
        2, mp_context=get_context("spawn"), initializer=initialize_worker_process
    )
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


@pytest.fixture(autouse=True)
def _no_leftover_distributed_client(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _process_pool: object
) -> Iterator[None]:
    """Not from Icechunk: icepipe's session-wide LocalCluster (tests/conftest.py ``client``)
    stays the default Dask scheduler after the tests that use it. Dask-backed reads of an
    uncommitted session's store then run on its workers, which see the session's snapshot
    without its changes, and xarray's region tests (reading back before committing) fail
    whatever wrote the data. In Icechunk's suite no Client outlives its test: threads here,
    unless a test picks its scheduler itself (they do, inside the test).

    Tests that pick ``processes`` get the package's process pool; ``test_distributed``'s
    ``distributed.Client()`` (no address: Dask's ``scheduler-address``) connects to the
    session's LocalCluster (2 worker processes) instead of starting a cluster of its own."""
    from functools import partial

    import dask
    import dask.base
    import dask.multiprocessing

    processes = partial(dask.multiprocessing.get, pool=_process_pool)
    for name in ("processes", "multiprocessing"):
        monkeypatch.setitem(dask.base.named_schedulers, name, processes)
    config: dict[str, object] = {"scheduler": "threads"}
    if getattr(request.node, "originalname", "") == "test_distributed":
        config["scheduler-address"] = request.getfixturevalue("client").scheduler.address
    with dask.config.set(config):
        yield
