"""Cost of global interactions vs system size (issue #7): local So3krates, local + the SPHC non-local
correction (eq. 14, all pairs: O(n²)), and local + Euclidean fast attention (O(n)).

One energy+forces evaluation of a water droplet at liquid density (``benchmarks/speed.py``'s
``water_cluster``, no periodic box) of about 100 to 10,000+ atoms, float32, random weights (the cost
does not depend on their values). A modest model for all three: F = 64, 2 layers, degrees (1, 2),
4 heads, r_cut = 5 Å; EFA in both layers with F_qk = 16, F_v = 32, M = 50, b_max = π and r_max set to
cover the largest droplet (so every variant is rotation invariant to the grid's accuracy; the cost does
not depend on r_max).

Memory is XLA's buffer assignment of the compiled function (arguments + outputs + temporaries, from
``Compiled.memory_analysis()``), known before anything runs. The all-pairs correction is skipped where
its predicted memory would exceed ``--budget-gb`` (extrapolated per pair from the sizes that ran, and
checked again on the compiled function before running it), and an out-of-memory error is caught and
recorded: the machine is shared.

    python benchmarks/efa_scaling.py          # JSON in benchmarks/results/efa_scaling.json, plot docs/efa_scaling.png
    python benchmarks/efa_scaling.py --sizes 100 300 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import water_cluster  # noqa: E402

from so3krates.compile import jit  # noqa: E402
from so3krates.graph import collate, make_graph  # noqa: E402
from so3krates.model.config import ModelConfig  # noqa: E402
from so3krates.model.efa import EfaUpdate  # noqa: E402
from so3krates.potential import Potential  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
BASE = ModelConfig(features=64, num_layers=2, degrees=(1, 2), num_heads=4, r_cut=5.0, dtype="float32")
VARIANTS = ("local", "sphc_all_pairs", "efa")


def config_for(variant: str, max_length: float) -> ModelConfig:
    if variant == "local":
        return BASE
    if variant == "sphc_all_pairs":
        return dataclasses.replace(BASE, nonlocal_correction=True)
    return dataclasses.replace(
        BASE,
        global_attention="efa",
        efa_qk_features=16,
        efa_v_features=32,
        efa_grid_size=50,
        efa_max_frequency=float(np.pi),
        efa_max_length=max_length,
    )


def diameter(positions: np.ndarray) -> float:
    """Largest distance within the droplet (2·max distance from the centroid bounds it; exact enough)."""
    return 2.0 * float(np.linalg.norm(positions - positions.mean(0), axis=1).max())


def buffer_bytes(compiled) -> int:  # noqa: ANN001
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


_VARIABLES: dict[str, dict] = {}


def run_one(variant: str, n_atoms: int, max_length: float, repeats: int, budget: float, per_pair: float | None):
    """Time and memory of one variant at one size; a dict with ``status`` ok / skipped / out_of_memory.

    The weights are initialised once per variant (their shapes do not depend on the structure)."""
    positions, numbers = water_cluster(n_atoms)
    n = len(numbers)
    row = {"variant": variant, "atoms": n}
    all_pairs = variant == "sphc_all_pairs"
    pairs = n * (n - 1)
    if all_pairs:
        row["pairs"] = pairs
        # Guard before building anything: the pair list alone is 13 bytes per pair on the host.
        if per_pair is not None and per_pair * pairs > budget:
            row.update(status="skipped", predicted_gb=per_pair * pairs / 1e9)
            return row
    config = config_for(variant, max_length)
    potential = Potential(config)
    graph = make_graph(positions, numbers, config.r_cut)
    batch = jax.device_put(collate([graph], all_pairs=all_pairs))
    row["edges"] = int(np.asarray(batch.edge_mask).sum())
    try:
        if variant not in _VARIABLES:
            _VARIABLES[variant] = jax.jit(potential.init)(jax.random.PRNGKey(0), batch)
        variables = _VARIABLES[variant]
        t0 = time.perf_counter()
        compiled = jit(potential.predict).lower(variables, batch).compile()
        row["compile_s"] = time.perf_counter() - t0
        row["memory_gb"] = buffer_bytes(compiled) / 1e9
        if row["memory_gb"] * 1e9 > budget:
            row.update(status="skipped", predicted_gb=row["memory_gb"])
            return row
        jax.block_until_ready(compiled(variables, batch))  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(variables, batch))
            times.append((time.perf_counter() - t0) * 1e3)
        row.update(status="ok", ms=statistics.median(times), ms_all=times)
    except (MemoryError, jax.errors.JaxRuntimeError) as err:  # RESOURCE_EXHAUSTED surfaces as the latter
        if not isinstance(err, MemoryError) and "RESOURCE_EXHAUSTED" not in str(err) and "memory" not in str(err):
            raise
        row.update(status="out_of_memory", error=str(err).splitlines()[0][:300])
    return row


def run_efa_block(n_atoms: int, max_length: float, repeats: int) -> dict:
    """One EFA block alone (projections, O(N) attention, MLP′): forward and backward to positions and
    features, as inside the model. Isolates the EFA cost from the (noisier, larger) local model."""
    positions, numbers = water_cluster(n_atoms)
    config = config_for("efa", max_length)
    batch = jax.device_put(collate([make_graph(positions, numbers, config.r_cut)]))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch.numbers.shape[0], config.features), np.float32)
    pos = jax.numpy.asarray(batch.positions, np.float32)
    module = EfaUpdate(config)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), x, pos, batch)

    def loss(pos, x):
        return module.apply(params, x, pos, batch).sum()

    compiled = jit(jax.grad(loss, argnums=(0, 1))).lower(pos, x).compile()
    jax.block_until_ready(compiled(pos, x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(pos, x))
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "variant": "efa_block",
        "atoms": len(numbers),
        "status": "ok",
        "ms": statistics.median(times),
        "ms_all": times,
        "memory_gb": buffer_bytes(compiled) / 1e9,
    }


def fit_exponent(rows: list[dict], variant: str, min_atoms: int) -> float | None:
    """Slope of log(time) vs log(atoms) over the sizes ≥ min_atoms (1: linear, 2: quadratic)."""
    pts = [(r["atoms"], r["ms"]) for r in rows if r["variant"] == variant and r["status"] == "ok"]
    pts = [(a, t) for a, t in pts if a >= min_atoms]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def table(rows: list[dict]) -> str:
    """Markdown table of the rows (the one in docs/efa.md)."""
    by = {(r["variant"], r["atoms"]): r for r in rows}
    atoms = sorted({r["atoms"] for r in rows})
    lines = [
        "| atoms | edges | local ms | local GB | + SPHC all-pairs ms | GB | + EFA ms | GB | EFA / local (best) "
        "| one EFA block ms | its GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in atoms:
        cells = [str(n), str(by.get(("local", n), {}).get("edges", ""))]
        for v in VARIANTS:
            r = by.get((v, n))
            if r is None:
                cells += ["", ""]
            elif r["status"] == "ok":
                cells += [f"{r['ms']:.1f}", f"{r['memory_gb']:.3f}"]
            elif r["status"] == "skipped":
                cells += [f"skipped (needs ≈{r['predicted_gb']:.0f} GB)", ""]
            else:
                cells += ["out of memory", ""]
        loc, efa = by.get(("local", n)), by.get(("efa", n))
        ok = loc and efa and loc["status"] == efa["status"] == "ok"
        # ratio of the fastest repeats: the least disturbed by other jobs on a shared machine
        cells.append(f"{min(efa['ms_all']) / min(loc['ms_all']):.2f}" if ok else "")
        block = by.get(("efa_block", n))
        cells += [f"{block['ms']:.1f}", f"{block['memory_gb']:.3f}"] if block else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = {
        "local": "local So3krates",
        "sphc_all_pairs": "+ SPHC all-pairs correction",
        "efa": "+ EFA",
        "efa_block": "one EFA block alone",
    }
    for v in labels:
        ok = [r for r in rows if r["variant"] == v and r["status"] == "ok"]
        if not ok:
            continue
        a = [r["atoms"] for r in ok]
        axes[0].loglog(a, [r["ms"] for r in ok], "o-", label=labels[v])
        axes[1].loglog(a, [r["memory_gb"] for r in ok], "o-", label=labels[v])
    a = np.array(sorted({r["atoms"] for r in rows}), float)
    ref = [r["ms"] for r in rows if r["variant"] == "local" and r["status"] == "ok"]
    if ref:
        axes[0].loglog(a, ref[0] * a / a[0], "k:", lw=1, label="∝ n")
        axes[0].loglog(a, ref[0] * (a / a[0]) ** 2, "k--", lw=1, label="∝ n²")
    axes[0].set(xlabel="atoms", ylabel="ms per energy + forces", title="time")
    axes[1].set(xlabel="atoms", ylabel="GB (XLA buffers)", title="memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Water droplets, F = 64, 2 layers, degrees (1, 2), r_cut 5 Å, float32, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 300, 600, 1000, 3000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-gb", type=float, default=8.0, help="skip a run predicted to need more")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=RESULTS / "efa_scaling.json")
    parser.add_argument("--plot", type=Path, default=DOCS / "efa_scaling.png")
    args = parser.parse_args()

    sizes = sorted(args.sizes)
    max_length = 1.05 * max(diameter(water_cluster(n)[0]) for n in sizes)
    budget = args.budget_gb * 1e9
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "model": {v: config_for(v, max_length).to_dict() for v in args.variants},
        "budget_gb": args.budget_gb,
        "command": "python " + " ".join(sys.argv),
        "rows": [],
    }
    per_pair = None
    for n in sizes:
        for v in args.variants:
            reps = args.repeats if n <= 3000 else max(2, args.repeats // 2)
            row = run_one(v, n, max_length, reps, budget, per_pair)
            if v == "sphc_all_pairs" and row["status"] == "ok":
                # memory per pair of the all-pairs model (its pair arrays dominate), for the guard
                per_pair = max(per_pair or 0.0, row["memory_gb"] * 1e9 / row["pairs"])
            result["rows"].append(row)
            shown = f"{row['ms']:9.1f} ms  {row['memory_gb']:7.3f} GB" if row["status"] == "ok" else row["status"]
            print(f"{v:15s} {row['atoms']:6d} atoms: {shown}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, default=str))  # partial results survive
        if "efa" in args.variants:
            row = run_efa_block(n, max_length, 2 * args.repeats)
            result["rows"].append(row)
            print(f"{'efa_block':15s} {row['atoms']:6d} atoms: {row['ms']:9.1f} ms  {row['memory_gb']:7.3f} GB")
    rows = result["rows"]
    result["exponent_above_1000_atoms"] = {
        v: fit_exponent(rows, v, 1000) for v in [*args.variants, "efa_block"] if v in {r["variant"] for r in rows}
    }
    args.out.write_text(json.dumps(result, indent=2, default=str))
    result["table"] = table(rows)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.plot)
    print(result["table"])
    print("slopes above 1,000 atoms:", result["exponent_above_1000_atoms"])


if __name__ == "__main__":
    from so3krates import runtime

    runtime.configure()  # the so3krates command's process tuning (buffer reuse), before any array
    main()
