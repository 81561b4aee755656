"""User hooks named in pipelines (``preprocess: "module:function"``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import xarray as xr

from icepipe.errors import ConfigError, SourceError

__all__ = ["apply_preprocess", "load_hook"]


def load_hook(spec: str, search_path: str | None = None) -> Callable[[xr.Dataset], Any]:
    """Import ``module:function``; ``search_path`` (the pipeline's folder) is searched first.

    Raises
    ------
    ConfigError
        The module or function cannot be found, or is not callable.
    """
    module_name, _, func_name = spec.partition(":")
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} ({exc}); put it next to the pipeline file or "
            "install it on the client and every worker",
            field="source.preprocess",
        ) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(
            f"module {module_name!r} has no function {func_name!r}", field="source.preprocess"
        )
    return func  # type: ignore[no-any-return]


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
