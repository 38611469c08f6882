"""A plain JAX MLP with its parameters, for `lockgate register --from` tests."""

from __future__ import annotations

import numpy as np


def build(*args: str):  # type: ignore[no-untyped-def]
    import jax
    import jax.numpy as jnp

    from lockgate import JaxFunction

    rng = np.random.default_rng(int(args[0]) if args else 0)
    params = {"w": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)}
    return (JaxFunction(lambda p, x: jax.nn.sigmoid(x @ p["w"]), params),
            rng.random((3, 6)).astype(np.float32))
