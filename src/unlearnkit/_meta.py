"""The package version (its own module, so that any layer can record it without importing the whole API)."""

from __future__ import annotations


def _version() -> str:
    """The installed distribution's version; from a source tree run without installation, pyproject.toml's."""
    from importlib import metadata
    from pathlib import Path

    try:
        return metadata.version("unlearnkit")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()
