"""Deprecated: the training data helpers moved to :mod:`so3krates.train.pipeline` (this path goes away in
the next release)."""

from so3krates.deprecation import moved

__getattr__ = moved(
    __name__,
    {
        name: "so3krates.train.pipeline"
        for name in (
            "DEFAULT_DATASET",
            "default_dataset_path",
            "load_frames",
            "build_graphs",
            "file_sha256",
            "elements_of",
            "GraphSize",
            "LazyGraphs",
        )
    },
)
