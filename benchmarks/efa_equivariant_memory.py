"""Memory of one equivariant EFA block (issue #18): XLA's buffer assignment of the compiled function.

One ``EquivariantEfaUpdate`` (the cumulene setting of EFA.md §6: F = 64, F_qk = 32, F_v = 16, M = 50,
b_max = π, L = 1, so D = 4·32 and D_v = 4·16) on one structure of N random atoms, float32:

- inference: energy-like scalar Σ(Δx) + Σ(Δχ²) and its gradient to positions, x and χ (what forces need);
- training: the gradient with respect to the block's parameters of a loss on those position gradients
  (force training differentiates twice).

Memory = arguments + outputs + temporaries of the compiled program (``Compiled.memory_analysis()``), known
before anything runs; the per-atom cost is the slope between the two largest N.

    python benchmarks/efa_equivariant_memory.py --atoms 250 1000 4000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np

from so3krates.graph import collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.model.efa_equivariant import EquivariantEfaUpdate

CUMULENE = ModelConfig(
    features=64,
    num_layers=3,
    degrees=(1, 2),
    num_heads=4,
    r_cut=4.0,
    global_attention="efa",
    efa_qk_features=32,
    efa_v_features=16,
    efa_grid_size=50,
    efa_max_frequency=math.pi,
    efa_max_length=15.0,
)


def buffer_bytes(compiled) -> int:  # noqa: ANN001
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def measure(n_atoms: int, max_degree: int) -> dict:
    config = dataclasses.replace(CUMULENE, efa_max_degree=max_degree)
    rng = np.random.default_rng(0)
    side = math.ceil(n_atoms ** (1 / 3))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    positions = grid * 1.5 + rng.uniform(-0.1, 0.1, (n_atoms, 3))  # (the block alone: no edges needed)
    batch = collate([make_graph(positions, np.full(n_atoms, 6), 1.0)])
    n = batch.numbers.shape[0]
    x = jnp.asarray(rng.normal(size=(n, config.features)), jnp.float32)
    chi = jnp.asarray(rng.normal(size=(n, 8)) * 0.3, jnp.float32)
    pos = jnp.asarray(batch.positions, jnp.float32)
    module = EquivariantEfaUpdate(config)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, chi, pos, batch)
    params = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), params)

    def energy(p, pos, x, chi):
        dx, dchi = module.apply(p, x, chi, pos, batch)
        return dx.sum() + (dchi**2).sum()

    forces = jax.grad(energy, argnums=(1, 2, 3))

    def training_loss(p, pos, x, chi):
        return sum((g**2).sum() for g in forces(p, pos, x, chi))

    row = {"atoms": n_atoms, "max_degree": max_degree}
    for name, fn in (("inference", forces), ("training", jax.grad(training_loss))):
        compiled = jax.jit(fn).lower(params, pos, x, chi).compile()
        row[f"{name}_bytes"] = buffer_bytes(compiled)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, nargs="+", default=[250, 1000, 4000])
    parser.add_argument("--degrees", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    rows = [measure(n, L) for L in args.degrees for n in args.atoms]
    for L in args.degrees:
        mine = [r for r in rows if r["max_degree"] == L]
        a, b = mine[-2], mine[-1]
        for name in ("inference", "training"):
            slope = (b[f"{name}_bytes"] - a[f"{name}_bytes"]) / (b["atoms"] - a["atoms"])
            print(
                f"L = {L} {name:9s}: "
                + ", ".join(f"{r['atoms']} atoms {r[f'{name}_bytes'] / 1e6:.1f} MB" for r in mine)
                + f"; {slope / 1e3:.1f} kB per atom"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
