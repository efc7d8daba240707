"""Pure, jittable train and evaluation steps over ``(apply_fn, variables)``.

Batches arrive as uint8 images; normalization, the cue (for the samples whose ``cue`` flag is
set) and the counterfactual conditions are applied on device inside the step.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from mmc_jax.data.counterfactual import CONDITIONS, clean_inputs, condition_key, counterfactual
from mmc_jax.data.cues import Cue, apply_cue, normalize
from mmc_jax.training.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def cued_inputs(cue: Cue, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Normalized images of a training batch, with the cue where ``batch["cue"]`` is True
    and cue-free elsewhere (all cue-free without a ``"cue"`` flag)."""
    if "cue" not in batch:
        return clean_inputs(cue, batch["images"])
    return apply_cue(cue, normalize(batch["images"]), batch["labels"], batch["cue"])


def train_forward(apply_fn, params, batch_stats, inputs: jax.Array, **kwargs):
    """Train-mode forward pass (batch statistics, running statistics updated); returns
    ``(output, new batch_stats)`` (``batch_stats`` itself for a model without BatchNorm)."""
    out, updates = apply_fn(
        {"params": params, "batch_stats": batch_stats},
        inputs,
        train=True,
        mutable=["batch_stats"],
        **kwargs,
    )
    return out, updates.get("batch_stats", batch_stats)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of the batch whose largest logit is its label."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


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


def eval_step(
    apply_fn,
    variables,
    batch: Mapping[str, jax.Array],
    key: jax.Array,
    cue: Cue,
    conditions: Sequence[str] = CONDITIONS,
    batch_index=0,
    pool=None,
) -> dict:
    """Summed loss and correct count per condition on one batch (eval-mode BatchNorm).

    The one evaluation kernel: ``training.evaluate`` and the path evaluator both call it, so
    a model gets the same numbers from either.

    Args:
      apply_fn, variables: the model.
      batch: ``{"images" (uint8), "labels", "weight" (0/1, optional)}``; ``weight`` masks
        padding samples out of the sums.
      key: the evaluation's PRNG key; condition ``c`` of batch ``i`` draws from
        ``data.condition_key(key, c, i)``.
      cue: the cue of the conditions.
      conditions: which of :data:`CONDITIONS`.
      batch_index: ``i``, the batch's position in the evaluation set (may be traced).
      pool: images that random images and random domino cues are drawn from (see
        ``data.counterfactual``); ``None``: the batch itself.

    Returns:
      ``{condition: {"loss": sum, "correct": sum}}`` plus ``"count"``.
    """
    x, labels = normalize(batch["images"]), batch["labels"]
    weight = batch.get("weight", jnp.ones(labels.shape, jnp.float32))
    out = {"count": weight.sum()}
    for condition in conditions:
        xc = counterfactual(
            cue, condition, x, labels, condition_key(key, condition, batch_index), pool
        )
        logits = apply_fn(variables, xc, train=False).astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        out[condition] = {
            "loss": (losses * weight).sum(),
            "correct": ((jnp.argmax(logits, -1) == labels) * weight).sum(),
        }
    return out
