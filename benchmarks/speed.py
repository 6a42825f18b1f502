"""Speed of the So3krates model: the paper's Table 3 protocol and size scaling (issue #2).

Table 3 protocol: toluene, batch of 4, float32, F = 132, 6 layers, degrees {1, 2, 3}, r_cut 5 Å: median
milliseconds of one energy+forces evaluation and of one training step (eq. 35 loss on energies and
forces, gradient, Adam update), jit compile time and parameter count. Size scaling: one energy+forces
evaluation of a water cluster at liquid density (no periodic box) of about 50 to 10,000 atoms.

Weights are random: the cost does not depend on their values.

    python benchmarks/speed.py                       # everything, JSON in benchmarks/results/speed.json
    python benchmarks/speed.py --sizes 51 201 --repeats 5
    python benchmarks/speed.py --flops --sizes 51 201 801    # XLA FLOP counts vs this machine's matmul rate
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ase.build import molecule

from so3krates import runtime
from so3krates.compile import jit
from so3krates.graph import collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.potential import RADIAL_TABLE, Potential

RESULTS = Path(__file__).resolve().parent / "results"


def water_cluster(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Water molecules at liquid density (1 molecule per 29.9 Å³), randomly oriented, the ones nearest
    the centre of a cubic grid kept: a roughly spherical droplet of about ``n_atoms`` atoms."""
    rng = np.random.default_rng(seed)
    n_mol = max(1, round(n_atoms / 3))
    side = int(np.ceil(n_mol ** (1 / 3))) + 2
    spacing = 29.9 ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3) * spacing
    grid = grid - grid.mean(0)
    centres = grid[np.argsort(np.linalg.norm(grid, axis=1))[:n_mol]]
    # O at the centre, two H at 0.96 Å and 104.5°
    local = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96 * np.cos(1.824), 0.96 * np.sin(1.824), 0.0]])
    positions = []
    for c in centres:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        positions.append(c + local @ rot.T)
    return np.concatenate(positions), np.tile([8, 1, 1], n_mol)


def toluene() -> tuple[np.ndarray, np.ndarray]:
    """Toluene (C7H8, 15 atoms): benzene with one H replaced by a tetrahedral methyl group."""
    benzene = molecule("C6H6")
    pos, z = benzene.positions, benzene.numbers
    carbon = np.flatnonzero(z == 6)[0]
    hydrogen = np.flatnonzero(z == 1)[np.argmin(np.linalg.norm(pos[z == 1] - pos[carbon], axis=1))]
    axis = (pos[hydrogen] - pos[carbon]) / np.linalg.norm(pos[hydrogen] - pos[carbon])
    methyl_c = pos[carbon] + 1.51 * axis
    perp = np.cross(axis, [0.0, 0.0, 1.0])
    perp /= np.linalg.norm(perp)
    other = np.cross(axis, perp)
    hs = [
        methyl_c
        + 1.09 * (np.cos(np.radians(70.5)) * axis + np.sin(np.radians(70.5)) * (np.cos(a) * perp + np.sin(a) * other))
        for a in np.radians([90.0, 210.0, 330.0])
    ]
    keep = np.arange(len(z)) != hydrogen
    return np.concatenate([pos[keep], [methyl_c], hs]), np.concatenate([z[keep], [6, 1, 1, 1]])


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_train_step(potential: Potential, beta: float = 0.99):
    """One training step as the trainer does it: eq. 35 loss, gradient, gradient clipping, Adam."""
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))

    def loss_fn(params, normalization, batch):
        out = potential.predict({"params": params, "normalization": normalization}, batch)
        n_graphs = jnp.maximum(batch.graph_mask.sum(), 1)
        e_err = jnp.where(batch.graph_mask, out["interaction_energy"] - batch.energy, 0.0)
        f_err = jnp.where(batch.node_mask[:, None], out["forces"] - batch.forces, 0.0)
        n_atoms = jnp.maximum(batch.n_atoms[batch.node_graph], 1)
        f_term = jnp.sum(jnp.where(batch.node_mask, (f_err**2).sum(-1) / (3 * n_atoms), 0.0))
        return ((1 - beta) * jnp.sum(e_err**2) + beta * f_term) / n_graphs

    @jit
    def step(params, opt_state, normalization, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, normalization, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return optimizer, step


def toluene_graphs() -> list:
    """The structures of the Table 3 batch: four thermally displaced toluenes, zero labels (the cost does
    not depend on them)."""
    positions, numbers = toluene()
    rng = np.random.default_rng(0)
    graphs = []
    for _ in range(4):
        g = make_graph(positions + rng.normal(0, 0.05, positions.shape), numbers, 5.0)
        g.energy, g.forces = 0.0, np.zeros_like(g.positions)
        graphs.append(g)
    return graphs


def toluene_batch() -> object:
    """The Table 3 batch (:func:`toluene_graphs`), collated with the default padding."""
    return jax.device_put(collate(toluene_graphs()))


def predict_fn(potential: Potential):  # noqa: ANN201 (a function of (variables, batch, table))
    """``potential.predict`` with the radial-filter table (or None: the exact filters) as an argument, so
    that jitting it does not bake the table into the program as a constant."""

    def predict(variables, batch, table):  # noqa: ANN001, ANN202
        return potential.predict(variables if table is None else {**variables, RADIAL_TABLE: table}, batch)

    return predict


def toluene_protocol(potential: Potential, repeats: int) -> dict:
    batch = toluene_batch()
    variables = potential.init(jax.random.PRNGKey(0), batch)

    t0 = time.perf_counter()
    jax.block_until_ready(potential.energy_forces(variables, batch))
    compile_inference = time.perf_counter() - t0
    inference = median_ms(lambda: potential.energy_forces(variables, batch), repeats)
    prepared = potential.prepare(variables)
    jax.block_until_ready(potential.energy_forces(prepared, batch))
    inference_tabulated = median_ms(lambda: potential.energy_forces(prepared, batch), repeats)

    optimizer, step = make_train_step(potential)
    params, normalization = variables["params"], variables["normalization"]
    opt_state = optimizer.init(params)
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, opt_state, normalization, batch))
    compile_train = time.perf_counter() - t0
    state = {"params": params, "opt": opt_state}

    def one_step():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], normalization, batch)
        return loss

    train = median_ms(one_step, repeats)
    return {
        "atoms_per_structure": int(batch.n_atoms[0]),
        "edges": int(batch.edge_mask.sum()),
        "padded_atoms": int(batch.numbers.shape[0]),
        "padded_edges": int(batch.edge_mask.shape[0]),
        "parameters": potential.num_parameters(variables),
        "inference_ms": inference,
        "inference_tabulated_ms": inference_tabulated,
        "train_step_ms": train,
        "compile_inference_s": compile_inference,
        "compile_train_s": compile_train,
    }


def scaling(potential: Potential, sizes: list[int], repeats: int, on_row=None) -> list[dict]:  # noqa: ANN001
    """Water clusters of ``sizes`` atoms; a size that does not fit in memory is recorded as such."""
    variables = None
    rows = []
    for n in sizes:
        pos, z = water_cluster(n)
        batch = jax.device_put(collate([make_graph(pos, z, potential.config.r_cut)]))
        if variables is None:
            variables = potential.init(jax.random.PRNGKey(0), batch)
        t0 = time.perf_counter()
        try:
            jax.block_until_ready(potential.energy_forces(variables, batch))
        except jax.errors.JaxRuntimeError as err:
            if "RESOURCE_EXHAUSTED" not in str(err):
                raise
            rows.append({"atoms": len(pos), "edges": int(batch.edge_mask.sum()), "error": str(err).splitlines()[0]})
            print(f"  water {len(pos):6d} atoms: {rows[-1]['error']}")
            if on_row:
                on_row(rows)
            continue
        compile_s = time.perf_counter() - t0
        reps = repeats if len(pos) <= 2500 else max(3, repeats // 3)
        ms = median_ms(lambda b=batch, v=variables: potential.energy_forces(v, b), reps)
        prepared = potential.prepare(variables)
        jax.block_until_ready(potential.energy_forces(prepared, batch))
        ms_tab = median_ms(lambda b=batch, v=prepared: potential.energy_forces(v, b), reps)
        edges = int(batch.edge_mask.sum())
        rows.append(
            {
                "atoms": len(pos),
                "edges": edges,
                "ms": ms,
                "ms_tabulated": ms_tab,
                "us_per_edge": 1e3 * ms / edges,
                "us_per_edge_tabulated": 1e3 * ms_tab / edges,
                "compile_s": compile_s,
            }
        )
        print(
            f"  water {len(pos):6d} atoms {edges:8d} edges: {ms:9.1f} ms ({1e3 * ms / edges:.1f} µs/edge), "
            f"tabulated {ms_tab:9.1f} ms ({1e3 * ms_tab / edges:.1f} µs/edge)"
        )
        if on_row:
            on_row(rows)
    return rows


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """This machine's float32 matrix-multiply rate (GFLOP/s): the practical floor a dense model could reach."""
    a = jax.device_put(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    return 2 * n**3 / (median_ms(lambda: mm(a), repeats) * 1e6)


def analyse(potential: Potential, variables: dict, batch, label: str, repeats: int, table=None) -> dict:  # noqa: ANN001
    """XLA's FLOP count (``cost_analysis``) and kernel count of one compiled energy+forces call, its time;
    with ``table``, of the call with tabulated radial filters."""

    compiled = jit(predict_fn(potential)).lower(variables, batch, table).compile()
    entry = compiled.as_text().split("ENTRY", 1)[1]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost["flops"])
    ms = median_ms(lambda: compiled(variables, batch, table), repeats)
    edges = int(batch.edge_mask.sum())
    row = {
        "system": label,
        "filters": "exact" if table is None else "tabulated",
        "atoms": int(batch.node_mask.sum()),
        "edges": edges,
        "padded_edges": int(batch.edge_mask.shape[0]),
        "gflop": flops / 1e9,
        "kflop_per_edge": flops / edges / 1e3,
        "ms": ms,
        "gflops_reached": flops / (ms * 1e6),
        "fusions": len(re.findall(r"=\s*\S+\s+fusion\(", entry)),  # XLA CPU runs one kernel per fusion
        "entry_ops": len(re.findall(r"=\s*\S+\s+[\w-]+\(", entry)),
    }
    print(
        f"  {label:>14s} {row['filters']:>9s}: {row['gflop']:.2f} GFLOP ({row['kflop_per_edge']:.0f} kFLOP/edge), "
        f"{ms:.1f} ms, {row['gflops_reached']:.1f} GFLOP/s, {row['fusions']} fusions of {row['entry_ops']} operations"
    )
    return row


def flop_counts(potential: Potential, sizes: list[int], repeats: int) -> dict:
    """FLOPs and kernels per energy+forces call (toluene x4, water droplets) and the rate reached."""
    batch = toluene_batch()
    variables = potential.init(jax.random.PRNGKey(0), batch)
    table = potential.tabulate(variables)
    rows = [analyse(potential, variables, batch, "toluene x4", 3 * repeats, t) for t in (None, table)]
    for n in sizes:
        pos, z = water_cluster(n)
        batch = jax.device_put(collate([make_graph(pos, z, potential.config.r_cut)]))
        rows += [analyse(potential, variables, batch, f"water {len(pos)}", repeats, t) for t in (None, table)]
    return {"matmul_gflops": matmul_gflops(), "rows": rows}


# The authors' JAX release, same hyperparameters, 2-core machine like ours (issue #2), median ms.
REFERENCE = {
    "toluene_inference_ms": 32.0,
    "toluene_train_step_ms": 102.0,
    "water_ms": {51: 71.0, 201: 531.0, 801: 2317.0, 2001: 7326.0},
}


def main() -> None:
    runtime.configure(restart_argv=sys.argv)  # as the so3krates command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[51, 201, 801, 2001, 10002])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default results/speed.json or speed_flops.json)")
    parser.add_argument("--flops", action="store_true", help="only the FLOP counts and the matmul rate")
    parser.add_argument(
        "--remat", action="store_true", help="per-layer rematerialisation (ModelConfig.remat): less memory, more time"
    )
    args = parser.parse_args()

    config = ModelConfig(features=132, num_layers=6, degrees=(1, 2, 3), num_heads=4, r_cut=5.0, remat=args.remat)
    potential = Potential(config)
    if args.flops:
        out = args.out or RESULTS / "speed_flops.json"
        result = flop_counts(potential, args.sizes, max(3, args.repeats // 3))
        print(f"  matmul 1024³ float32: {result['matmul_gflops']:.1f} GFLOP/s")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"written {out}")
        return
    args.out = args.out or RESULTS / "speed.json"
    result = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "remat": args.remat,
        "load_average_at_start": os.getloadavg(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),  # huge pages: so3krates.runtime.hugepages
            # so3krates.runtime.cpu_memory: False where XLA's buffers are reused between calls
            "cpu_async_dispatch": jax.config.values["jax_cpu_enable_async_dispatch"],
        },
    }
    result["toluene_x4"] = toluene_protocol(potential, args.repeats)
    t = result["toluene_x4"]
    print(
        f"toluene x4: inference {t['inference_ms']:.1f} ms, tabulated {t['inference_tabulated_ms']:.1f} ms "
        f"(reference {REFERENCE['toluene_inference_ms']:.0f}), "
        f"train step {t['train_step_ms']:.1f} ms (reference {REFERENCE['toluene_train_step_ms']:.0f}), "
        f"compile {t['compile_inference_s']:.1f} s + {t['compile_train_s']:.1f} s, {t['parameters']} parameters"
    )
    result["reference_authors_release"] = REFERENCE

    def save(rows: list[dict]) -> None:  # after every size: a later size running out of memory loses nothing
        result["water_clusters"] = rows
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))

    save(scaling(potential, args.sizes, max(3, args.repeats // 3), on_row=save))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
