"""Midpoint (curve) training: fit the control point of a quadratic Bezier path between two
frozen models so that the loss is low all along it (Garipov et al. 2018; the paper's QMC).

Each batch draws ``t ~ U(0, 1)`` and takes an SGD step on the cross-entropy of the model at
``path(t) = (1 - t)² a + 2t(1 - t) θ_m + t² b`` with respect to ``θ_m`` only; the gradient
through the path carries the factor ``2t(1 - t)``. BatchNorm runs in train mode (batch
statistics); the path's running statistics are settled at evaluation time.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mmc_jax import data, paths
from mmc_jax.training import optim
from mmc_jax.training.checkpoint import RunCheckpoints
from mmc_jax.training.loop import run_epochs
from mmc_jax.training.state import TrainState
from mmc_jax.training.steps import cross_entropy, cued_inputs

#: The paper code's midpoint training: 15 epochs, lr 0.1 ×0.1 every 10, batch 128.
DEFAULTS = {"epochs": 15, "learning_rate": 0.1, "step_every_epochs": 10, "batch_size": 128,
            "momentum": 0.9, "weight_decay": 1e-4}


def curve_train_step(state: TrainState, batch: Mapping[str, jax.Array], a: Mapping,
                     b: Mapping, cue):
    """One SGD step on the control point (``state.params``) at a random ``t``."""
    key, t_key = jax.random.split(state.key)
    t = jax.random.uniform(t_key)
    x, labels = cued_inputs(cue, batch), batch["labels"]

    def loss_fn(control):
        params = paths.bezier(a["params"], control, b["params"])(t)
        logits, _ = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x,
                                   train=True, mutable=["batch_stats"])
        return cross_entropy(logits, labels), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads, state.batch_stats).replace(key=key)
    return state, {"loss": loss, "acc": jnp.mean(jnp.argmax(logits, -1) == labels)}


def mean_control(a: Mapping, b: Mapping) -> dict:
    """The endpoints' mean, an alternative start for the control point."""
    return jax.tree.map(lambda x, y: (x + y) / 2, dict(a), dict(b))


def fit_midpoint(apply_fn, a: Mapping, b: Mapping, control: Mapping, train_set: data.Dataset,
                 workdir, *, cue_proportion: float = 1.0, seed: int = 0, epochs: int = 15,
                 learning_rate: float = 0.1, step_every_epochs: int = 10,
                 batch_size: int = 128, momentum: float = 0.9, weight_decay: float = 1e-4,
                 progress: bool = True) -> dict[str, Any]:
    """Trains the control point of the quadratic path from ``a`` to ``b`` (resumable).

    Args:
      apply_fn: ``module.apply``.
      a, b: endpoint variables (frozen).
      control: initial control-point variables (a fresh init, as in the paper's code, or
        :func:`mean_control`).
      train_set: the data the path is fitted on.
      workdir: folder for its checkpoints (rerunning resumes).
      cue_proportion: cue on this fraction of each class (the paper: 1.0 for the cue set,
        0.0 for the clean set).
      seed: batch order and t sampling.
      epochs, learning_rate, step_every_epochs, batch_size, momentum, weight_decay: the
        paper code's step schedule and SGD (see :data:`DEFAULTS`).

    Returns:
      ``{"control": variables, "history": per-epoch records}``; the control point's
      ``batch_stats`` are the endpoints' mean (settle them by a BN policy before use).
    """
    mask = data.cue_mask(train_set.labels, cue_proportion)
    iterator = data.EpochIterator({"images": train_set.images, "labels": train_set.labels,
                                   "cue": mask}, batch_size=batch_size, seed=seed)
    spe = iterator.steps_per_epoch
    lr = optim.schedule("step", learning_rate, epochs * spe, spe, step_every_epochs, 0.1)
    start = {"params": jax.tree.map(jnp.copy, control["params"]),  # the step donates it
             "batch_stats": mean_control(a, b)["batch_stats"]}
    state = TrainState.create(apply_fn, start, optim.sgd(lr, momentum, weight_decay),
                              jax.random.PRNGKey(seed))
    step_fn = jax.jit(functools.partial(curve_train_step, a=a, b=b, cue=train_set.cue),
                      donate_argnums=0)
    settings = {"cue_proportion": cue_proportion, "seed": seed, "epochs": epochs,
                "learning_rate": learning_rate, "step_every_epochs": step_every_epochs,
                "batch_size": batch_size, "momentum": momentum, "weight_decay": weight_decay,
                "num_train": len(train_set)}
    with RunCheckpoints(workdir, settings) as checkpoints:
        state, meta = run_epochs(state, step_fn, iterator, checkpoints, epochs,
                                 progress=progress, desc="midpoint")
    return {"control": state.variables, "history": meta["history"]}


def control_weight_factor(t: float) -> float:
    """``d path(t) / d θ_m = 2t(1 - t)``: how much of a gradient at ``t`` reaches θ_m."""
    return float(2 * t * (1 - t))


__all__ = ["DEFAULTS", "control_weight_factor", "curve_train_step", "fit_midpoint",
           "mean_control"]
