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
    # ... except that a leading dot is matched only by a leading dot, as the shell does.
    hidden = name.startswith(".") and not pattern.startswith(".")
    expected = fnmatch.fnmatchcase(name, pattern) and not hidden
    assert bool(glob_to_regex(pattern).match(name)) == expected


@given(
    pattern=st.lists(st.text(alphabet="ab.*?[]", min_size=1, max_size=4), min_size=1, max_size=3),
    name=st.lists(st.text(alphabet="ab.", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_a_path_matches_as_glob_module_says(pattern: list[str], name: list[str]) -> None:
    """Segment by segment (without ``**``), as :func:`glob.glob` lists a folder tree: hidden
    names only for a segment that starts with a dot."""
    if any("**" in p for p in pattern) or len(pattern) != len(name):
        return
    expected = all(
        fnmatch.fnmatchcase(n, p) and (p.startswith(".") or not n.startswith("."))
        for p, n in zip(pattern, name, strict=True)
    )
    assert bool(glob_to_regex("/".join(pattern)).match("/".join(name))) == expected


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
        # Hidden names (macOS's ._ files, rsync's temporary .name.XXXXXX) need a leading dot.
        ("*.nc", "._a.nc", False),
        (".*.nc", "._a.nc", True),
        ("?a.nc", ".a.nc", False),
        ("[.]a.nc", ".a.nc", False),
        ("**/a.nc", ".snapshot/a.nc", False),
        ("**/a.nc", "d/.e/a.nc", False),
        ("d/**", "d/e/.a.nc", False),
        ("d/.snapshot/*.nc", "d/.snapshot/a.nc", True),
        ("a**/b", "ab", True),
        ("a**/b", "ax/y/b", True),
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
