"""Pure, jittable train and evaluation steps over ``(apply_fn, variables)``.

Batches arrive as uint8 images; normalization, the cue (for the samples whose ``cue`` flag is
set) and the counterfactual conditions are applied on device inside the step.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from mmc_jax.data.counterfactual import CONDITIONS, counterfactual
from mmc_jax.data.cues import Cue, apply_cue, normalize
from mmc_jax.training.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def cued_inputs(cue: Cue, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Normalized images of a training batch, with the cue where ``batch["cue"]`` is True."""
    x = normalize(batch["images"])
    if "cue" not in batch:
        return x
    return apply_cue(cue, x, batch["labels"], batch["cue"])


def train_step(state: TrainState, batch: Mapping[str, jax.Array], cue: Cue):
    """One SGD step on cross-entropy in train mode (batch statistics updated).

    Returns:
      ``(new_state, {"loss", "acc"})``.
    """
    x, labels = cued_inputs(cue, batch), batch["labels"]

    def loss_fn(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x,
                                         train=True, mutable=["batch_stats"])
        return cross_entropy(logits, labels), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = state.apply_gradients(grads, batch_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, {"loss": loss, "acc": accuracy}


def eval_step(apply_fn, variables, batch: Mapping[str, jax.Array], key: jax.Array, cue: Cue,
              conditions: Sequence[str] = CONDITIONS) -> dict:
    """Summed loss and correct count per condition on one batch (eval-mode BatchNorm).

    ``batch["weight"]`` (0/1, optional) masks padding samples out of the sums.

    Returns:
      ``{condition: {"loss": sum, "correct": sum}}`` plus ``"count"``.
    """
    x, labels = normalize(batch["images"]), batch["labels"]
    weight = batch.get("weight", jnp.ones(labels.shape, jnp.float32))
    out = {"count": weight.sum()}
    for i, condition in enumerate(conditions):
        xc = counterfactual(cue, condition, x, labels, jax.random.fold_in(key, i))
        logits = apply_fn(variables, xc, train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        out[condition] = {"loss": (losses * weight).sum(),
                          "correct": ((jnp.argmax(logits, -1) == labels) * weight).sum()}
    return out
