"""Group DRO (Sagawa, Koh, Hashimoto, Liang, ICLR 2020, "Distributionally robust neural
networks for group shifts") from θ_C, over the (class, cue present) groups of
:mod:`~mmc_jax.finetune.groups`.

Online, as the paper's Algorithm 1 and its released ``LossComputer``: every step computes each
group's mean loss on the batch (0 for a group absent from it), updates the group weights by
exponentiated gradient, ``q ← q · exp(η · (ℓ_g + C / √n_g))`` then normalized, and descends
``Σ_g q_g ℓ_g`` with the updated weights. η is ``FinetuneConfig.dro_step_size`` (the paper's
0.01), C the generalization adjustment ``dro_adjustment`` (0 unless tuned; the paper searched
0 to 5), ``n_g`` the group's size in the fine-tuning data. The weights are part of the train
state, so a resumed run continues with them.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from mmc_jax.metrics import accuracy, cued_inputs, train_forward
from mmc_jax.training.state import TrainState


class GroupDROState(TrainState):
    """A train state with Group DRO's group weights ``q`` (saved in checkpoints)."""

    group_weights: jax.Array
    #: Fields a checkpoint stores beyond :class:`~mmc_jax.training.TrainState`'s.
    EXTRA_FIELDS: ClassVar[tuple[str, ...]] = ("group_weights",)

    @classmethod
    def create(cls, apply_fn, variables, tx, key, num_groups: int = 2) -> "GroupDROState":
        """A fresh state with uniform group weights."""
        base = TrainState.create(apply_fn, variables, tx, key)
        return cls(
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            group_weights=jnp.full((num_groups,), 1.0 / num_groups, jnp.float32),
        )


def update_weights(weights, group_losses, group_counts, step_size, adjustment=0.0):
    """One exponentiated-gradient step of the group weights (the paper's Algorithm 1, with
    the generalization adjustment ``C / √n_g``): ``q · exp(η (ℓ + C / √n))``, normalized."""
    adjusted = group_losses + adjustment / jnp.sqrt(jnp.maximum(group_counts, 1.0))
    weights = weights * jnp.exp(step_size * adjusted)
    return weights / weights.sum()


def group_losses(losses, groups, num_groups: int):
    """Mean loss of each group in a batch (0 for an absent group), and its sample count."""
    sums = jax.ops.segment_sum(losses, groups, num_segments=num_groups)
    counts = jax.ops.segment_sum(jnp.ones_like(losses), groups, num_segments=num_groups)
    return sums / jnp.maximum(counts, 1.0), counts


def group_dro_step(
    state: GroupDROState,
    batch,
    group_counts,
    *,
    cue,
    step_size: float,
    adjustment: float,
):
    """One Group DRO step on a mixed batch ``{"images", "labels", "cue"}``: the group weights
    updated from the batch's group losses, then one optimizer step on their weighted sum."""
    inputs, labels = cued_inputs(cue, batch), batch["labels"]
    groups = 2 * labels + batch["cue"].astype(jnp.int32)
    num_groups = state.group_weights.shape[0]

    def loss_fn(params):
        logits, stats = train_forward(state.apply_fn, params, state.batch_stats, inputs)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        per_group, _ = group_losses(losses, groups, num_groups)
        weights = update_weights(
            state.group_weights,
            jax.lax.stop_gradient(per_group),
            group_counts,
            step_size,
            adjustment,
        )
        return weights @ per_group, (logits, stats, weights, losses.mean())

    (robust, (logits, stats, weights, mean)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    state = state.apply_gradients(grads, stats, group_weights=weights)
    metrics = {"loss": mean, "robust_loss": robust, "acc": accuracy(logits, labels)}
    return state, metrics


def make_step(cue, step_size: float, adjustment: float):
    """:func:`group_dro_step` with its settings bound, as ``run_epochs`` calls it
    (``step(state, batch, group_counts)``)."""
    return functools.partial(group_dro_step, cue=cue, step_size=step_size, adjustment=adjustment)


__all__ = ["GroupDROState", "group_dro_step", "group_losses", "make_step", "update_weights"]
