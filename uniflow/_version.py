"""The installed version: the one source (pyproject reads it from here)."""

__version__ = "0.2.0"
