"""Names that moved in the training package's clean-up (issue #20) still import from their old paths for
one release, each with a DeprecationWarning, and resolve to the new objects."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    ("so3krates.train.loop", "make_steps", "so3krates.train.steps", "make_steps"),
    ("so3krates.train.loop", "TrainState", "so3krates.train.steps", "TrainState"),
    ("so3krates.train.loop", "write_metrics_csv", "so3krates.train.records", "write_metrics_csv"),
    ("so3krates.train.loop", "plot_learning_curve", "so3krates.train.records", "plot_learning_curve"),
    ("so3krates.train.loop", "METRICS_FILE", "so3krates.train.records", "METRICS_FILE"),
    ("so3krates.train.loop", "NORMALISATION_FRAMES", "so3krates.train.normalization", "NORMALIZATION_FRAMES"),
    ("so3krates.train.normalisation", "fit_energy_shifts", "so3krates.train.normalization", "fit_energy_shifts"),
    ("so3krates.train.parallel", "make_parallel_train_step", "so3krates.train.steps", "make_train_step"),
    ("so3krates.train.parallel", "ParallelTrainState", "so3krates.train.steps", "TrainState"),
    ("so3krates.train.parallel", "init_train_state", "so3krates.train.steps", "init_train_state"),
    ("so3krates.train.parallel", "eq35_structure_loss", "so3krates.train.loss", "eq35_structure_loss"),
    ("so3krates.train.parallel", "split_for_devices", "so3krates.train.batching", "split_for_devices"),
    ("so3krates.train.parallel", "stack_batches", "so3krates.train.batching", "stack_batches"),
    ("so3krates.train.parallel", "max_device_pad_sizes", "so3krates.train.batching", "max_device_pad_sizes"),
    ("so3krates.train.metrics", "max_pad_sizes", "so3krates.train.batching", "max_pad_sizes"),
    ("so3krates.train.metrics", "batches", "so3krates.train.batching", "batches"),
    ("so3krates.train.data", "load_frames", "so3krates.train.pipeline", "load_frames"),
    ("so3krates.train.data", "build_graphs", "so3krates.train.pipeline", "build_graphs"),
    ("so3krates.train.data", "LazyGraphs", "so3krates.train.pipeline", "LazyGraphs"),
    ("so3krates.train.data", "default_dataset_path", "so3krates.train.pipeline", "default_dataset_path"),
    ("so3krates.train.data", "file_sha256", "so3krates.train.pipeline", "file_sha256"),
    ("so3krates.train.data", "elements_of", "so3krates.train.pipeline", "elements_of"),
]


@pytest.mark.parametrize(("old_module", "old_name", "new_module", "new_name"), MOVED)
def test_old_path_warns_and_resolves(old_module: str, old_name: str, new_module: str, new_name: str) -> None:
    old = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{new_module}.{new_name}"):
        value = getattr(old, old_name)
    assert value is getattr(importlib.import_module(new_module), new_name)


def test_from_import_of_an_old_path_works() -> None:
    with pytest.warns(DeprecationWarning):
        from so3krates.train.parallel import make_parallel_train_step
    from so3krates.train.steps import make_train_step

    assert make_parallel_train_step is make_train_step


def test_unknown_names_still_raise() -> None:
    import so3krates.train.parallel as par

    with pytest.raises(AttributeError):
        par.no_such_name  # noqa: B018


def test_public_entry_points_stay() -> None:
    from so3krates.train import TrainConfig, TrainResult, train
    from so3krates.train.loop import TrainingDiverged

    assert callable(train) and TrainConfig and TrainResult and issubclass(TrainingDiverged, ValueError)
