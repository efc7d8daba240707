"""SGD exactly as PyTorch applies it, and the paper's learning-rate schedules.

PyTorch's ``SGD(lr, momentum, weight_decay)`` updates ``d = g + wd·θ; buf = μ·buf + d;
θ -= lr·buf`` (coupled weight decay, no dampening, first buffer = d). The optax chain
``add_decayed_weights(wd) → sgd(lr, momentum=μ)`` is the same update.
"""

from __future__ import annotations

import optax

from mmc_jax.runtime.errors import InputError, check_bounds

SCHEDULES = ("constant", "step", "cosine")


def sgd(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    clip_norm: float = 0.0,
) -> optax.GradientTransformation:
    """PyTorch-equivalent SGD with momentum and coupled weight decay (on every parameter).

    ``clip_norm > 0`` first rescales the gradient to global norm at most ``clip_norm``
    (PyTorch's ``clip_grad_norm_`` before ``optimizer.step()``); 0 leaves it alone and adds
    nothing to the optimizer state.
    """
    check_bounds(
        {"momentum": momentum, "weight_decay": weight_decay, "grad_clip_norm": clip_norm},
        momentum=("momentum",),
        non_negative=("weight_decay", "grad_clip_norm"),
    )
    clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    return optax.chain(
        *clip,
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum or None),
    )


def schedule(
    name: str,
    base_lr: float,
    total_steps: int,
    steps_per_epoch: int,
    step_every_epochs: int = 40,
    step_factor: float = 0.1,
    hold_steps: int = 0,
) -> optax.Schedule:
    """Learning rate per optimizer step.

    Args:
      name: ``"constant"``; ``"step"`` (×``step_factor`` every ``step_every_epochs`` epochs,
        PyTorch's ``StepLR`` stepped per epoch); ``"cosine"`` (to 0 over ``total_steps``,
        stepped per iteration).
      base_lr: initial learning rate (> 0).
      total_steps: optimizer steps of the whole run.
      steps_per_epoch: optimizer steps per epoch.
      step_every_epochs, step_factor: of ``"step"``.
      hold_steps: > 0 holds ``base_lr`` for this many steps, then starts the schedule (the
        paper code's CBFT starts its cosine after the warm-up epochs).
    """
    if not base_lr > 0:
        raise InputError(f"learning rate must be positive, got {base_lr}")
    after = _schedule(name, base_lr, total_steps, steps_per_epoch, step_every_epochs, step_factor)
    if hold_steps <= 0:
        return after
    return optax.join_schedules([optax.constant_schedule(base_lr), after], [hold_steps])


def _schedule(name, base_lr, total_steps, steps_per_epoch, step_every_epochs, step_factor):
    """The schedule ``name`` from step 0."""
    if name == "constant":
        return optax.constant_schedule(base_lr)
    if name == "step":
        every = step_every_epochs * steps_per_epoch
        boundaries = {every * k: step_factor for k in range(1, total_steps // max(every, 1) + 1)}
        return optax.piecewise_constant_schedule(base_lr, boundaries)
    if name == "cosine":
        return optax.cosine_decay_schedule(base_lr, max(total_steps, 1))
    raise InputError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
