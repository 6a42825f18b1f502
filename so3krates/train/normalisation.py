"""Deprecated: moved to :mod:`so3krates.train.normalization` (identifiers spell it as the weights' key does)."""

from so3krates.deprecation import moved

__getattr__ = moved(
    "so3krates.train.normalisation",
    {
        "NORMALISATION_FRAMES": "so3krates.train.normalization:NORMALIZATION_FRAMES",
        "*": "so3krates.train.normalization",
    },
)
