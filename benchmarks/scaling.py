"""Data-parallel training throughput (structures per second) against the number of devices (issue #8).

Each device count runs in its own child process (JAX fixes its devices at start-up); on a CPU-only
machine the devices are forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=D``),
which all share the same CPU cores: expect no speed-up there, only the overhead of splitting the batch.
On a machine with D accelerators the same script measures the real scaling (``--no-force-host``).

Protocol: bundled ethanol data (first ``--frames`` frames, eV and Å), global batch ``--batch-size``
split evenly over the devices, float32, degrees (1, 2), 2 heads, eq. 35 loss on energies and forces
(β = 0.99), clipped Adam;
the first step (compilation) is timed apart, then ``--steps`` steps are timed (median over the steps,
each ending with ``block_until_ready``).

    python benchmarks/scaling.py                                # devices 1 2, JSON in benchmarks/results
    python benchmarks/scaling.py --devices 1 2 4 --batch-size 32 --features 64 --layers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def child(args: argparse.Namespace) -> dict:
    """Measure one device count (runs in a fresh process)."""
    import jax
    import numpy as np

    from so3krates import datasets
    from so3krates.data import read_frames
    from so3krates.graph import collate
    from so3krates.model.config import ModelConfig
    from so3krates.potential import Potential
    from so3krates.train import parallel as par
    from so3krates.train.batching import max_device_pad_sizes, split_for_devices, stack_batches
    from so3krates.train.loss import eq35_structure_loss
    from so3krates.train.optim import make_optimizer
    from so3krates.train.pipeline import build_graphs
    from so3krates.train.steps import init_train_state, make_train_step

    d = args.child
    frames = read_frames(datasets.path("ethanol"), index=f":{args.frames}")
    config = ModelConfig(features=args.features, num_layers=args.layers, degrees=(1, 2), num_heads=2, r_cut=5.0)
    graphs = build_graphs(frames, range(len(frames)), config.r_cut)
    potential = Potential(config)
    variables = jax.jit(potential.init)(jax.random.PRNGKey(0), collate(graphs[: args.batch_size]))
    optimizer = make_optimizer(1.0)
    mesh = par.make_mesh(par.select_devices(d))
    step = make_train_step(potential, optimizer, eq35_structure_loss(0.99), mesh, ema_decay=0.999)
    state = par.replicate(init_train_state(variables["params"], optimizer), mesh)
    normalization = par.replicate(variables["normalization"], mesh)
    sizes = max_device_pad_sizes(graphs, -(-args.batch_size // d))
    rng = np.random.default_rng(0)

    def batch() -> object:
        pick = rng.choice(len(graphs), args.batch_size, replace=False)
        return par.shard_batch(stack_batches(split_for_devices([graphs[i] for i in pick], d), sizes), mesh)

    t = time.perf_counter()
    state, stats = step(state, normalization, batch(), 1e-3)
    jax.block_until_ready(stats)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        b = batch()  # host-side collation is not timed: a prefetching loader overlaps it
        t = time.perf_counter()
        state, stats = step(state, normalization, b, 1e-3)
        jax.block_until_ready(stats)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {
        "devices": d,
        "platform": jax.devices()[0].platform,
        "batch_size": args.batch_size,
        "per_device": -(-args.batch_size // d),
        "compile_s": compile_s,
        "step_ms_median": 1e3 * median,
        "structures_per_s": args.batch_size / median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (structures per step)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--no-force-host", action="store_true", help="use the real devices, no forced host devices")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    rows = []
    for d in args.devices:
        env = dict(os.environ)
        if not args.no_force_host:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={d}"
            env["JAX_PLATFORMS"] = "cpu"
        argv = [sys.executable, __file__, "--child", str(d)]
        for name in ("batch_size", "steps", "frames", "features", "layers"):
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        run = subprocess.run(argv, env=env, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"devices={d} failed:\n{run.stderr[-3000:]}")
        rows.append(json.loads(next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))[7:]))
        r = rows[-1]
        print(
            f"devices {d}: {r['structures_per_s']:.1f} structures/s (step {r['step_ms_median']:.0f} ms, "
            f"compile {r['compile_s']:.1f} s)",
            flush=True,
        )
    base = rows[0]["structures_per_s"]
    print("\n| devices | structures/s | step (ms) | speed-up | compile (s) |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['structures_per_s']:.1f} | {r['step_ms_median']:.0f} | "
            f"{r['structures_per_s'] / base:.2f} | {r['compile_s']:.1f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "forced_host": not args.no_force_host}
    args.out.write_text(json.dumps({"meta": meta, "args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    from so3krates import runtime

    runtime.configure()  # the so3krates command's process tuning (buffer reuse), before any array
    main()
