"""Deprecated: moved to :mod:`so3krates.runtime.hugepages` (tuning is opt-in: :func:`so3krates.runtime.configure`)."""

from so3krates.deprecation import moved

__getattr__ = moved("so3krates.hugepages", {"*": "so3krates.runtime.hugepages"})
