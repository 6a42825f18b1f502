"""Predictions over many structures and their error figures (host side, numpy).

Shared by validation during training (:func:`validation_metrics`) and by ``so3krates evaluate``. Errors
are reported in the user's units: energies divided by the size of one energy unit in eV, forces by one
energy unit per length unit, and so on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from ase.formula import Formula

from so3krates.deprecation import moved
from so3krates.graph import Graph, PadSizes, collate
from so3krates.potential import residual_energy_graphs, traced_variables
from so3krates.train import batching
from so3krates.train.loss import LossScales


def predict_graphs(
    fn: Callable[[Any], dict[str, Any]],
    graphs: Sequence[Graph],
    sizes: PadSizes,
    batch_size: int,
    all_pairs: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``fn(batch) -> {"energy": (G,), "forces": (N, 3), ["stress": (G, 3, 3)], [per-graph extras]}``
    over ``graphs`` in padded batches; returns per-structure numpy results in input order:
    ``energy`` (M,), ``forces`` list of (n_k, 3), ``stress`` (M, 3, 3) if present, and every other
    per-graph output key as an (M, ...) array.
    """
    energy: list[np.ndarray] = []
    forces: list[np.ndarray] = []
    per_graph: dict[str, list[np.ndarray]] = defaultdict(list)
    for chunk in batching.batches(np.arange(len(graphs)), batch_size):
        members = [graphs[i] for i in chunk]
        out = fn(collate(members, sizes, all_pairs=all_pairs))
        out = {k: np.asarray(v) for k, v in out.items()}
        g = len(members)
        energy.append(out["energy"][:g])
        start = 0
        for graph in members:
            forces.append(out["forces"][start : start + graph.n_atoms])
            start += graph.n_atoms
        for key, value in out.items():
            if key not in ("energy", "forces"):
                per_graph[key].append(value[:g])
        if progress is not None:
            progress(g)
    result: dict[str, Any] = {
        "energy": np.concatenate(energy) if energy else np.zeros(0),
        "forces": forces,
    }
    for key, parts in per_graph.items():
        result[key] = np.concatenate(parts)
    return result


def formula_of(numbers: np.ndarray) -> str:
    """Hill formula of a structure, e.g. C2H6O: the key of the per-structure averages."""
    return Formula.from_list([chemical_symbols[int(z)] for z in np.asarray(numbers)]).format("hill")


def _mae_rmse(errors: np.ndarray) -> tuple[float, float]:
    if errors.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(np.abs(errors))), float(np.sqrt(np.mean(errors**2)))


def error_metrics(
    numbers: Sequence[np.ndarray],
    scales: LossScales,
    energy_ref: np.ndarray | None = None,
    energy_pred: np.ndarray | None = None,
    forces_ref: Sequence[np.ndarray] | None = None,
    forces_pred: Sequence[np.ndarray] | None = None,
    stress_ref: np.ndarray | None = None,
    stress_pred: np.ndarray | None = None,
    per_formula: bool = False,
) -> dict[str, Any]:
    """Error figures in the user's units (references and predictions in eV, Å).

    Returns ``energy_mae``/``energy_rmse`` (total energy), ``energy_per_atom_mae``/``_rmse``,
    ``forces_mae``/``forces_rmse`` (per Cartesian component), ``stress_mae``/``_rmse``, counts, and with
    ``per_formula`` the MAEs of each chemical formula and their unweighted average
    (``structure_averaged_*``: the paper's Table 4 "averaged per structure MAE", so that a molecule
    with many test frames does not dominate).
    """
    n_atoms = np.array([len(z) for z in numbers], dtype=np.float64)
    out: dict[str, Any] = {"n_structures": len(numbers), "n_atoms": int(n_atoms.sum())}
    e_err = f_err_list = None
    if energy_ref is not None and energy_pred is not None:
        e_err = (np.asarray(energy_pred, np.float64) - np.asarray(energy_ref, np.float64)) / scales.energy
        out["energy_mae"], out["energy_rmse"] = _mae_rmse(e_err)
        out["energy_per_atom_mae"], out["energy_per_atom_rmse"] = _mae_rmse(e_err / np.maximum(n_atoms, 1))
    if forces_ref is not None and forces_pred is not None:
        f_err_list = [
            (np.asarray(p, np.float64) - np.asarray(r, np.float64)) / scales.forces
            for r, p in zip(forces_ref, forces_pred, strict=True)
        ]
        flat = np.concatenate([f.reshape(-1) for f in f_err_list]) if f_err_list else np.zeros(0)
        out["forces_mae"], out["forces_rmse"] = _mae_rmse(flat)
    if stress_ref is not None and stress_pred is not None:
        s_err = (np.asarray(stress_pred, np.float64) - np.asarray(stress_ref, np.float64)) / scales.stress
        out["stress_mae"], out["stress_rmse"] = _mae_rmse(s_err.reshape(-1))
    if per_formula:
        groups: dict[str, list[int]] = defaultdict(list)
        for k, z in enumerate(numbers):
            groups[formula_of(z)].append(k)
        table: dict[str, dict[str, float]] = {}
        for formula, members in sorted(groups.items()):
            row: dict[str, float] = {"n_structures": len(members)}
            if e_err is not None:
                row["energy_mae"] = _mae_rmse(e_err[members])[0]
            if f_err_list is not None:
                row["forces_mae"] = _mae_rmse(np.concatenate([f_err_list[k].reshape(-1) for k in members]))[0]
            table[formula] = row
        out["per_formula"] = table
        for key in ("energy_mae", "forces_mae"):
            values = [row[key] for row in table.values() if key in row]
            if values:
                out[f"structure_averaged_{key}"] = float(np.mean(values))
    return out


def validation_metrics(
    eval_step: Callable[[Any, Any], dict[str, Any]],
    variables: Any,
    graphs: Sequence[Graph],
    sizes: PadSizes,
    batch_size: int,
    all_pairs: bool,
    scales: LossScales,
) -> dict[str, Any]:
    """Eq. 35 loss and error figures (user's units) of ``variables`` on ``graphs`` with ``eval_step``
    (:func:`so3krates.train.steps.make_eval_step`).

    Energies are compared as residuals E − (Σ_i shift[z_i] + c) (float64 on the host) with the model's
    interaction energies: the same errors as of the totals, without float32's rounding of the totals.
    """
    graphs = residual_energy_graphs(graphs, variables["normalization"])
    traced = traced_variables(variables)
    pred = predict_graphs(lambda b: eval_step(traced, b), graphs, sizes, batch_size, all_pairs=all_pairs)
    has_e = graphs[0].energy is not None
    has_f = graphs[0].forces is not None
    has_s = graphs[0].stress is not None and "stress" in pred
    metrics = error_metrics(
        [g.numbers for g in graphs],
        scales,
        energy_ref=np.array([g.energy for g in graphs]) if has_e else None,
        energy_pred=pred["energy"] if has_e else None,
        forces_ref=[g.forces for g in graphs] if has_f else None,
        forces_pred=pred["forces"] if has_f else None,
        stress_ref=np.array([g.stress for g in graphs]) if has_s else None,
        stress_pred=pred.get("stress") if has_s else None,
    )
    metrics.pop("n_structures", None)
    metrics.pop("n_atoms", None)
    return {"loss": float(np.mean(pred["loss"])), **metrics}


__getattr__ = moved(__name__, {"max_pad_sizes": "so3krates.train.batching", "batches": "so3krates.train.batching"})
