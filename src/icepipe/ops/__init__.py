"""Operations on top of pipelines and repositories: run reports, progress, status, validation,
staged runs, scheduling and the repository catalog.

Each module is imported by :mod:`icepipe.cli` on demand; none imports icechunk directly (that
stays in :mod:`icepipe.repository`).
"""
