"""Errors raised for bad input.

Every user-facing error derives from :class:`UnlearnkitError` (a ``ValueError``), carries a single
line that names the problem, and is turned into exit code 2 by the CLI.
"""

from __future__ import annotations

import difflib
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


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest names, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
