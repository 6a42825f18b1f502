"""Inference time against the number of atoms, local vs non-local vs global So3krates (paper Fig. 9, A.8).

One energy + forces evaluation (jitted, compiled beforehand; median of ``--repeats`` calls, each ending
with ``block_until_ready``) of a single structure, for

- ``local``: the model with r_cut ``--cutoff``;
- ``nonlocal``: the same with the non-local correction (eq. 14), all n(n − 1) ordered pairs;
- ``global``: the *fully global* model of Fig. 9, the local model with r_cut = the structure's diameter
  + 0.5 Å, so every pair of atoms is an edge (O(n²) like the non-local one, but through the ordinary
  message passing);
- ``efa``: the local model plus Euclidean fast attention in every layer (docs/efa.md; M = 50, b_max = π,
  r_max ≥ the diameter: the model's own diameter bound + 0.5 Å), O(n).

The structures are water-density random molecules (H, C, N, O, no two atoms closer than 0.9 Å) of
``--sizes`` atoms, so the number of edges per atom of the local model is constant and it should scale
linearly.

Memory guard: the O(n²) models keep a few (P, ·) arrays per pair or edge for the backward pass; sizes
whose estimate (``estimated_bytes``) exceeds ``--max-gb`` are skipped and reported as such.

    python benchmarks/nonlocal_scaling.py                       # table to stdout, JSON + figure
    python benchmarks/nonlocal_scaling.py --sizes 16 64 256 --features 32 --models local global

Importable: :func:`time_model` and :func:`scaling_table` take any :class:`ModelConfig`, or a function of
the positions returning one (:func:`global_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "docs" / "figures" / "cumulene_nonlocal_scaling.png"
RESULT = ROOT / "benchmarks" / "results" / "runs" / "cumulene" / "nonlocal_scaling.json"
WATER_DENSITY = 0.1  # atoms per Å³ (liquid water: 3 atoms per 30 Å³)
MODELS = ("local", "nonlocal", "global", "efa")
LABELS = {
    "local": "local",
    "nonlocal": "non-local (eq. 14)",
    "global": "global (r_cut ≥ diameter)",
    "efa": "local + EFA",
}


def diameter(positions: np.ndarray) -> float:
    """Largest interatomic distance of a structure (Å)."""
    return float(np.max(np.linalg.norm(positions[:, None] - positions[None], axis=-1)))


def global_config(local: Any, margin: float = 0.5) -> Callable[[np.ndarray], Any]:
    """The fully global model of Fig. 9 for a structure: ``local`` with r_cut = diameter + ``margin`` (the
    cutoff function vanishes at r_cut, so the margin keeps the farthest pair's edge weight non-zero)."""

    def config(positions: np.ndarray) -> Any:
        return dataclasses.replace(local, r_cut=max(local.r_cut, diameter(positions) + margin))

    return config


def extent_bound(positions: np.ndarray) -> float:
    """The upper bound on a structure's diameter that ``EfaUpdate`` checks against r_max (it warns above):
    min(2·max_i |r_i − centroid|, bounding-box diagonal) ≥ the diameter."""
    radius = float(np.max(np.linalg.norm(positions - positions.mean(axis=0), axis=-1)))
    return min(2.0 * radius, float(np.linalg.norm(np.ptp(positions, axis=0))))


def efa_config(local: Any, margin: float = 0.5) -> Callable[[np.ndarray], Any]:
    """``local`` plus EFA in every layer, r_max = :func:`extent_bound` + ``margin`` ≥ the diameter (grid
    M = 50, b_max = π; the cost does not depend on r_max)."""

    def config(positions: np.ndarray) -> Any:
        return dataclasses.replace(
            local,
            global_attention="efa",
            efa_max_length=extent_bound(positions) + margin,
            efa_max_frequency=math.pi,
            efa_grid_size=50,
        )

    return config


def random_structure(n_atoms: int, seed: int = 0, min_distance: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Random positions at water atom density in a cube (rejection on ``min_distance``) and elements HCNO."""
    rng = np.random.default_rng(seed)
    box = (n_atoms / WATER_DENSITY) ** (1.0 / 3.0)
    positions = np.empty((0, 3))
    while len(positions) < n_atoms:
        trial = rng.uniform(0.0, box, (2 * n_atoms, 3))
        for p in trial:
            if len(positions) == n_atoms:
                break
            if len(positions) == 0 or np.min(np.linalg.norm(positions - p, axis=1)) > min_distance:
                positions = np.vstack([positions, p])
    return positions, rng.choice([1, 6, 7, 8], size=n_atoms)


def estimated_bytes(config: Any, n_atoms: int, n_edges: int) -> int:
    """Rough peak memory of one energy+forces call: per pair (all pairs with the non-local correction)
    and per edge the radial filter hidden and output activations of all layers plus a dozen (·, F)
    attention arrays, kept for the backward pass (× 3)."""
    items = n_edges + (n_atoms * (n_atoms - 1) if config.nonlocal_correction else 0)
    per_item = 2 * config.num_layers * (config.radial_hidden + config.features) + 12 * config.features
    return int(3 * items * per_item * (8 if config.dtype == "float64" else 4))


def time_model(config: Any, n_atoms: int, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Median wall time (ms) of one jitted energy+forces call on a random structure of n_atoms.

    ``config``: a ModelConfig, or a function of the structure's positions returning one.
    """
    import jax

    from so3krates.graph import collate, make_graph
    from so3krates.potential import Potential

    positions, numbers = random_structure(n_atoms, seed)
    if callable(config):
        config = config(positions)
    graph = make_graph(positions, numbers, config.r_cut)
    batch = collate([graph], all_pairs=config.nonlocal_correction)
    potential = Potential(config)
    variables = potential.init(jax.random.PRNGKey(seed), batch)
    t0 = time.perf_counter()
    jax.block_until_ready(potential.energy_forces(variables, batch))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(potential.energy_forces(variables, batch))
        times.append(1e3 * (time.perf_counter() - t0))
    return {
        "n_atoms": n_atoms,
        "n_edges": graph.n_edges,
        "n_pairs": n_atoms * (n_atoms - 1) if config.nonlocal_correction else 0,
        "r_cut": config.r_cut,
        "ms": statistics.median(times),
        "compile_s": compile_s,
    }


def scaling_table(
    configs: dict[str, Any], sizes: Sequence[int], repeats: int = 5, max_gb: float = 4.0
) -> list[dict[str, Any]]:
    """One row per (model, size): timing, or ``skipped`` with the memory estimate above ``max_gb``."""
    from so3krates.graph import make_graph

    rows = []
    for n in sizes:
        positions, numbers = random_structure(n)
        for name, config_or_fn in configs.items():
            config = config_or_fn(positions) if callable(config_or_fn) else config_or_fn
            n_edges = make_graph(positions, numbers, config.r_cut).n_edges
            estimate = estimated_bytes(config, n, n_edges)
            row: dict[str, Any] = {"model": name, "n_atoms": n, "estimated_gb": estimate / 1e9}
            if estimate > max_gb * 1e9:
                row["skipped"] = f"estimated {estimate / 1e9:.1f} GB > --max-gb {max_gb}"
            else:
                row.update(time_model(config_or_fn, n, repeats))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, style in zip(MODELS, ("o-", "s-", "^--", "d-."), strict=True):
        pts = [(r["n_atoms"], r["ms"]) for r in rows if r["model"] == name and "ms" in r]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, style, label=LABELS[name])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms")
    ax.set_ylabel("energy + forces (ms)")
    ax.set_title(title, fontsize=8)
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    from so3krates.model.config import ModelConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--radial-hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--cutoff", type=float, default=2.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-gb", type=float, default=4.0, help="skip sizes whose memory estimate exceeds this")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    local = ModelConfig(
        features=args.features,
        num_layers=args.layers,
        degrees=(1,),
        num_heads=4,
        r_cut=args.cutoff,
        radial_hidden=args.radial_hidden,
    )
    every = {
        "local": local,
        "nonlocal": dataclasses.replace(local, nonlocal_correction=True),
        "global": global_config(local),
        "efa": efa_config(local),
    }
    configs = {name: every[name] for name in args.models}
    rows = scaling_table(configs, args.sizes, args.repeats, args.max_gb)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": local.to_dict(), "machine": machine, "rows": rows}, indent=2))
    title = f"F={args.features}, {args.layers} layers, r_cut {args.cutoff} Å, degrees (1,); CPU, batch 1"
    plot(rows, args.figure, title)
    print(f"{'atoms':>6}" + "".join(f" {name + ' ms':>14}" for name in configs))
    for n in args.sizes:
        cells = []
        for name in configs:
            r = next(r for r in rows if r["model"] == name and r["n_atoms"] == n)
            cells.append(f"{r['ms']:.1f}" if "ms" in r else "skipped")
        print(f"{n:>6}" + "".join(f" {c:>14}" for c in cells))


if __name__ == "__main__":
    from so3krates import runtime

    runtime.configure()  # the so3krates command's process tuning (buffer reuse), before any array
    main()
