"""Pure, jittable training steps over ``(apply_fn, variables)``.

Batches arrive as uint8 images; normalization, the cue (for the samples whose ``cue`` flag is
set) and the counterfactual conditions are applied on device inside the step.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import jax

from mmc_jax.data.cues import Cue
from mmc_jax.metrics import accuracy, cross_entropy, cued_inputs, train_forward
from mmc_jax.training.state import TrainState


def cross_entropy_and_grad(
    apply_fn,
    params,
    batch_stats,
    inputs: jax.Array,
    labels: jax.Array,
    to_model: Optional[Callable] = None,
):
    """Cross-entropy of a train-mode forward pass and its gradient in ``params``.

    Args:
      apply_fn, params, batch_stats: the model.
      inputs, labels: the batch (inputs already normalized).
      to_model: maps ``params`` to the parameters the model runs with (default: themselves),
        e.g. a path's control point to the point of the path, so the gradient reaches
        ``params`` through it.

    Returns:
      ``(loss, logits, new batch_stats), grads``.
    """

    def loss_fn(params):
        model_params = params if to_model is None else to_model(params)
        logits, new_stats = train_forward(apply_fn, model_params, batch_stats, inputs)
        return cross_entropy(logits, labels), (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return (loss, logits, new_stats), grads


def supervised_step(
    state: TrainState,
    inputs: jax.Array,
    labels: jax.Array,
    *,
    to_model: Optional[Callable] = None,
    keep_batch_stats: bool = False,
):
    """One optimizer step on the cross-entropy of a train-mode forward pass: the skeleton of
    every step that reports ``{"loss", "acc"}``.

    Args:
      state: the train state (its ``apply_fn``, ``params`` and ``batch_stats``).
      inputs, labels: the batch (inputs already normalized).
      to_model: see :func:`cross_entropy_and_grad`.
      keep_batch_stats: leave ``state.batch_stats`` unchanged (default: those of the pass).

    Returns:
      ``(new_state, {"loss", "acc"})``.
    """
    (loss, logits, batch_stats), grads = cross_entropy_and_grad(
        state.apply_fn, state.params, state.batch_stats, inputs, labels, to_model
    )
    state = state.apply_gradients(grads, state.batch_stats if keep_batch_stats else batch_stats)
    return state, {"loss": loss, "acc": accuracy(logits, labels)}


def train_step(state: TrainState, batch: Mapping[str, jax.Array], cue: Cue):
    """One SGD step on cross-entropy in train mode (batch statistics updated), the cue
    applied as :func:`cued_inputs` says.

    Returns:
      ``(new_state, {"loss", "acc"})``.
    """
    return supervised_step(state, cued_inputs(cue, batch), batch["labels"])
