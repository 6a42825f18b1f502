"""Shared test set-up. Tests run in float64 where they compare against finite differences or check
symmetries to tight tolerances; models can still be built in float32 (their dtype is explicit)."""

import jax

jax.config.update("jax_enable_x64", True)
