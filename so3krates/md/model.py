"""Deprecated: moved to :mod:`so3krates.inference` (``Model`` is now ``ForceField``, ``load_model`` is
``load_force_field``)."""

from so3krates.deprecation import moved

__getattr__ = moved(
    "so3krates.md.model",
    {
        "Model": "so3krates.inference.force_field:ForceField",
        "load_model": "so3krates.inference.force_field:load_force_field",
        "check_elements": "so3krates.inference.force_field",
        "*": "so3krates.inference.batches",
    },
)
