"""Run directories written before the attention projections had biases still load (biases zero)."""

from __future__ import annotations

import jax
import numpy as np
from model_helpers import SMALL, evaluate, model, random_molecule

from so3krates.graph import make_graph
from so3krates.run_dir import flatten, load_run, save_model, unflatten


def test_model_without_attention_biases_loads_with_zero_biases(tmp_path):
    potential, variables = model(SMALL)
    flat = flatten(variables)
    dropped = [
        name for name in flat if name.endswith("/bias") and name.split("/")[-2].endswith(("_query", "_key", "_value"))
    ]
    assert len(dropped) == 5 * SMALL.num_layers  # feature q, k, v and SPHC q, k of every layer
    legacy = unflatten({k: v for k, v in flat.items() if k not in dropped})
    save_model(tmp_path, {"model": SMALL.to_dict()}, legacy, {"elements": [1, 6, 7, 8]})

    loaded_potential, loaded, _ = load_run(tmp_path)
    for name in dropped:
        assert not np.any(flatten(loaded)[name])
    graph = make_graph(*random_molecule(np.random.default_rng(3), 6), SMALL.r_cut)
    zero_bias = unflatten({**flat, **{k: np.zeros_like(flat[k]) for k in dropped}})
    np.testing.assert_allclose(
        evaluate(loaded_potential, loaded, [graph])["energy"],
        evaluate(potential, zero_bias, [graph])["energy"],
        rtol=1e-12,
    )
    assert jax.tree_util.tree_structure(loaded["params"]) == jax.tree_util.tree_structure(variables["params"])


def test_configurations_with_the_old_spelling_still_load():
    # Runs written before issue #20 saved eq. 14's normalisation under "nonlocal_normalisation".
    from so3krates.model.config import ModelConfig
    from so3krates.train.config import TrainConfig

    assert ModelConfig.from_dict({"nonlocal_normalisation": "racah"}).nonlocal_normalization == "racah"
    saved = TrainConfig().to_dict()
    saved["model"] = {**saved["model"], "nonlocal_normalisation": "racah"}
    del saved["model"]["nonlocal_normalization"]
    assert TrainConfig.from_dict(saved).model.nonlocal_normalization == "racah"


def test_the_old_keyword_still_works_with_a_warning():
    import pytest

    from so3krates.model.config import ModelConfig

    with pytest.warns(DeprecationWarning, match="nonlocal_normalization"):
        config = ModelConfig(nonlocal_normalisation="racah")
    assert config.nonlocal_normalization == "racah" and "nonlocal_normalisation" not in config.to_dict()
