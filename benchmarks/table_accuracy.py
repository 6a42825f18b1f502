"""Accuracy of the tabulated radial filters (``Potential.prepare``) of a trained model against its exact
filter MLPs: the rank of the low-rank table and the force differences on structures of its data.

    python benchmarks/table_accuracy.py --model runs/main_job_20261124_003340
    python benchmarks/table_accuracy.py --model RUN --data FILE --frames 50 --points 256 1024 4096
"""

from __future__ import annotations

import argparse

import numpy as np
from ase.io import read

import so3krates.datasets
from so3krates.graph import collate, make_graph
from so3krates.run_dir import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a run directory (so3krates train --out)")
    parser.add_argument("--data", default=None, help="structures (any ASE format; default the bundled ethanol)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--points", type=int, nargs="+", default=[1024], help="grid sizes to tabulate on")
    args = parser.parse_args()

    potential, variables, _ = load_run(args.model)
    config = potential.config
    frames = read(args.data or so3krates.datasets.path("ethanol"), index=f":{args.frames}")
    graphs = [make_graph(a.positions, a.numbers, config.r_cut) for a in frames]
    batch = collate(graphs, all_pairs=config.nonlocal_correction)
    n_atoms = sum(g.n_atoms for g in graphs)
    exact = np.asarray(potential.energy_forces(variables, batch)["forces"])[:n_atoms]
    for points in args.points:
        prepared = potential.prepare(variables, num_points=points)
        table = prepared["radial_table"]
        forces = np.asarray(potential.energy_forces(prepared, batch)["forces"])[:n_atoms]
        diff = np.abs(forces - exact)
        print(
            f"{points:5d} points: rank {table.coefficients.shape[-1]} of {2 * config.num_layers * config.features}, "
            f"max |ΔF| / max |F| {diff.max() / np.abs(exact).max():.2e}, mean |ΔF| {diff.mean():.2e} "
            f"(mean |F| {np.abs(exact).mean():.2e}) [{config.dtype}]"
        )


if __name__ == "__main__":
    from so3krates import runtime

    runtime.configure()  # the so3krates command's process tuning (buffer reuse), before any array
    main()
