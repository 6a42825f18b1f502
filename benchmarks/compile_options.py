"""The package's XLA compile options (``so3krates.compile``) against plain ``jax.jit``, in one process.

The same Table 3 programs (toluene x 4 energy + forces with exact and tabulated radial filters, one
training step) and optionally water droplets are compiled both ways and called in alternation, so that
the machine's drift between runs does not enter the ratio. Medians in milliseconds.

    python benchmarks/compile_options.py                       # toluene x 4, JSON in results/compile_options.json
    python benchmarks/compile_options.py --sizes 201 2001 --repeats 21
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import RESULTS, make_train_step, predict_fn, toluene_batch, water_cluster  # noqa: E402

from so3krates import runtime  # noqa: E402
from so3krates.compile import compiler_options  # noqa: E402
from so3krates.graph import collate, make_graph  # noqa: E402
from so3krates.model.config import ModelConfig  # noqa: E402
from so3krates.potential import Potential  # noqa: E402


def main() -> None:
    runtime.configure(restart_argv=sys.argv)  # as the so3krates command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="water droplets of about these many atoms")
    parser.add_argument("--repeats", type=int, default=31, help="calls per program (droplets: a third)")
    parser.add_argument("--out", type=Path, default=RESULTS / "compile_options.json")
    args = parser.parse_args()

    options = compiler_options(jax.default_backend())
    if not options:
        sys.exit(f"no compile options for backend {jax.default_backend()!r}: nothing to compare")
    potential = Potential(ModelConfig(features=132, num_layers=6, degrees=(1, 2, 3), num_heads=4, r_cut=5.0))
    batch = toluene_batch()
    variables = potential.init(jax.random.PRNGKey(0), batch)
    table = potential.tabulate(variables)
    optimizer, step = make_train_step(potential)
    train_arguments = (variables["params"], optimizer.init(variables["params"]), variables["normalization"], batch)
    predict = predict_fn(potential)
    cases = {
        "toluene x4 energy+forces": (jax.jit(predict), (variables, batch, None)),
        "toluene x4 tabulated": (jax.jit(predict), (variables, batch, table)),
        "toluene x4 train step": (jax.jit(step.__wrapped__), train_arguments),  # the step without our options
    }
    for n in args.sizes:
        positions, numbers = water_cluster(n)
        droplet = jax.device_put(collate([make_graph(positions, numbers, 5.0)]))
        cases[f"water {n} energy+forces"] = (jax.jit(predict), (variables, droplet, None))
        cases[f"water {n} tabulated"] = (jax.jit(predict), (variables, droplet, table))

    compiled = {}
    for name, (fn, arguments) in cases.items():
        lowered = fn.lower(*arguments)
        compiled[name] = {"jax.jit": lowered.compile(), "so3krates.compile": lowered.compile(compiler_options=options)}
        for program in compiled[name].values():
            jax.block_until_ready(program(*arguments))

    times: dict = {name: {variant: [] for variant in compiled[name]} for name in cases}
    for call in range(args.repeats):
        for name, (_, arguments) in cases.items():
            if name.startswith("water") and call % 3:
                continue
            for variant, program in compiled[name].items():
                t0 = time.perf_counter()
                jax.block_until_ready(program(*arguments))
                times[name][variant].append((time.perf_counter() - t0) * 1e3)

    rows = []
    for name in cases:
        plain, ours = (statistics.median(times[name][v]) for v in ("jax.jit", "so3krates.compile"))
        rows.append({"case": name, "jax_jit_ms": plain, "so3krates_ms": ours, "ratio": ours / plain})
        print(f"  {name:>28s}: jax.jit {plain:8.2f} ms, with {options} {ours:8.2f} ms ({ours / plain:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"options": options, "jax": jax.__version__, "rows": rows}, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
