"""What a scan under ``source.variables`` / ``source.drop_variables`` may keep of a file: the
one rule the quick routes' layout keys share (:mod:`~icepipe.sources.formats.hdf5_index`,
:mod:`~icepipe.sources.formats.netcdf3_header`), so that files differing only in what the
selection leaves out share a template, and both formats leave out the same things."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LINKING", "may_keep"]

#: Attributes by which a variable changes how others are read (CF coordinates, the bounds of
#: a loaded time coordinate): a variable holding one is never left out.
LINKING = frozenset({"coordinates", "bounds", "climatology"})


def may_keep(
    names: Iterable[str],
    linked: set[str],
    coordinates: set[str],
    order_by: str | None,
    variables: tuple[str, ...] | None,
    drop_variables: tuple[str, ...],
) -> set[str]:
    """A superset of the ``names`` a scan keeps. Left out are only the dropped ones, and,
    with ``variables``, those not named there that nothing can make a coordinate (in
    ``coordinates``: named like a dimension, or in a ``coordinates`` attribute); never one of
    ``linked`` (holding a :data:`LINKING` attribute) nor ``order_by``."""
    kept = set(names)
    if variables is not None:
        kept &= {*variables, *([order_by] if order_by else []), *linked, *coordinates}
    return kept - {n for n in drop_variables if n not in linked}
