"""Deprecated: moved to :mod:`so3krates.inference.neighbours`."""

from so3krates.deprecation import moved

__getattr__ = moved("so3krates.md.neighbours", {"*": "so3krates.inference.neighbours"})
