"""Plain-text renderings of what the operations commands return (the CLI prints them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from icepipe.ops.repos import RepoSummary
from icepipe.ops.status import PipelineStatus
from icepipe.ops.validate import ValidationReport

__all__ = [
    "human_bytes",
    "render_diff",
    "render_lag",
    "render_refs",
    "render_repo",
    "render_repos",
    "render_status",
    "render_tree",
    "render_validation",
]


def human_bytes(n: float | None) -> str:
    """``1.4 MiB``; ``-`` for ``None`` (the commands' and the web pages' sizes)."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{seconds:.0f}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def render_lag(lag: dict[str, Any]) -> tuple[str | None, str | None]:
    """A status's lag (``PipelineStatus.lag``) as text: files pending behind the sources, and
    the last stored coordinate with its age (each ``None`` when unknown)."""
    pending = None
    if lag:
        pending = (
            f"{lag.get('files_pending')} file(s) pending ({human_bytes(lag.get('bytes_pending'))}) "
            f"of {lag.get('files_listed')} listed"
        )
        if lag.get("mtime_lag_seconds") is not None:
            pending += f"; newest file {_duration(lag['mtime_lag_seconds'])} newer than ingested"
    until = None
    if lag and "last_coordinate" in lag:
        age = lag.get("data_age_seconds")
        until = str(lag["last_coordinate"])
        if age is not None:  # data reaching into the future (scenarios, forecasts): ahead
            until += f" ({_duration(age)} ago)" if age >= 0 else f" ({_duration(-age)} ahead)"
    return pending, until


def render_status(statuses: Sequence[PipelineStatus], errors: Sequence[str] = ()) -> str:
    lines: list[str] = []
    for s in statuses:
        lines.append(f"{s.pipeline}  ({s.pipeline_file})")
        lines.append(f"  target     {s.repo} [{s.branch}] {s.group or '/'}")
        if s.schedule:
            lines.append(f"  schedule   {s.schedule}; next run {s.next_run}")
        c = s.last_commit
        if c:
            lines.append(
                f"  last commit {c['snapshot_id']} at {c['written_at']}: {c['files']} file(s) "
                f"(tip {s.tip})"
            )
        elif s.tip:
            lines.append(f"  last commit none by this pipeline (tip {s.tip})")
        pending, until = render_lag(s.lag)
        if pending:
            lines.append(f"  lag        {pending}")
        if until:
            lines.append(f"  data until {until}")
        if s.runs:
            lines.append("  last runs")
            for r in s.runs:
                err = f"  {r['error'].splitlines()[0][:100]}" if r.get("error") else ""
                lines.append(
                    f"    {r['started_at']}  {r['status']:<12} exit {r['exit_code']:<3} "
                    f"{r['files_new']:>4} new  {_duration(r.get('seconds')):>5}{err}"
                )
        else:
            lines.append("  last runs  none recorded")
        for p in s.problems:
            lines.append(f"  problem    {p}")
        lines.append("")
    lines += [f"error: {e}" for e in errors]
    return "\n".join(lines).rstrip() + "\n"


def render_validation(r: ValidationReport) -> str:
    return (
        f"{r.pipeline}: OK, {len(r.files_checked)} of {r.files_ingested} ingested file(s) "
        f"identical in {r.repo} [{r.ref or r.branch}] {r.group or '/'} at {r.snapshot_id} "
        f"({r.variables_checked} variables, {r.values_checked} values, {r.seconds:.2f}s)\n"
        + "".join(f"  {u}\n" for u in r.files_checked)
    )


def render_diff(d: Any) -> str:
    lines = [f"{d.from_id} -> {d.to_id}"]
    sections = (
        ("groups created", d.new_groups),
        ("arrays created", d.new_arrays),
        ("groups deleted", d.deleted_groups),
        ("arrays deleted", d.deleted_arrays),
        ("group metadata changed", d.updated_groups),
        ("array metadata changed", d.updated_arrays),
    )
    for title, items in sections:
        if items:
            lines.append(f"{title}: {', '.join(items)}")
    if d.updated_chunks:
        lines.append("chunks written:")
        lines += [f"  {path}: {n}" for path, n in d.updated_chunks.items()]
    if d.commits:
        lines.append(f"{len(d.commits)} commit(s):")
        for c in d.commits:
            files = f" ({c.n_files} file(s))" if c.n_files is not None else ""
            lines.append(f"  {c.id}  {c.written_at:%Y-%m-%d %H:%M:%S}  {c.message}{files}")
    if d.files:
        lines.append(f"{len(d.files)} source file(s) ingested:")
        lines += [f"  {u}" for u in d.files[:20]]
        if len(d.files) > 20:
            lines.append(f"  ... and {len(d.files) - 20} more")
    if len(lines) == 1:
        lines.append("no changes")
    return "\n".join(lines) + "\n"


def render_refs(refs: Sequence[Any], kind: str | None = None) -> str:
    rows = [r for r in refs if kind is None or r.kind == kind]
    if not rows:
        return f"no {kind or 'ref'}s\n"
    width = max(len(r.name) for r in rows)
    return "".join(
        f"{r.kind:<6} {r.name:<{width}}  {r.snapshot_id}  {r.written_at:%Y-%m-%d %H:%M:%S}  "
        f"{r.message}\n"
        for r in rows
    )


def _edges(edges: Sequence[int]) -> str:
    """A rectilinear dimension's chunk lengths, run-length encoded (``365*2,366``), or summed
    up when they vary too much to list (``120 chunks 28-31``)."""
    runs: list[list[int]] = []
    for e in edges:
        if runs and runs[-1][0] == e:
            runs[-1][1] += 1
        else:
            runs.append([e, 1])
    if len(runs) > 6:
        return f"{len(edges)} chunks {min(edges)}-{max(edges)}"
    return ",".join(f"{e}*{k}" if k > 1 else str(e) for e, k in runs)


def _chunks(n: Any) -> str:
    """``24x90x180``; a rectilinear dimension as its edges in parentheses:
    ``(365,366,365)x2x3``."""
    edges = n.edges or (None,) * len(n.chunks or ())
    return "x".join(
        str(k) if e is None else f"({_edges(e)})"
        for k, e in zip(n.chunks or (), edges, strict=True)
    )


def render_tree(nodes: Sequence[Any], *, header: str) -> str:
    lines = [header]
    if not nodes:
        lines.append("(empty: nothing has been written to this snapshot)")
    for n in nodes:
        depth = 0 if n.path == "/" else n.path.count("/")
        indent = "  " * depth
        name = n.path.rsplit("/", 1)[-1] or "/"
        if n.is_group:
            lines.append(f"{indent}{name}")
            continue
        dims = f"({', '.join(n.dims)}) " if n.dims else ""
        shape = " x ".join(map(str, n.shape)) or "scalar"
        chunks = _chunks(n)
        shards = f" shards {'x'.join(map(str, n.shards))}" if n.shards else ""
        written = n.native + n.inline + n.virtual
        if written:
            kinds = ", ".join(
                f"{k} {getattr(n, k) / written:.0%}"
                for k in ("virtual", "native", "inline")
                if getattr(n, k)
            )
        else:
            kinds = "nothing written"
        lines.append(
            f"{indent}{name} {dims}{shape} {n.dtype} chunks {chunks}{shards}: "
            f"{written}/{n.grid} stored ({kinds})"
        )
    return "\n".join(lines) + "\n"


def render_repos(repos: Sequence[RepoSummary], catalog: str) -> str:
    if not repos:
        return f"no repositories in the catalog {catalog}\n"
    width = max(len(r.name) for r in repos)
    out = []
    for r in repos:
        state = {True: "", False: "  (missing)", None: "  (unchecked)"}[r.exists]
        if r.problem:
            state = f"  (cannot open: {r.problem.splitlines()[0][:80]})"
        desc = f"  {r.description}" if r.description else ""
        out.append(f"{r.name:<{width}}  {r.url}{state}{desc}\n")
    return "".join(out)


def render_repo(r: RepoSummary) -> str:
    lines = [f"{r.name or r.url}", f"  url         {r.url}"]
    if r.description:
        lines.append(f"  description {r.description}")
    if r.storage:
        lines.append(f"  storage     {r.storage}")
    if r.config:
        lines.append(f"  config      {r.config}")
    if r.problem:
        lines.append(f"  problem     {r.problem}")
    elif not r.exists:
        lines.append("  exists      no")
    else:
        for name, snap in r.branches.items():
            lines.append(f"  branch      {name} -> {snap}")
        for name, snap in r.tags.items():
            lines.append(f"  tag         {name} -> {snap}")
        for c in r.containers:
            lines.append(f"  container   {c}")
    return "\n".join(lines) + "\n"
