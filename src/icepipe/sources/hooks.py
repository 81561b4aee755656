"""User hooks named in pipelines (``preprocess: "module:function"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import xarray as xr

from icepipe.callables import import_callable
from icepipe.errors import SourceError

__all__ = ["apply_preprocess", "load_hook"]


def load_hook(spec: str, search_path: str | None = None) -> Callable[[xr.Dataset], Any]:
    """Import ``module:function`` or ``module.function``; ``search_path`` (the pipeline's
    folder) is searched first.

    Raises
    ------
    ConfigError
        The module or function cannot be found, or is not callable.
    """
    return import_callable(
        spec,
        what="preprocess hook",
        field="source.preprocess",
        search_path=search_path,
        install_where=" on the client and every worker",
    )


def apply_preprocess(
    ds: xr.Dataset, spec: str | None, search_path: str | None, url: str
) -> xr.Dataset:
    """Apply the user's preprocess hook to one opened dataset.

    Raises
    ------
    SourceError
        The hook raised, or did not return a Dataset (the message names the file and hook).
    """
    if spec is None:
        return ds
    func = load_hook(spec, search_path)
    try:
        out = func(ds)
    except Exception as exc:
        raise SourceError(
            f"{url}: preprocess hook {spec!r} raised {type(exc).__name__}: {exc}; fix the hook "
            "or the file",
            url=url,
        ) from exc
    if not isinstance(out, xr.Dataset):
        raise SourceError(
            f"{url}: preprocess hook {spec!r} returned {type(out).__name__}, not an xarray.Dataset",
            url=url,
        )
    return out
