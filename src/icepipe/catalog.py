"""The repository catalog: short names (``org/name``) for repository locations and settings.

A YAML file, by default ``~/.config/icepipe/catalog.yaml`` (``$XDG_CONFIG_HOME`` respected),
elsewhere with ``icepipe --catalog FILE`` or the ``ICEPIPE_CATALOG`` environment variable::

    repos:
      acme/nemo:
        url: /data/repos/nemo          # a path (relative: to this file's folder) or s3://...
        description: NEMO ocean model output
      acme/era5:
        url: s3://bucket/era5
        storage: {endpoint: "https://s3.example", region: eu-west-1,
                  access_key_id_env: ERA5_KEY, secret_access_key_env: ERA5_SECRET}
        config: {inline_chunk_threshold_bytes: 512}

Pipelines target a catalog entry with ``target: {repo: "catalog:acme/nemo"}``, and every
command taking a repository accepts ``catalog:acme/nemo``. Like pipelines, the catalog holds
environment variable *names*, never secrets.

A leaf module (YAML, :mod:`icepipe.storage`, :mod:`icepipe.fields` and :mod:`icepipe.errors`
only): :mod:`icepipe.spec` resolves references with it; :mod:`icepipe.ops.repos` creates and
deletes the repositories it names.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from icepipe.errors import ConfigError
from icepipe.fields import Field, no_unknown
from icepipe.locks import lock as _lock_file
from icepipe.storage import (
    STORAGE_FIELDS,
    STORAGE_KEYS,
    StorageOptions,
    is_local,
    parse_repo_config,
    parse_storage_options,
    refuse_credentials_in_url,
    repo_config_json_schema,
    secret_key_message,
)

__all__ = [
    "CATALOG",
    "CATALOG_ENV",
    "CATALOG_PREFIX",
    "Catalog",
    "CatalogEntry",
    "ENTRY_FIELDS",
    "UnknownSchemeError",
    "catalog_path",
    "check_entry",
    "edit_catalog",
    "icechunk_alias",
    "load_catalog",
    "resolve_repo",
    "resolve_target",
]

#: Environment variable naming the catalog file.
CATALOG_ENV = "ICEPIPE_CATALOG"
#: Prefix of catalog references in ``target.repo`` and on the command line.
CATALOG_PREFIX = "catalog:"
#: Prefix of the repository aliases of icechunk's own command line (``icechunk config add``).
ICECHUNK_PREFIX = "icechunk:"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: The keys of a catalog entry (read by the loader, ``icepipe check`` and ``icepipe schema``).
ENTRY_FIELDS: dict[str, Field] = {
    "url": Field(
        "string",
        "the repository: a path (relative: to the catalog's folder) or s3://...",
        required=True,
    ),
    "description": Field("custom", "what the repository holds", schema={"type": "string"}),
    "storage": Field(
        "section",
        "how to reach an object-store repository (variable names, never secrets)",
        fields=STORAGE_FIELDS,
        refuse=secret_key_message,
    ),
    "config": Field("custom", "Icechunk repository settings", schema=repo_config_json_schema()),
}
#: A catalog file (see :data:`ENTRY_FIELDS`).
CATALOG = Field(
    "section",
    "The icepipe repository catalog: short names (org/name) for repositories",
    fields={
        "repos": Field(
            "map",
            "repositories by name (org/name)",
            values=Field("section", "one repository", fields=ENTRY_FIELDS),
            schema={"propertyNames": {"pattern": _NAME_RE.pattern}},
        )
    },
)
_ENTRY_KEYS = frozenset(ENTRY_FIELDS)
# ``word:`` at the start of a location: a URL scheme, ``catalog:``, or a mistake.
_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
#: URL schemes a repository argument may start with (``memory`` for icechunk's own stores;
#: whether a scheme can hold a repository is checked where the repository is opened).
KNOWN_SCHEMES = frozenset({"file", "s3", "gs", "az", "http", "https", "memory"})


class UnknownSchemeError(ConfigError):
    """A repository argument starts with a prefix that is neither ``catalog:`` nor a URL
    scheme icepipe knows (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``file://``).

    Refused rather than read as a local folder named after the whole string (a write there
    would silently miss the repository that was meant). The message names the value and the
    fix.

    Attributes
    ----------
    value
        The refused argument.
    """

    def __init__(self, message: str, *, value: str = "", field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.value = value


@dataclass(frozen=True)
class CatalogEntry:
    """One named repository: where it is and how to reach it."""

    name: str
    url: str
    description: str = ""
    storage: StorageOptions = field(default_factory=StorageOptions)
    config: dict[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> dict[str, Any]:
        """The mapping written into the catalog (local paths absolute)."""
        out: dict[str, Any] = {"url": self.url}
        if self.description:
            out["description"] = self.description
        if not self.storage.is_default:
            defaults = StorageOptions()
            out["storage"] = {
                k: getattr(self.storage, k)
                for k in sorted(STORAGE_KEYS)
                if getattr(self.storage, k) != getattr(defaults, k)
            }
        if self.config:
            out["config"] = self.config
        return out


@dataclass(frozen=True)
class Catalog:
    """A loaded catalog file (``entries`` is empty when the file does not exist)."""

    path: Path
    entries: dict[str, CatalogEntry]

    def get(self, name: str) -> CatalogEntry:
        """The entry named ``name``.

        Raises
        ------
        ConfigError
            No such entry; the message lists the known names and the catalog file.
        """
        check_name(name)
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ConfigError(
                f"no repository named {name!r} in the catalog {str(self.path)!r} (known: "
                f"{known}); add it with `icepipe repo create {name} URL`, or point "
                f"--catalog / {CATALOG_ENV} at another catalog"
            ) from None


def catalog_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The catalog file: ``path``, else ``$ICEPIPE_CATALOG``, else the user's config folder."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "icepipe" / "catalog.yaml"


def check_name(name: str) -> str:
    """Validate a catalog name (``org/name``).

    Raises
    ------
    ConfigError
        Not two parts of letters, digits, ``_ - .`` separated by one ``/``.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"expected a catalog name like 'org/name' (letters, digits, '_', '-', '.'); "
            f"got {name!r}"
        )
    return name


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate the catalog (see :func:`catalog_path` for where it is).

    Raises
    ------
    ConfigError
        The file is not YAML or an entry is invalid (the message names the entry and key).
    """
    p = catalog_path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return Catalog(path=p, entries={})
    except OSError as exc:
        raise ConfigError(f"cannot read the catalog {str(p)!r}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the catalog {str(p)!r} is not valid YAML: {exc}") from exc
    if raw is None:
        return Catalog(path=p, entries={})
    where = str(p)
    if not isinstance(raw, Mapping) or set(raw) - {"repos"}:
        raise ConfigError(f"{where}: expected a mapping with one key, 'repos'")
    repos = raw.get("repos") or {}
    if not isinstance(repos, Mapping):
        raise ConfigError(f"{where}: 'repos' must map org/name to {{url: ...}}")
    base = p.resolve().parent
    entries = {str(name): _entry(str(name), value, base, where) for name, value in repos.items()}
    return Catalog(path=p, entries=entries)


def check_entry(name: str, value: object, base: Path, where: str) -> CatalogEntry:
    """Validate one catalog entry (``repos.<name>``) of the file ``where``, whose folder is
    ``base`` (``icepipe check`` checks a catalog entry by entry).

    Raises
    ------
    ConfigError
        The entry is invalid (the message names the key).
    """
    return _entry(name, value, base, where)


def _entry(name: str, value: object, base: Path, where: str) -> CatalogEntry:
    try:
        check_name(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    at = f"repos.{name}"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a 'url'", field=at)
    m = cast(Mapping[str, Any], value)
    no_unknown(m, _ENTRY_KEYS, f"{at}.", context=where)
    url = m.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: missing; expected a path or URL", field=f"{at}.url")
    url = url.strip()
    refuse_credentials_in_url(url, f"{at}.url")
    if is_local(url):
        url = os.path.normpath(base / os.path.expanduser(url.removeprefix("file://")))
    description = m.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}: expected a string", field=f"{at}.description")
    raw_storage = m.get("storage") or {}
    if not isinstance(raw_storage, Mapping):
        raise ConfigError(f"{where}: expected a mapping", field=f"{at}.storage")
    # Parsed first: it says more than "unknown key" about a secret written in the file.
    storage = parse_storage_options(raw_storage, f"{at}.storage.")
    no_unknown(raw_storage, STORAGE_KEYS, f"{at}.storage.", context=where)
    if is_local(url) and not storage.is_default:
        raise ConfigError(
            f"{where}: storage options apply to object-store repositories (s3://...), and "
            f"the url is the local path {url!r}; remove them",
            field=f"{at}.storage",
        )
    config = parse_repo_config(m.get("config"), f"{at}.config")
    return CatalogEntry(
        name=name, url=url, description=description.strip(), storage=storage, config=config
    )


@contextmanager
def edit_catalog(path: str | os.PathLike[str] | None = None) -> Iterator[dict[str, CatalogEntry]]:
    """Yield the catalog's entries for editing; write them back atomically on success.

    An OS lock serialises concurrent editors; the file is replaced by a rename, so readers see
    the old or the new catalog, never half of one.

    Raises
    ------
    ConfigError
        The catalog cannot be read or written.
    """
    p = catalog_path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        lock = open(p.parent / f".{p.name}.lock", "a+")  # noqa: SIM115 - held across the yield
    except OSError as exc:
        raise ConfigError(f"cannot write the catalog {str(p)!r}: {exc.strerror}") from exc
    with lock:
        _lock_file(lock.fileno())  # released when the file closes
        entries = dict(load_catalog(p).entries)
        yield entries
        doc = {"repos": {n: entries[n].to_yaml() for n in sorted(entries)}}
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("# icepipe repository catalog (see `icepipe repo --help`)\n")
                yaml.safe_dump(doc, fh, sort_keys=False)
            os.replace(tmp, p)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ConfigError(f"cannot write the catalog {str(p)!r}: {exc.strerror}") from exc


def resolve_target(
    repo: str,
    storage: StorageOptions,
    settings: dict[str, Any],
    *,
    base: str | os.PathLike[str] | None = None,
) -> tuple[str, StorageOptions, dict[str, Any]]:
    """Replace a catalog reference in ``target.repo`` (``catalog:org/name``, or a bare
    ``org/name`` the catalog holds; see :func:`resolve_repo`) by the entry's location,
    storage options and settings (other values are returned unchanged).

    Raises
    ------
    UnknownSchemeError
        ``repo`` starts with an unknown ``xxx:`` prefix.
    ConfigError
        The entry does not exist, or the pipeline also sets storage options or ``config``
        (they belong to the catalog entry then).
    """
    entry = resolve_repo(repo, storage=storage, config=settings, base=base, where="target.repo")
    if not entry.name:
        return repo, storage, settings
    return entry.url, entry.storage, dict(entry.config)


def check_prefix(value: str, where: str = "repo") -> None:
    """Refuse a repository argument with an unknown ``xxx:`` prefix (see
    :class:`UnknownSchemeError`); ``catalog:`` and known URL schemes (``s3://``, ...) pass.

    Raises
    ------
    UnknownSchemeError
        The prefix is unknown, or a known scheme lacks its ``//`` (``s3:bucket``).
    """
    m = _PREFIX_RE.match(value.strip())
    if not m:
        return
    prefix = m.group(1).lower()
    rest = value.strip()[m.end() :]
    if prefix in ("catalog", "icechunk") or (prefix in KNOWN_SCHEMES and rest.startswith("//")):
        return
    hint = (
        f"did you mean {prefix}://{rest.lstrip('/')}?"
        if prefix in KNOWN_SCHEMES
        else f"name a catalog entry as catalog:ORG/NAME (e.g. catalog:{rest or 'org/name'}), "
        "an alias of icechunk's command line as icechunk:ALIAS, use a URL (s3://, gs://, az://, "
        "file://), or write ./" + value.strip() + " for a local folder of that name"
    )
    raise UnknownSchemeError(
        f"{value!r} starts with {prefix + ':'!r}, which is neither 'catalog:', 'icechunk:' nor "
        "a URL scheme "
        f"icepipe knows ({', '.join(s + '://' for s in sorted(KNOWN_SCHEMES))}); {hint}",
        value=value,
        field=where,
    )


def resolve_repo(
    value: str | os.PathLike[str],
    *,
    storage: StorageOptions | None = None,
    config: Mapping[str, Any] | None = None,
    base: str | os.PathLike[str] | None = None,
    where: str = "repo",
) -> CatalogEntry:
    """What a repository argument names, as a catalog entry (``name`` empty for plain
    locations).

    - ``catalog:org/name``: the catalog's entry (its location, storage options and settings);
    - a bare ``org/name`` that the catalog holds, when no local folder of that (relative) name
      exists: the entry too;
    - a path (``os.PathLike`` values always are), ``file://``, ``s3://``, ``gs://``, ``az://``:
      that location, reached with ``storage`` and ``config``.

    ``base`` is the folder relative paths are relative to (the current one by default).

    Raises
    ------
    UnknownSchemeError
        ``value`` starts with an unknown ``xxx:`` prefix.
    ConfigError
        No such catalog entry; storage options or settings given for a catalog entry (they
        belong to the entry); a bare ``org/name`` that is both a local folder and a catalog
        entry elsewhere.
    """
    options = storage or StorageOptions()
    settings = dict(config or {})
    if not isinstance(value, str):
        return CatalogEntry(name="", url=os.fspath(value), storage=options, config=settings)
    text = value.strip()
    check_prefix(text, where)
    if text.startswith(ICECHUNK_PREFIX):
        _no_options(value, options, settings, where)
        return icechunk_alias(text.removeprefix(ICECHUNK_PREFIX), where=where)
    if text.startswith(CATALOG_PREFIX):
        name = text.removeprefix(CATALOG_PREFIX)
    elif _NAME_RE.match(text) and not text.startswith("."):
        entry = load_catalog().entries.get(text)
        if entry is None:
            return CatalogEntry(name="", url=value, storage=options, config=settings)
        local = Path(base or ".") / text
        if local.exists() and os.path.normpath(local.absolute()) != entry.url:
            raise ConfigError(
                f"{text!r} is both a local folder ({str(local.absolute())!r}) and the catalog "
                f"entry {text!r} (at {entry.url!r}); write catalog:{text} for the entry or "
                f"./{text} for the folder",
                field=where,
            )
        name = text
    else:
        return CatalogEntry(name="", url=value, storage=options, config=settings)
    _no_options(value, options, settings, where)
    try:
        return load_catalog().get(name)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix(f"{exc.field}: "), field=where) from None


def _no_options(
    value: str, options: StorageOptions, settings: Mapping[str, Any], where: str
) -> None:
    if not options.is_default or settings:
        raise ConfigError(
            f"{value!r} takes its storage options and config from the catalog; do not pass "
            "them as well, or edit the catalog entry",
            field=where,
        )


def icechunk_cli_config() -> Path:
    """The configuration file of icechunk's command line (``icechunk config add ALIAS``):
    ``$XDG_CONFIG_HOME/icechunk/cli-config.yaml``, else ``~/.config/icechunk/...``."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "icechunk" / "cli-config.yaml"


class _TaggedLoader(yaml.SafeLoader):
    """Reads icechunk's YAML, whose enums are tagged (``!LocalFileSystem``, ``!S3``)."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    body = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else {}
    return {"__kind__": suffix, **{str(k): v for k, v in body.items()}}


_TaggedLoader.add_multi_constructor("!", _tagged)


def icechunk_alias(alias: str, *, where: str = "repo") -> CatalogEntry:
    """The repository an alias of icechunk's command line names (``icechunk:ALIAS``): a local
    folder, or an S3, GCS or Azure location with its endpoint, region and addressing.

    Credentials come from this process's environment (the standard chains), as for
    icechunk's ``from_env``; an alias holding static credentials is refused.

    Raises
    ------
    ConfigError
        No such alias (the message lists the known ones and the file), an unreadable file,
        or an alias icepipe cannot reach (static credentials, Tigris).
    """
    path = icechunk_cli_config()
    try:
        raw = yaml.load(path.read_text(), Loader=_TaggedLoader) if path.exists() else None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read icechunk's configuration {str(path)!r}: {exc}") from exc
    repos = (raw or {}).get("repos") or {} if isinstance(raw, Mapping) else {}
    found = repos.get(alias)
    if not isinstance(found, Mapping):
        known = ", ".join(sorted(map(str, repos))) or "none"
        raise ConfigError(
            f"no repository alias {alias!r} in icechunk's configuration {str(path)!r} (known: "
            f"{known}); add it with `icechunk config add {alias}`",
            field=where,
        )
    return _alias_entry(alias, found, where)


def _alias_entry(alias: str, d: Mapping[str, Any], where: str) -> CatalogEntry:
    name = f"{ICECHUNK_PREFIX}{alias}"
    kind = d.get("__kind__")
    if kind == "LocalFileSystem":
        return CatalogEntry(name=name, url=os.path.abspath(os.path.expanduser(str(d["path"]))))
    location = d.get("location") or {}
    prefix = str(location.get("prefix") or "").strip("/")
    credentials = d.get("credentials") or {}
    ctype = next((str(v) for k, v in credentials.items() if k.endswith("credential_type")), "")
    if ctype not in ("", "from_env", "anonymous"):
        raise ConfigError(
            f"icechunk alias {alias!r} holds {ctype} credentials, which icepipe does not read "
            "from icechunk's file; use from_env credentials, or register the repository with "
            "`icepipe repo create NAME URL --access-key-id-env VAR --secret-access-key-env VAR`",
            field=where,
        )
    if kind == "S3":
        o = d.get("object_store_config") or {}
        storage = StorageOptions(
            endpoint=(str(o["endpoint_url"]).rstrip("/") if o.get("endpoint_url") else None),
            region=o.get("region") or None,
            force_path_style=bool(o.get("force_path_style")),
            allow_http=bool(o.get("allow_http")),
            anonymous=bool(o.get("anonymous")) or ctype == "anonymous",
        )
        url = f"s3://{location['bucket']}/{prefix}".rstrip("/")
        return CatalogEntry(name=name, url=url, storage=storage)
    if kind == "GCS":
        return CatalogEntry(name=name, url=f"gs://{location['bucket']}/{prefix}".rstrip("/"))
    if kind == "Azure":
        return CatalogEntry(name=name, url=f"az://{location['container']}/{prefix}".rstrip("/"))
    raise ConfigError(
        f"icechunk alias {alias!r} is a {kind} repository, which icepipe cannot reach; use a "
        "local, S3, GCS or Azure repository",
        field=where,
    )
