"""The train state: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` (step, parameters, optimizer state) plus the BatchNorm
    statistics and a PRNG key.

    ``apply_fn`` and ``tx`` are static (not saved); everything else is a PyTree of arrays that
    a checkpoint stores. ``key`` is a raw ``uint32[2]`` key, split afresh at every step.
    """

    batch_stats: Any
    key: jax.Array

    @classmethod
    def create(
        cls, apply_fn: Callable, variables: dict, tx: optax.GradientTransformation, key: jax.Array
    ) -> "TrainState":
        """A fresh state at step 0 (an int32 array, so a checkpoint stores it like every
        other leaf) from model ``variables`` and an optimizer."""
        state = super().create(
            apply_fn=apply_fn,
            params=variables["params"],
            tx=tx,
            batch_stats=variables.get("batch_stats", {}),
            key=jnp.asarray(key, jnp.uint32),
        )
        return state.replace(step=jnp.zeros((), jnp.int32))

    @property
    def variables(self) -> dict:
        """``{"params", "batch_stats"}`` for ``apply_fn``."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    def apply_gradients(self, grads, batch_stats: Optional[Any] = None, **kwargs) -> "TrainState":
        """One optimizer step, with the batch statistics of the same forward pass (``None``:
        unchanged); ``kwargs`` replace further fields, as in flax."""
        if batch_stats is not None:
            kwargs["batch_stats"] = batch_stats
        return super().apply_gradients(grads=grads, **kwargs)
