"""Curve training: fit the control point θ_m of a quadratic Bezier path (the *curve*) between
two frozen models so that the loss is low all along it (Garipov et al. 2018; the paper's QMC).
The paper's code calls θ_m the "midpoint"; the curve's midpoint is ``path(1/2) = (a + 2θ_m +
b) / 4``, so here θ_m is the control point throughout.

Each batch draws ``t ~ U(0, 1)`` and takes an SGD step on the cross-entropy of the model at
``path(t) = (1 - t)² a + 2t(1 - t) θ_m + t² b`` with respect to ``θ_m`` only. Since
``d path(t) / d θ_m = 2t(1 - t)``, that factor enters the step in one of two places
(``scale``):

* ``"lr"`` (default; the paper's PyTorch code): the gradient at the path point ``path(t)``
  is handed to the optimizer unscaled, and the step's learning rate is multiplied by
  ``2t(1 - t)``, i.e. ``buf = μ·buf + (g_point + wd·θ_m); θ_m -= lr·2t(1 - t)·buf``. The
  momentum trace and the coupled weight decay see the unscaled gradient.
* ``"gradient"``: the gradient with respect to ``θ_m`` (``2t(1 - t)·g_point``, by the chain
  rule) goes to the optimizer, so momentum accumulates scaled gradients and weight decay is
  not scaled relative to them.

The two agree for plain SGD without momentum or weight decay. BatchNorm runs in train mode
(batch statistics) and its running statistics are not updated; the path's running statistics
are settled at evaluation time.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import optax

from mmc_jax import data, models, paths
from mmc_jax.metrics import accuracy, cued_inputs
from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.runtime.configs import Config, field
from mmc_jax.runtime.errors import InputError
from mmc_jax.training.checkpoint import RunCheckpoints
from mmc_jax.training.config import OptimConfig
from mmc_jax.training.loop import run_epochs
from mmc_jax.training.state import TrainState
from mmc_jax.training.steps import cross_entropy_and_grad, supervised_step

#: Where the Bezier factor ``2t(1 - t)`` is applied: the step's learning rate (the paper
#: code) or the gradient handed to the optimizer.
SCALES = ("lr", "gradient")


def _check_scale(scale) -> None:
    if not isinstance(scale, str) or scale not in SCALES:
        raise InputError(f"unknown curve.scale {scale!r}; choose from {', '.join(SCALES)}")


def curve_train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    a: Mapping,
    b: Mapping,
    cue,
    scale: str = "lr",
):
    """One optimizer step on the control point (``state.params``) at a random ``t``.

    Args:
      state: the control point's train state (its ``key`` draws ``t``; ``batch_stats`` are
        used in train mode and left unchanged).
      batch: ``{"images", "labels", "cue"}``.
      a, b: endpoint variables (frozen).
      cue: the dataset's cue (see :func:`mmc_jax.metrics.cued_inputs`).
      scale: ``"lr"`` (default, the paper code): the optimizer gets the gradient at
        ``path(t)`` and its update is multiplied by ``2t(1 - t)``; ``"gradient"``: the
        optimizer gets the gradient with respect to the control point. A static Python
        value (bind it with :func:`functools.partial` before ``jax.jit``).

    Returns:
      The new state (step + 1, fresh key) and ``{"loss", "acc"}`` of the batch at ``path(t)``.
    """
    _check_scale(scale)
    key, t_key = jax.random.split(state.key)
    t = jax.random.uniform(t_key)
    x, labels = cued_inputs(cue, batch), batch["labels"]

    if scale == "gradient":
        state, metrics = supervised_step(
            state,
            x,
            labels,
            to_model=lambda c: paths.bezier(a["params"], c, b["params"])(t),
            keep_batch_stats=True,
        )
    else:
        point = paths.bezier(a["params"], state.params, b["params"])(t)
        (loss, logits, _), grads = cross_entropy_and_grad(
            state.apply_fn, point, state.batch_stats, x, labels
        )
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        factor = 2 * t * (1 - t)
        updates = jax.tree.map(lambda u: u * factor.astype(u.dtype), updates)
        # As TrainState.apply_gradients, with the update scaled (PyTorch: lr·2t(1-t)·buf).
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
        metrics = {"loss": loss, "acc": accuracy(logits, labels)}
    return state.replace(key=key), metrics


def mean_control(a: Mapping, b: Mapping) -> dict:
    """The endpoints' mean, an alternative start for the control point."""
    return jax.tree.map(lambda x, y: (x + y) / 2, dict(a), dict(b))


#: How the control point starts: a fresh initialisation (the paper code) or the endpoints'
#: mean.
INITS = ("random", "mean")


#: The paper code's SGD for the control point: 15 epochs, batch 128, lr 0.1 ×0.1 every 10 epochs.
CURVE_OPTIM = OptimConfig(
    epochs=15,
    batch_size=128,
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="step",
    step_every_epochs=10,
    step_factor=0.1,
)


@dataclasses.dataclass(frozen=True)
class CurveConfig(Config):
    """How the control point of a quadratic path is trained (defaults: the paper's code).

    Attributes:
      cue_proportion: cue on this fraction of each class of the data it is fitted on (the
        paper: 1.0 for the cue set, 0.0 for the clean set).
      init: ``"random"`` (a fresh initialisation) or ``"mean"`` (the endpoints' mean).
      scale: where the Bezier factor ``2t(1 - t)`` goes: ``"lr"`` (the paper code: the
        step's learning rate) or ``"gradient"`` (the gradient given to the optimizer); see
        :func:`curve_train_step`.
      optim: its SGD and schedule (the paper code's step schedule, ×0.1 every 10 epochs).
    """

    prefix: ClassVar[str] = "curve."

    cue_proportion: float = field(1.0, bounds="fraction")
    init: str = field("random", choices=INITS, label="curve.init")
    scale: str = field("lr", choices=SCALES, label="curve.scale")
    optim: OptimConfig = CURVE_OPTIM


def initial_control(
    config: CurveConfig, model, a: Mapping, b: Mapping, image_shape, seed: int = 0
) -> dict:
    """The control point's start that ``config.init`` names (``"random"``: the model
    initialised with key ``seed + 7``)."""
    if config.init == "mean":
        return mean_control(a, b)
    return models.init(model, jax.random.PRNGKey(seed + 7), image_shape)


@accepts_nnx(also=("b", "control"))
def fit_curve(
    apply_fn,
    a: Mapping,
    b: Mapping,
    control: Mapping,
    train_set: data.Dataset,
    workdir,
    config: CurveConfig = CurveConfig(),
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the control point of the quadratic path from ``a`` to ``b`` (resumable).

    An ``nnx.Module`` may stand for ``(apply_fn, a)``, others for ``b`` and ``control``
    (:mod:`~mmc_jax.models.nnx_bridge`).

    Args:
      apply_fn: ``module.apply``.
      a, b: endpoint variables (frozen).
      control: initial control-point variables (:func:`initial_control`).
      train_set: the data the path is fitted on.
      workdir: folder for its checkpoints (rerunning resumes; a different config, ``scale``
        included, is refused).
      config: the training settings (:class:`CurveConfig`).
      seed: batch order and t sampling.

    Returns:
      ``{"control": variables, "history": per-epoch records}``; the control point's
      ``batch_stats`` are the endpoints' mean (settle them by a BN policy before use).

    Raises:
      InputError: ``workdir`` holds a run with another config.
    """
    mask = data.cue_mask(train_set.labels, config.cue_proportion)
    iterator = data.EpochIterator(
        {"images": train_set.images, "labels": train_set.labels, "cue": mask},
        batch_size=config.optim.batch_size,
        seed=seed,
    )
    start = {
        "params": jax.tree.map(jnp.copy, control["params"]),  # the step donates it
        "batch_stats": mean_control(a, b)["batch_stats"],
    }
    state = TrainState.create(
        apply_fn,
        start,
        config.optim.optimizer(iterator.steps_per_epoch),
        jax.random.PRNGKey(seed),
    )
    # The endpoints are arguments of the compiled step (not constants baked into it), so
    # another pair of models reuses it.
    step_fn = jax.jit(
        functools.partial(curve_train_step, cue=train_set.cue, scale=config.scale),
        donate_argnums=0,
    )
    settings = {**dataclasses.asdict(config), "seed": seed, "num_train": len(train_set)}
    del settings["init"]  # where the control point started is not part of its training
    with RunCheckpoints(workdir, settings) as checkpoints:
        state, meta = run_epochs(
            state,
            step_fn,
            iterator,
            checkpoints,
            config.optim.epochs,
            progress=progress,
            desc="curve",
            constants=(a, b),
        )
    return {"control": state.variables, "history": meta["history"]}


def control_weight_factor(t: float) -> float:
    """``d path(t) / d θ_m = 2t(1 - t)``: how much of a gradient at ``t`` reaches θ_m."""
    return float(2 * t * (1 - t))


__all__ = [
    "INITS",
    "CurveConfig",
    "SCALES",
    "control_weight_factor",
    "curve_train_step",
    "fit_curve",
    "initial_control",
    "mean_control",
]
