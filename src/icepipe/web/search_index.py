"""The search index of ``icepipe web``: SQLite FTS5 over every repository the server knows.

What is indexed (one row per *document*):

- each repository (:func:`icepipe.web.config.known_repos`): its key, description, location,
  branches and the names of the pipelines writing into it;
- each group and array at the tip of each of its branches: path, dimensions, shape, dtype and
  attributes (``long_name``, ``standard_name``, ``units``, ``description``, ``title`` weigh
  more; every other string attribute, as ``name value``, less). A node is indexed once: from
  the default branch (``main``, else the first branch) when it is there, else from the first
  other branch holding it (its result then links to that branch). Tags are not indexed
  (they mark snapshots of the branches' history);
- each pipeline writing into a repository: name, source URLs or patterns, format, mode, group.

The index lives in memory (one SQLite connection; nothing is written inside a repository).
:meth:`SearchIndex.refresh` reads each repository's branch tips (one ``list_refs``, cheap)
and re-reads only the repositories whose tips changed since the last build (or which
appeared); repositories no longer known are dropped. ``force=True`` re-reads every one.

User text never reaches FTS5's query syntax: it is split into words, each word becomes a
quoted string (``"sea" "surface"*``), the last one a prefix; ``AND``/``OR``/``NEAR``/``*`` and
quotes are plain text. Results are ranked with ``bm25`` and the column weights of
:data:`WEIGHTS`. All words must match; when nothing does, any word may.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from icepipe.errors import ConfigError, IcepipeError
from icepipe.web.config import KnownRepo, WebConfig, known_repos
from icepipe.web.text import safe_text

__all__ = [
    "WEIGHTS",
    "BuildStats",
    "Document",
    "Hit",
    "SearchIndex",
    "check_fts5",
    "fts_query",
    "repo_documents",
]

#: Indexed columns and their bm25 weights (a match in ``name`` counts most).
WEIGHTS = {"name": 10.0, "attrs": 6.0, "path": 3.0, "other": 1.0}
#: Attributes that describe a variable: indexed in ``attrs`` (the others go to ``other``).
MAIN_ATTRS = ("long_name", "standard_name", "units", "description", "title")
#: The most characters one attribute value adds to the index (long ``history`` texts).
MAX_VALUE_CHARS = 2000
#: The most branches indexed per repository.
MAX_BRANCHES = 20
#: The most words of a query used.
MAX_TERMS = 16

_UNINDEXED = ("kind", "repo", "ref", "title")  # shown, not searched
_COLUMNS = (*_UNINDEXED, *WEIGHTS)
# Snippet markers: control characters, removed from indexed text so they mark matches only.
_OPEN, _CLOSE = "\x02", "\x03"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WORD = re.compile(r"[^\W_]+")


def check_fts5() -> None:
    """Raise :class:`ConfigError` when this Python's SQLite lacks FTS5 (the search needs it)."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
    except sqlite3.OperationalError as exc:
        raise ConfigError(
            f"the SQLite of this Python (sqlite3 {sqlite3.sqlite_version}) has no FTS5 "
            f"({exc}): icepipe web's search needs it; use a Python whose SQLite is built with "
            "FTS5 (python.org, Debian, conda and uv builds are)"
        ) from exc
    finally:
        con.close()


def fts_query(text: str, *, any_word: bool = False) -> str | None:
    """The FTS5 query for user ``text`` (``None`` when it holds no word).

    Every word is a quoted string (quotes doubled), so no text is FTS5 syntax; the last word
    matches as a prefix (``temp`` finds ``temperature``). Words are joined with ``AND``, or
    ``OR`` with ``any_word``.
    """
    words = _WORD.findall(text)[:MAX_TERMS]
    if not words:
        return None
    quoted = ['"' + w.replace('"', '""') + '"' for w in words]
    quoted[-1] += "*"
    return (" OR " if any_word else " AND ").join(quoted)


@dataclass(frozen=True)
class Document:
    """One indexed thing: ``kind`` is ``repo``, ``group``, ``array`` or ``pipeline``; ``ref``
    the branch it was read from when not the default branch (else ``""``)."""

    kind: str
    repo: str
    path: str = ""
    ref: str = ""
    title: str = ""
    name: str = ""
    attrs: str = ""
    other: str = ""

    def row(self) -> tuple[str, ...]:
        return tuple(_clean(getattr(self, c)) for c in _COLUMNS)


@dataclass(frozen=True)
class Hit:
    """One search result (``snippet``: HTML, escaped, the matched words in ``<mark>``)."""

    kind: str
    repo: str
    path: str
    ref: str
    title: str
    snippet: Markup
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "repo": self.repo,
            "path": self.path,
            "ref": self.ref or None,
            "title": self.title,
            "snippet": self.snippet,  # Markup: a str, not escaped again by templates
            "score": self.score,
        }


@dataclass
class BuildStats:
    """What the last :meth:`SearchIndex.refresh` did."""

    repos: int = 0
    repos_read: int = 0
    documents: int = 0
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def _clean(text: str) -> str:
    """Indexed text: no control characters (they mark matches), UTF-8 (SQLite refuses lone
    surrogates: :func:`safe_text`)."""
    return safe_text(_CONTROL.sub(" ", text))


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)[:MAX_VALUE_CHARS]
    return None


def _node_document(key: str, path: str, node: Any, ref: str) -> Document:
    """The document of one group or array (``node``: a zarr Group or Array)."""
    import zarr

    attrs = dict(node.attrs)
    main = [t for a in MAIN_ATTRS if (t := _text(attrs.get(a)))]
    rest = [f"{a} {t}" for a, v in sorted(attrs.items()) if a not in MAIN_ATTRS and (t := _text(v))]
    titles = (_text(attrs.get(a)) for a in ("long_name", "title", "standard_name"))
    title = next((t for t in titles if t), "")
    name = path.rstrip("/").rsplit("/", 1)[-1] or "/"
    if isinstance(node, zarr.Array):
        names = node.metadata.dimension_names if node.metadata.zarr_format == 3 else None
        dims = [str(d) for d in names or ()]
        shape = " x ".join(str(n) for n in node.shape)
        info = f"{' '.join(dims)} {shape} {node.dtype}"
        return Document(
            "array", key, path, ref, title, name, " ".join(main), f"{info} {key} {' '.join(rest)}"
        )
    return Document("group", key, path, ref, title, name, " ".join(main), f"{key} {' '.join(rest)}")


def _walk(key: str, session: Any, ref: str, seen: set[str]) -> Iterator[Document]:
    """The documents of the groups and arrays of ``session`` whose paths are not in ``seen``."""
    import zarr

    from icepipe.repository.grids import rectilinear_enabled

    with rectilinear_enabled():
        try:
            root = zarr.open_group(session.store, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            return  # a new repository: nothing written yet
        nodes = [("/", root), *(("/" + n, node) for n, node in root.members(max_depth=None))]
        for path, node in sorted(nodes, key=lambda pn: pn[0]):
            if path in seen or (path == "/" and not dict(node.attrs)):
                continue
            seen.add(path)
            yield _node_document(key, path, node, ref)


def _open(known: KnownRepo) -> Any:
    from icepipe import repository

    e = known.entry
    return repository.open_repo(e.url, storage=e.storage, config=e.config)


def branch_tips(known: KnownRepo) -> tuple[tuple[str, str], ...]:
    """``(branch, snapshot id)`` of every branch of ``known``, default branch first
    (empty when the repository does not exist). Reads the refs only: no snapshot."""
    from icepipe import repository

    try:
        repo = _open(known)
    except repository.RepoNotFoundError:
        return ()
    tips = [(b, repo.lookup_branch(b)) for b in repo.list_branches()]
    tips.sort(key=lambda t: (t[0] != "main", t[0]))
    return tuple(tips[:MAX_BRANCHES])


def _pipeline_documents(known: KnownRepo) -> Iterator[Document]:
    """The pipelines writing into ``known``, as :func:`known_repos` loaded them (a file that
    does not load is not among them: the pipelines page shows why)."""
    for path, p in zip(known.pipelines, known.specs, strict=True):
        s = p.source
        # No secrets: the spec and the catalog refuse URLs with credentials (user:password@).
        other = " ".join([*s.urls, s.format, p.mode, s.concat_dim, p.target.group or "", known.key])
        yield Document("pipeline", known.key, path, "", p.name, p.name, "", other)


def repo_documents(
    known: KnownRepo, tips: tuple[tuple[str, str], ...] | None = None
) -> list[Document]:
    """Every document of one repository (``tips``: its branch tips, read when not given)."""
    tips = branch_tips(known) if tips is None else tips
    e = known.entry
    pipeline_docs = list(_pipeline_documents(known))
    pipelines = [d.name for d in pipeline_docs]
    docs = [
        Document(
            "repo",
            known.key,
            "",
            "",
            e.description,
            known.key,
            e.description,
            " ".join([e.url, *(b for b, _ in tips), *pipelines]),
        )
    ]
    docs += pipeline_docs
    if tips:
        repo = _open(known)
        seen: set[str] = set()
        walked: set[str] = set()
        for i, (branch, snapshot) in enumerate(tips):
            if snapshot in walked:
                continue
            walked.add(snapshot)
            session = repo.readonly_session(snapshot_id=snapshot)
            docs += _walk(known.key, session, "" if i == 0 else branch, seen)
    return docs


class SearchIndex:
    """The server's index: one in-memory SQLite database, refreshed per repository.

    ``state`` is ``empty`` (never built), ``indexing`` (the first build runs), ``ready`` or
    ``failed`` (``error`` says why: FTS5 missing, the catalog unreadable); ``repo_errors``
    names the repositories that could not be read (the others are searchable). Safe to use from
    several threads: queries and writes share one connection under a lock; one refresh at a
    time. ``check_interval``: seconds between two checks of the branch tips by
    :meth:`refresh_if_stale`.
    """

    def __init__(self, config: WebConfig, *, check_interval: float = 10.0) -> None:
        self.config = config
        self.check_interval = check_interval
        self.state = "empty"
        self.error: str | None = None
        self.stats = BuildStats()
        #: Repositories that could not be read at their last refresh, and why.
        self.repo_errors: dict[str, str] = {}
        self._tips: dict[str, tuple[tuple[str, str], ...]] = {}
        self._checked = 0.0
        self._db_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rebuild: threading.Thread | None = None
        self._con: sqlite3.Connection | None = None
        #: When the last refresh ended (``time.time()``), ``None`` before.
        self.built_at: float | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            check_fts5()
            con = sqlite3.connect(":memory:", check_same_thread=False)
            cols = ", ".join(f"{c} UNINDEXED" for c in _UNINDEXED) + ", " + ", ".join(WEIGHTS)
            con.execute(
                f"CREATE VIRTUAL TABLE docs USING fts5({cols}, "
                "tokenize = 'unicode61 remove_diacritics 2')"
            )
            self._con = con
        return self._con

    def start(self) -> None:
        """Build the index in a background thread (once; later calls do nothing)."""
        with self._db_lock:
            if self._thread is not None:
                return
            self.state = "indexing"
            self._thread = threading.Thread(
                target=self._background, name="icepipe-web-search-index", daemon=True
            )
        self._thread.start()

    def _background(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a daemon thread has no one to tell: the pages say it
            self.state, self.error = "failed", self.error or f"{type(exc).__name__}: {exc}"

    def rebuild(self) -> threading.Thread:
        """Re-read every repository in a background thread (after the first build), and the
        thread; while one runs, that one (clicking "Reindex" twice starts one rebuild)."""
        with self._db_lock:
            if self._rebuild is not None and self._rebuild.is_alive():
                return self._rebuild
            thread = threading.Thread(
                target=self._rebuild_all, name="icepipe-web-search-rebuild", daemon=True
            )
            self._rebuild = thread
            thread.start()
        return thread

    @property
    def rebuilding(self) -> bool:
        """Whether a :meth:`rebuild` runs."""
        return self._rebuild is not None and self._rebuild.is_alive()

    def _rebuild_all(self) -> None:
        self.start()
        self.wait()
        with contextlib.suppress(IcepipeError):  # self.state and self.error say what failed
            self.refresh(force=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the first build; whether it is over."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state in ("ready", "failed")

    def refresh(self, *, force: bool = False) -> BuildStats:
        """Re-read the repositories whose branch tips changed (every one with ``force``).

        A repository that cannot be read keeps only its own document and is named in
        ``stats.errors``; it is read again at the next refresh.
        """
        with self._refresh_lock:
            return self._refresh_locked(force=force)

    def _refresh_locked(self, *, force: bool) -> BuildStats:
        """:meth:`refresh`, the caller holding ``self._refresh_lock``."""
        t0 = time.perf_counter()
        stats = BuildStats()
        try:
            con = self._connection()
            repos = {r.key: r for r in known_repos(self.config)}
        except IcepipeError as exc:
            self.state, self.error = "failed", str(exc)
            raise
        with self._db_lock, con:
            for key in set(self._tips) - set(repos):
                con.execute("DELETE FROM docs WHERE repo = ?", (key,))
                del self._tips[key]
                self.repo_errors.pop(key, None)
        for known in repos.values():
            self._refresh_repo(con, known, force=force, stats=stats)
        with self._db_lock:
            (stats.documents,) = con.execute("SELECT count(*) FROM docs").fetchone()
        stats.repos = len(repos)
        stats.seconds = round(time.perf_counter() - t0, 3)
        self.stats, self.state, self.error = stats, "ready", None
        self._checked = time.monotonic()
        self.built_at = time.time()
        return stats

    def _refresh_repo(
        self, con: sqlite3.Connection, known: KnownRepo, *, force: bool, stats: BuildStats
    ) -> None:
        key = known.key
        try:
            tips = branch_tips(known)
            if not force and key in self._tips and self._tips[key] == tips:
                return
            self._replace(con, key, repo_documents(known, tips))
        except Exception as exc:  # one unreadable repository (icechunk, zarr, storage errors)
            stats.errors[key] = f"{type(exc).__name__}: {exc}"  # leaves the others indexed
            tips = (("?", "?"),)
            self._replace(con, key, [Document("repo", key, "", "", known.entry.description, key)])
        self._tips[key] = tips  # after an error: no tips match, the next refresh reads it again
        if key in stats.errors:
            self.repo_errors[key] = stats.errors[key]
        else:
            self.repo_errors.pop(key, None)
        stats.repos_read += 1

    def _replace(self, con: sqlite3.Connection, key: str, docs: Iterable[Document]) -> None:
        marks = ", ".join("?" * len(_COLUMNS))
        with self._db_lock, con:
            con.execute("DELETE FROM docs WHERE repo = ?", (key,))
            con.executemany(
                f"INSERT INTO docs ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [d.row() for d in docs],
            )

    def due(self) -> bool:
        """Whether :meth:`refresh_if_stale` would check the branch tips now."""
        return (
            self.state in ("ready", "failed")
            and not self._refresh_lock.locked()
            and time.monotonic() - self._checked >= self.check_interval
        )

    def refresh_if_stale(self) -> bool:
        """Refresh when ``check_interval`` passed since the last check and no refresh runs;
        whether one ran."""
        if not self.due() or not self._refresh_lock.acquire(blocking=False):
            return False  # several searches at once: one refresh, the others go on
        try:
            self._refresh_locked(force=False)
        except IcepipeError:  # self.state and self.error say what failed
            self._checked = time.monotonic()
        finally:
            self._refresh_lock.release()
        return True

    def search(self, text: str, *, limit: int = 50) -> list[Hit]:
        """The documents matching ``text``, best first (empty before the first build)."""
        if self._con is None or limit <= 0:
            return []
        for any_word in (False, True):
            query = fts_query(text, any_word=any_word)
            if query is None:
                return []
            hits = self._query(self._con, query, limit)
            if hits or len(_WORD.findall(text)) < 2:
                return hits
        return []

    def _query(self, con: sqlite3.Connection, query: str, limit: int) -> list[Hit]:
        weights = ", ".join(["0"] * len(_UNINDEXED) + [str(w) for w in WEIGHTS.values()])
        sql = (
            "SELECT kind, repo, path, ref, title, snippet(docs, -1, ?, ?, '…', 12), "
            f"bm25(docs, {weights}) AS score FROM docs WHERE docs MATCH ? ORDER BY score LIMIT ?"
        )
        with self._db_lock:
            rows = con.execute(sql, (_OPEN, _CLOSE, query, limit)).fetchall()
        return [
            Hit(kind, repo, path, ref, title, _highlight(snippet), round(-score, 4))
            for kind, repo, path, ref, title, snippet, score in rows
        ]


def _highlight(snippet: str) -> Markup:
    """``snippet`` escaped as HTML, the matched words in ``<mark>``."""
    return Markup(str(escape(snippet)).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>"))
