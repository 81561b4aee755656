"""globs.py: glob patterns over paths and URLs, as the spec checks and the listing uses them."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from icepipe.globs import glob_to_regex, split_glob

# Within one path segment a glob means what fnmatch says (but `[^...]`, a negation here too).
_SEGMENT = st.text(alphabet="ab.-]![*?", max_size=8)


@given(pattern=_SEGMENT, name=st.text(alphabet="ab.-]![", max_size=6))
@example(pattern="x[]y.nc", name="x[]y.nc")  # `]` first in a class is a member, not its end
@example(pattern="[]x]", name="]")
@example(pattern="[!]x]", name="a")
@example(pattern="[b-a]", name="a")  # an empty range matches nothing
@example(pattern="[a-]", name="-")
@example(pattern="[[]", name="[")
def test_a_segment_matches_as_fnmatch_says(pattern: str, name: str) -> None:
    assert bool(glob_to_regex(pattern).match(name)) == fnmatch.fnmatchcase(name, pattern)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.nc", "a.nc", True),
        ("*.nc", "d/a.nc", False),  # `*` stays within a segment
        ("?/a.nc", "d/a.nc", True),
        ("??a.nc", "d/a.nc", False),
        ("**/a.nc", "a.nc", True),
        ("**/a.nc", "d/e/a.nc", True),
        ("d/**", "d/e/a.nc", True),
        ("[!x]*.nc", "a.nc", True),
        ("[^x]*.nc", "x.nc", False),
        ("a[", "a[", True),
        ("a.nc", "a.nc\n", False),  # the whole name, newlines included
        ("*", "a\nb", True),
    ],
)
def test_paths(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_to_regex(pattern).match(path)) is matches


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("/a/b/*/c*.nc", ("/a/b", "*/c*.nc")),
        ("/a/b/c.nc", ("/a/b", "c.nc")),
        ("/*.nc", ("/", "*.nc")),
        ("rel/x[12].nc", ("rel", "x[12].nc")),
        ("c?.nc", ("/", "c?.nc")),
    ],
)
def test_split_glob_at_the_first_segment_holding_a_pattern(
    path: str, split: tuple[str, str]
) -> None:
    assert split_glob(path) == split
