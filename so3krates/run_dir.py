"""The self-describing model directory written by ``so3krates train`` and read by everything else.

Layout (format version 1)::

    RUN_DIR/
      config.yaml        resolved training configuration; its ``model`` section is the ModelConfig
      model.safetensors  weights: params and normalisation, flattened with '/'-joined keys (no pickle);
                         its metadata header carries ``tensors_sha256``, a checksum of the tensors
      metadata.json      format_version, elements, units, energy constant, versions, data source, split
      split.npz          train / valid / test frame indices into the training file

The model always predicts eV and Å (ASE units) whatever units the user trained in; ``metadata.json``
records the user's units so that evaluation can report errors in them.

Every file is written to a temporary name in the same directory and moved into place with
``os.replace`` (:mod:`so3krates.files`), so a crash never leaves a half-written file under the real name.

The checksum in ``model.safetensors`` (:func:`tensors_sha256`: every tensor's name, dtype, shape and bytes,
in name order) is checked on every load, so a file that still parses but has flipped bytes is refused,
named. It sits in the standard safetensors metadata, so other tools read the file as before; files
written before it existed have none and load unchecked (same format version).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from so3krates.deprecation import moved
from so3krates.files import atomic_write_bytes, atomic_write_text, sha256

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
SPLIT_FILE = "split.npz"
CHECKSUM_KEY = "tensors_sha256"  # safetensors metadata: sha256 of the tensors (tensors_sha256)
HOST_FLOAT64 = ("normalization/shift", "normalization/energy_offset")
# Models saved before the attention projections got biases (as in the authors' release) are the same
# models with those biases zero: they load, with zeros filled in.
LEGACY_ZERO_BIAS = re.compile(r"params/layer_\d+/(feature_query|feature_key|feature_value|sphc_query|sphc_key)/bias")


# -- weights ------------------------------------------------------------------------------------------


def flatten(tree: Mapping[str, Any], prefix: str = "", to_numpy: bool = True) -> dict[str, Any]:
    """Nested dict of arrays → flat dict with '/'-joined keys, e.g. ``params/layer_0/.../kernel``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/", to_numpy))
        else:
            flat[name] = (
                np.array(value, order="C", copy=True) if to_numpy else value
            )  # keeps 0-d (ascontiguousarray would not)
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def tensors_sha256(flat: Mapping[str, np.ndarray]) -> str:
    """Checksum of flat tensors: each one's name, dtype, shape and bytes, in name order (independent of
    the file's layout, so it can sit in the file's own header)."""

    def chunks() -> Any:
        for name in sorted(flat):
            value = np.ascontiguousarray(flat[name])
            yield f"{name}\0{value.dtype.str}\0{value.shape}\0".encode()
            yield value.tobytes()

    return sha256(chunks())


def weights_to_bytes(variables: Mapping[str, Any]) -> bytes:
    """``{"params", "normalization"}`` as safetensors bytes, with their checksum in the metadata."""
    from safetensors.numpy import save

    flat = flatten(variables)
    metadata = {"format": "so3krates", "format_version": str(FORMAT_VERSION), CHECKSUM_KEY: tensors_sha256(flat)}
    return save(flat, metadata=metadata)


# -- save ---------------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and tuples → plain JSON types (metadata is written by humans' tools too)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_weights(directory: str | Path, variables: Mapping[str, Any]) -> None:
    """Atomically (re)write ``model.safetensors`` only (the training loop's best-model updates)."""
    atomic_write_bytes(Path(directory) / WEIGHTS_FILE, weights_to_bytes(variables))


def save_model(
    directory: str | Path,
    config: Mapping[str, Any],
    variables: Mapping[str, Any],
    metadata: Mapping[str, Any],
    split: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a model directory: config.yaml, model.safetensors, metadata.json (and split.npz).

    Args:
        directory: created if needed; other files in it (metrics, checkpoints) are left alone.
        config: the resolved training configuration; ``config["model"]`` is ``ModelConfig.to_dict()``.
        variables: ``{"params": ..., "normalization": {"scale", "shift", "energy_offset"}}``.
        metadata: elements, units, energy constant, data source, …; ``format_version`` and the
            so3krates version are added here.
        split: optional ``{"train", "valid", "test"}`` index arrays, written as split.npz.
    Returns:
        The directory.
    """
    from so3krates import __version__

    if "model" not in config:
        raise ValueError("save_model: config has no 'model' section (the ModelConfig as a dict)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "so3krates_version": __version__, **_jsonable(dict(metadata))}
    meta["format_version"] = FORMAT_VERSION
    # Weights first: a crash after it leaves the old metadata next to new weights of the same config.
    save_weights(directory, variables)
    if split is not None:
        save_split_file(directory / SPLIT_FILE, split)
        meta.setdefault("split_file", SPLIT_FILE)
    config_text = yaml.safe_dump(_jsonable(dict(config)), sort_keys=False, allow_unicode=True)
    atomic_write_text(directory / CONFIG_FILE, config_text)
    atomic_write_text(directory / METADATA_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return directory


def save_split_file(path: str | Path, split: Mapping[str, np.ndarray]) -> None:
    """Atomically write a split ({"train", "valid", "test"} → index array) as npz (the data layer's format)."""
    from so3krates.data import save_split

    save_split(path, dict(split))


# -- load ---------------------------------------------------------------------------------------------


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"model directory {path.parent} has no {path.name} (not a complete so3krates model directory?)"
        )
    return path


def _parse(path: Path, parse: Callable[[str], Any], errors: tuple[type[Exception], ...], kind: str) -> Any:
    """``parse`` of the file's text; a file that does not parse is named as corrupted."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except errors as err:
        raise ValueError(f"{path} is corrupted (not valid {kind}: {err})") from None


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``metadata.json`` of a model directory, with its format version checked."""
    path = _require(Path(directory) / METADATA_FILE)
    meta = _parse(path, json.loads, (json.JSONDecodeError, UnicodeDecodeError), "JSON")
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is corrupted (expected a JSON object)")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{path} has no integer 'format_version': not a so3krates model directory")
    if version > FORMAT_VERSION:
        from so3krates import __version__

        raise ValueError(
            f"{path}: model format version {version} is newer than this so3krates ({__version__}) can read "
            f"(up to {FORMAT_VERSION}); upgrade so3krates to load it"
        )
    if version < 1:
        # Version 1 is the first released format: nothing older exists to migrate from.
        raise ValueError(f"{path}: model format version {version} is not supported (this so3krates reads 1)")
    return meta


def read_config(directory: str | Path) -> dict[str, Any]:
    """``config.yaml`` of a model directory as a dict (with a ``model`` section)."""
    path = _require(Path(directory) / CONFIG_FILE)
    config = _parse(path, yaml.safe_load, (yaml.YAMLError, UnicodeDecodeError), "YAML")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path} is corrupted or incomplete: it has no 'model' section")
    return config


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (an 8-byte little-endian header length, a JSON header)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def read_weights(directory: str | Path) -> dict[str, Any]:
    """``model.safetensors`` as nested numpy arrays ``{"params": ..., "normalization": ...}``, checked
    against the checksum in its header (files written before the checksum existed: unchecked)."""
    from safetensors.numpy import load

    path = _require(Path(directory) / WEIGHTS_FILE)
    data = path.read_bytes()
    try:
        flat = load(data)
        expected = _safetensors_metadata(data).get(CHECKSUM_KEY)
    except Exception as err:  # safetensors raises its own error types for truncated/garbled headers
        raise ValueError(f"{path} is corrupted (not a readable safetensors file: {err})") from None
    if expected is not None and tensors_sha256(flat) != expected:
        raise ValueError(
            f"{path} is corrupted: its tensors do not match the checksum in its header ({CHECKSUM_KEY}); "
            "restore it from a backup or train again"
        )
    return unflatten(flat)


def read_split(directory: str | Path) -> dict[str, np.ndarray]:
    """``split.npz`` as a dict of index arrays."""
    from so3krates.data import load_split

    path = _require(Path(directory) / SPLIT_FILE)
    try:
        return load_split(path)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:  # e.g. zipfile.BadZipFile for a truncated file
        raise ValueError(f"{path} is corrupted ({err})") from None


def _check_weights(loaded: dict[str, Any], expected: dict[str, Any], path: Path) -> dict[str, Any]:
    """Compare loaded arrays with the shapes the config implies; cast to the expected dtype."""
    got, want = flatten(loaded), flatten(expected, to_numpy=False)
    for name in set(want) - set(got):
        if LEGACY_ZERO_BIAS.fullmatch(name):  # written before the attention projections had biases
            got[name] = np.zeros(want[name].shape, want[name].dtype)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"{path} does not match config.yaml: "
            + (f"missing {missing[:3]}{' …' if len(missing) > 3 else ''}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra[:3]}{' …' if len(extra) > 3 else ''}" if extra else "")
        )
    out = {}
    for name, spec in want.items():
        value = got[name]
        if tuple(value.shape) != tuple(spec.shape):
            raise ValueError(f"{path}: {name} has shape {value.shape}, config.yaml implies {tuple(spec.shape)}")
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: {name} contains NaN or infinite values (a diverged run?)")
        # The reference energies stay float64 whatever the model's dtype (potential.reference_energy).
        out[name] = np.asarray(value, dtype=np.float64 if name in HOST_FLOAT64 else spec.dtype)
    return unflatten(out)


def load_run(directory: str | Path, dtype: str | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Load a run directory's model: ``(Potential, variables, metadata)``.

    Args:
        directory: a run directory written by ``so3krates train``.
        dtype: run the model in "float32" or "float64" whatever it was trained in; None: as trained.
            float64 needs JAX's 64-bit mode (:mod:`so3krates.precision`); it is not switched on here.

    Raises:
        FileNotFoundError: the directory or one of its files is missing (the file is named).
        ValueError: a file is corrupted, the weights do not match the config, the format version
            is unknown or newer than this so3krates reads, or float64 without JAX's 64-bit mode.
    """
    import dataclasses

    import jax

    from so3krates.graph import collate, make_graph
    from so3krates.model.config import ModelConfig
    from so3krates.potential import Potential
    from so3krates.precision import check_dtype

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist")
    metadata = read_metadata(directory)
    config = read_config(directory)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / CONFIG_FILE}: invalid model section: {err}") from None
    if dtype is not None:
        model_config = dataclasses.replace(model_config, dtype=dtype)
    check_dtype(
        model_config.dtype, f"model {directory} ({'asked for' if dtype else 'trained in'} {model_config.dtype})"
    )
    loaded = read_weights(directory)
    potential = Potential(model_config)
    example = collate([make_graph(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.array([1, 1]), model_config.r_cut)])
    # Shapes only: eval_shape traces init without running or compiling it.
    expected = jax.eval_shape(potential.init, jax.random.PRNGKey(0), example)
    variables = _check_weights(loaded, expected, directory / WEIGHTS_FILE)
    normalization = variables["normalization"]
    variables = {
        "params": jax.tree_util.tree_map(jax.numpy.asarray, variables["params"]),
        "normalization": {"scale": jax.numpy.asarray(normalization["scale"]), **{
            key: normalization[key] for key in ("shift", "energy_offset")  # float64 on the host
        }},
    }  # fmt: skip
    return potential, variables, metadata


def dtype_for_run(run_dir: str | Path, dtype: str | None) -> str:
    """The dtype a command runs the model of ``run_dir`` in (``dtype``, else the one it was trained in),
    with JAX's 64-bit mode switched on for float64: what the user asked for, by flag or by training."""
    from so3krates.precision import check_dtype, enable_float64

    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"model directory {run_dir} does not exist")
    resolved = dtype or str(read_config(run_dir).get("model", {}).get("dtype", "float32"))
    if resolved == "float64":
        enable_float64()
    return check_dtype(resolved, f"--dtype {resolved}")


__getattr__ = moved("so3krates.run_dir", {"load_model": "so3krates.run_dir:load_run"})
