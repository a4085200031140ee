"""Errors raised for bad input.

Every user-facing error derives from :class:`UnlearnkitError` (a ``ValueError``), carries a single
line that names the problem, and is turned into exit code 2 by the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable


class UnlearnkitError(ValueError):
    """Bad input from the user: one clear line naming the problem."""


class ConfigError(UnlearnkitError):
    """A configuration file or option is missing, malformed or names something unknown."""


class DataAccessError(UnlearnkitError):
    """A method asked for data its scenario does not give it (e.g. retain data in a no-retain setting)."""


class StoreError(UnlearnkitError):
    """The results store cannot be read or written (damaged, not an unlearnkit store, locked by another process)."""


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite during training; the run is recorded as failed."""


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and adjacent transpositions turning ``a`` into ``b`` (OSA distance)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest names by edit distance, or an empty string.

    A name is close when at most ``max(2, len(name) // 3)`` edits away, or when one is the other plus a
    ``_suffix`` (``lr_typo`` -> ``lr``); the three closest are named.
    """

    def close(c: str) -> bool:
        longer, shorter = (name, c) if len(name) >= len(c) else (c, name)
        return edit_distance(name, c) <= max(2, len(name) // 3) or (bool(shorter) and longer.startswith(shorter + "_"))

    found = sorted((edit_distance(name, c), c) for c in set(choices) if c != name and close(c))
    if not found:
        return ""
    return " (did you mean " + " or ".join(repr(c) for _, c in found[:3]) + "?)"
