"""Where data lives: one module per storage scheme behind one dispatch on the URL.

- :mod:`~icepipe.storage.urls`: schemes and parts of URLs, the URLs references store;
- :mod:`~icepipe.storage.options`: :class:`StorageOptions` (how to reach a store, picklable,
  no secrets) and their validation; credentials read from named environment variables;
- :mod:`~icepipe.storage.settings`: repository settings (``target.config``);
- :mod:`~icepipe.storage.base`: the :class:`Scheme` contract, and one module per scheme
  (:mod:`~icepipe.storage.local`, :mod:`~icepipe.storage.s3`, :mod:`~icepipe.storage.gcs`,
  :mod:`~icepipe.storage.azure`, :mod:`~icepipe.storage.http`), found by :func:`scheme_for`.

No icechunk here, and obstore only inside the functions that build stores: the Icechunk half
of each scheme (repository storage, virtual chunk container, container credentials) lives in
:mod:`icepipe.repository.schemes`, the only package importing icechunk, keyed by the same
scheme name.
"""

from __future__ import annotations

from icepipe.storage.azure import azure_account
from icepipe.storage.base import Scheme
from icepipe.storage.options import (
    REACH_KEYS,
    STORAGE_FIELDS,
    STORAGE_KEYS,
    S3Secrets,
    StorageOptions,
    coerce_storage_options,
    parse_storage_options,
    resolve_s3_credentials,
    secret_key_message,
)
from icepipe.storage.registry import (
    OBJECT_SCHEMES,
    REPO_SCHEMES,
    SCHEMES,
    SOURCE_SCHEMES,
    find_scheme,
    scheme_for,
)
from icepipe.storage.settings import parse_repo_config, repo_config_json_schema
from icepipe.storage.urls import (
    is_local,
    reference_url,
    refuse_credentials_in_url,
    scheme_of,
    split_url,
)

__all__ = [
    "OBJECT_SCHEMES",
    "REACH_KEYS",
    "REPO_SCHEMES",
    "SCHEMES",
    "SOURCE_SCHEMES",
    "STORAGE_FIELDS",
    "STORAGE_KEYS",
    "S3Secrets",
    "Scheme",
    "StorageOptions",
    "azure_account",
    "coerce_storage_options",
    "find_scheme",
    "is_local",
    "parse_repo_config",
    "repo_config_json_schema",
    "parse_storage_options",
    "reference_url",
    "refuse_credentials_in_url",
    "resolve_s3_credentials",
    "scheme_for",
    "scheme_of",
    "secret_key_message",
    "split_url",
]
