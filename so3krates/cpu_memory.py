"""Deprecated: moved to :mod:`so3krates.runtime.cpu_memory` (tuning is opt-in: :func:`so3krates.runtime.configure`)."""

from so3krates.deprecation import moved

__getattr__ = moved("so3krates.cpu_memory", {"*": "so3krates.runtime.cpu_memory"})
