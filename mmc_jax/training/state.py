"""The train state: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Parameters, BatchNorm statistics, optimizer state, step and PRNG key.

    ``apply_fn`` and ``tx`` are static (not saved); everything else is a PyTree of arrays that
    a checkpoint stores. ``key`` is a raw ``uint32[2]`` key, split afresh at every step.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    key: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, apply_fn: Callable, variables: dict, tx: optax.GradientTransformation,
               key: jax.Array) -> "TrainState":
        """A fresh state at step 0 from model ``variables`` and an optimizer."""
        params = variables["params"]
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                   key=jnp.asarray(key, jnp.uint32), apply_fn=apply_fn, tx=tx)

    @property
    def variables(self) -> dict:
        """``{"params", "batch_stats"}`` for ``apply_fn``."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    def apply_gradients(self, grads, batch_stats) -> "TrainState":
        """One optimizer step, with the batch statistics of the same forward pass."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
