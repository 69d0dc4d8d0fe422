"""How much randomised and timed work the tests do: the default keeps CI's suite short, the ``deep``
profile (``HYPOTHESIS_PROFILE=deep``) restores the larger counts and durations the suite ran before
session 13 (docs/testing.md, "Deep runs"). Every rule is checked in both; ``deep`` only tries more
generated cases or runs longer."""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE = "HYPOTHESIS_PROFILE"
DEEP = os.environ.get(PROFILE) == "deep"

# hypothesis' own settings of the profile (tests with explicit counts take theirs from ``examples``)
settings.register_profile("deep", deadline=None)
if DEEP:
    settings.load_profile("deep")


def examples(default: int, deep: int) -> int:
    """A test's ``max_examples``: ``default`` in an ordinary run, ``deep`` under the deep profile."""
    return deep if DEEP else default


def seconds(default: float, deep: float) -> float:
    """A timed test's duration: ``default`` in an ordinary run, ``deep`` under the deep profile."""
    return deep if DEEP else default
