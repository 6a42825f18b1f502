"""so3krates.compile.jit: the package's jitted programs use its compile options, and compute the same."""

import dataclasses

import jax
import numpy as np
import pytest
from model_helpers import SMALL, model, random_molecule

from so3krates.compile import compiler_options, jit
from so3krates.graph import collate, make_graph


@pytest.mark.slow
def test_potential_programs_are_compiled_without_ynnpack_products():
    if jax.default_backend() != "cpu" or not compiler_options("cpu"):
        pytest.skip("no CPU backend, or a jaxlib without the YNNPACK option")
    potential, variables = model(dataclasses.replace(SMALL, dtype="float32"))
    rng = np.random.default_rng(1)
    batch = collate([make_graph(*random_molecule(rng, 8), SMALL.r_cut)])
    plain = jax.jit(potential.predict).lower(variables, batch).compile().as_text()
    if "ynn_fusion" not in plain:
        pytest.skip("this jaxlib does not use YNNPACK for products by default: nothing to switch off")
    # The program Potential.energy_forces runs (its jitted predict), as it compiles it.
    ours = potential._energy_forces.lower(variables, batch).compile().as_text()
    assert "ynn_fusion" not in ours
    out = potential.energy_forces(variables, batch)
    reference = jax.jit(potential.predict)(variables, batch)
    np.testing.assert_allclose(np.asarray(out["forces"]), np.asarray(reference["forces"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(out["interaction_energy"]), np.asarray(reference["interaction_energy"]), rtol=1e-6
    )


def test_no_options_off_the_cpu():
    assert compiler_options("gpu") == {}
    assert compiler_options("tpu") == {}


def test_jit_keeps_the_jax_jit_interface():
    def f(x, scale):
        return x * scale

    g = jit(f, static_argnames=("scale",))
    assert g.__name__ == "f"
    assert float(g(np.float32(2.0), scale=3.0)) == 6.0
    assert "multiply" in g.lower(np.float32(2.0), scale=3.0).as_text()
