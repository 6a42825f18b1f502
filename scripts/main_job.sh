#!/usr/bin/env bash
# The main job on a fresh machine: a virtual environment, the package, a force field trained on the
# bundled GFN2-xTB ethanol data (quick preset), its test errors, and 1 ps of MD with it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"
out="runs/main_job_$(date +%Y%m%d_%H%M%S)"
so3krates train --out "$out" --no-progress
so3krates evaluate --model "$out"
start="$(python -c 'import so3krates.datasets as d; print(d.path("ethanol"))')"
so3krates md --model "$out" --structure "$start" --index 0 --ensemble langevin --temperature 300 \
    --timestep 0.5 --steps 2000 --interval 100 --out "$out/md.extxyz" --no-progress
echo "model, errors and trajectory in $out"
