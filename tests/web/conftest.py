"""A small site for the web tests: real repositories made from the sample data by real runs.

``site`` (session-scoped) holds:

- ``demo/nemo`` (named in a catalog file, with a description): the NEMO netCDF4 series as
  virtual references in group ``sst``, ingested in two runs (two commits of the pipeline
  ``nemo-sst``);
- ``tas-native-files`` (a pipeline target the catalog does not name): the tas series rewritten
  as native chunks in group ``mod1/rcp45``, one chunk per file along time (rectilinear);
- ``broken``: a pipeline whose only source file is corrupt; its one run failed (exit 3), so
  its report says so (and it never created its repository).

Run reports are under each pipeline folder's ``.icepipe/``.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml


@dataclass(frozen=True)
class Site:
    root: Path
    pipelines: Path
    catalog: Path
    nemo_repo: Path
    tas_repo: Path
    nemo_sources: list[Path]


def _pipeline(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **doc}, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def site(
    tmp_path_factory: pytest.TempPathFactory, sample_data: Path, client: Any
) -> Iterator[Site]:
    from icepipe.errors import IcepipeError
    from icepipe.ops.runner import run_pipeline_file

    root = tmp_path_factory.mktemp("web-site")
    folder = root / "pipelines"
    folder.mkdir()
    nemo_src = root / "nemo"
    nemo_src.mkdir()
    nemo_files = sorted((sample_data / "nemo").glob("nemo_1m_*_grid-T.nc"))
    catalog = root / "catalog.yaml"
    nemo_repo = root / "repos" / "nemo"
    catalog.write_text(
        yaml.safe_dump(
            {
                "repos": {
                    "demo/nemo": {
                        "url": str(nemo_repo),
                        "description": "NEMO ocean model, monthly sea surface temperature",
                    }
                }
            }
        )
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("ICEPIPE_CATALOG", str(catalog))
    nemo = _pipeline(
        folder,
        "nemo-sst",
        {
            "source": {
                "urls": str(nemo_src / "*.nc"),
                "concat_dim": "time_counter",
                "order_by": "time_centered",
            },
            "target": {"repo": "catalog:demo/nemo", "group": "sst"},
        },
    )
    tas_repo = root / "repos" / "tas-native"
    tas = _pipeline(
        folder,
        "tas-native-files",
        {
            "source": {
                "urls": [
                    str(sample_data / "ncarg/nug/tas_mod1_hist_rectilin_grid_2D.nc"),
                    str(sample_data / "ncarg/nug/tas_mod1_rcp45_rectilin_grid_2D.nc"),
                ],
                "concat_dim": "time",
            },
            "mode": "native",
            "chunks": {"time": "file"},
            "target": {"repo": str(tas_repo), "group": "mod1/rcp45"},
        },
    )
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.nc").write_bytes(nemo_files[0].read_bytes()[:3000])
    broken = _pipeline(
        folder,
        "broken",
        {
            "source": {"urls": str(bad / "*.nc"), "concat_dim": "time_counter"},
            "target": {"repo": str(root / "repos" / "broken")},
        },
    )
    try:
        # Two commits on demo/nemo: two files, then the third.
        for f in nemo_files[:2]:
            shutil.copy(f, nemo_src / f.name)
        run_pipeline_file(nemo, client=client, progress="none")
        shutil.copy(nemo_files[2], nemo_src / nemo_files[2].name)
        run_pipeline_file(nemo, client=client, progress="none")
        run_pipeline_file(tas, client=client, progress="none")
        with pytest.raises(IcepipeError):
            run_pipeline_file(broken, client=client, progress="none")
        yield Site(
            root=root,
            pipelines=folder,
            catalog=catalog,
            nemo_repo=nemo_repo,
            tas_repo=tas_repo,
            nemo_sources=sorted(nemo_src.glob("*.nc")),
        )
    finally:
        mp.undo()


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
