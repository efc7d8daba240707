"""The one evaluation kernel: loss and accuracy of a model, under the counterfactual conditions.

Training (:mod:`mmc_jax.training`), the path evaluator (:mod:`mmc_jax.connectivity.path_eval`)
and CBFT's objectives (:mod:`mmc_jax.finetune.objectives`) all score a model through these
functions, so a model gets the same numbers from each of them. Batches arrive as uint8 images;
normalization, the cue and the counterfactual conditions are applied on device.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from mmc_jax.data import CONDITIONS, Dataset, check_random_from
from mmc_jax.data.batching import stack_batches
from mmc_jax.data.counterfactual import clean_inputs, condition_key, counterfactual
from mmc_jax.data.cues import Cue, apply_cue, normalize
from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.runtime import parallel


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of the batch whose largest logit is its label."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


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


@accepts_nnx
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

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).

    The one evaluation kernel: ``training.evaluate`` and the path evaluator both call it, so
    a model gets the same numbers from either.

    Args:
      apply_fn, variables: the model.
      batch: ``{"images" (uint8), "labels", "weight" (0/1, optional), "cue" (bool,
        optional)}``; ``weight`` masks padding samples out of the sums, ``cue`` says which
        samples carry a cue in the cued conditions (``data.counterfactual``'s ``mask``).
      key: the evaluation's PRNG key; condition ``c`` of batch ``i`` draws from
        ``data.condition_key(key, c, i)``.
      cue: the cue of the conditions.
      conditions: which of :data:`CONDITIONS`.
      batch_index: ``i``, the batch's position in the evaluation set (may be traced).
      pool: images that random images and random domino cues are drawn from (see
        ``data.counterfactual``); ``None``: the batch itself.

    Returns:
      ``{condition: {"loss": sum, "correct": sum, "class_correct": [K] sums}}`` plus
      ``"count"`` and ``"class_count"`` ([K]).
    """
    x, labels = normalize(batch["images"]), batch["labels"]
    weight = batch.get("weight", jnp.ones(labels.shape, jnp.float32))
    out = {"count": weight.sum()}
    for condition in conditions:
        draw = condition_key(key, condition, batch_index)
        xc = counterfactual(cue, condition, x, labels, draw, pool, batch.get("cue"))
        logits = apply_fn(variables, xc, train=False).astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels) * weight
        out[condition] = {
            "loss": (losses * weight).sum(),
            "correct": correct.sum(),
            "class_correct": jax.ops.segment_sum(correct, labels, logits.shape[-1]),
        }
    out["class_count"] = jax.ops.segment_sum(weight, labels, logits.shape[-1])
    return out


@functools.partial(jax.jit, static_argnames=("apply_fn", "cue", "conditions"))
def _eval_batch(apply_fn, variables, batch, batch_index, key, pool, cue, conditions):
    return eval_step(apply_fn, variables, batch, key, cue, conditions, batch_index, pool)


@accepts_nnx
def evaluate(
    apply_fn,
    variables,
    dataset: Dataset,
    key: jax.Array,
    *,
    cue: Cue | None = None,
    conditions: Sequence[str] = CONDITIONS,
    batch_size: int = 500,
    random_from: str = "set",
    mesh=None,
    per_class: bool = False,
    cue_proportion: float = 1.0,
) -> dict:
    """Mean loss and accuracy under each condition, eval-mode BatchNorm.

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).

    Args:
      apply_fn: ``module.apply``.
      variables: ``{"params", "batch_stats"}``.
      dataset: the evaluation set (clean images).
      key: PRNG key of the random conditions (see ``data.condition_key``); the same key gives
        the same counterfactual images as the path evaluator.
      cue: the cue (default ``dataset.cue``).
      conditions: which of :data:`CONDITIONS`.
      batch_size: evaluation batch size.
      random_from: where ``randimg`` images and random domino cues come from: ``"set"``
        (the whole evaluation set, as the paper's code) or ``"batch"``.
      mesh: data-parallel mesh (default: every device, see :mod:`mmc_jax.runtime.parallel`);
        batches are split over it, the variables replicated.
      per_class: also each class's accuracy (``"class_acc"``, a list by label; ``None``
        for a class without test images), what :func:`worst_group` reads.
      cue_proportion: the cued conditions stamp the cue on this fraction of each class
        (``data.cue_mask``; the others stay cue-free), as the paper's fine-tuning script
        builds its test sets from ``--cue_proportion``; 1 (default): every sample.

    Returns:
      ``{condition: {"acc": float, "loss": float}}`` (and ``"class_acc"``).
    """
    cue = dataset.cue if cue is None else cue
    conditions = tuple(conditions)
    mesh = parallel.data_mesh() if mesh is None else mesh
    random = {"randcue", "randimg"} & set(conditions)  # the conditions that draw images
    pool = (
        parallel.replicate(dataset.images, mesh)
        if check_random_from(random_from) == "set" and random
        else None
    )
    totals = None
    stacked = stack_batches(dataset, batch_size, cue_proportion=cue_proportion)
    rows = ({k: v[i] for k, v in stacked.items()} for i in range(len(stacked["labels"])))
    variables = parallel.replicate(variables, mesh)
    for i, batch in enumerate(parallel.shard_batches(rows, mesh)):
        out = _eval_batch(apply_fn, variables, batch, jnp.int32(i), key, pool, cue, conditions)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = parallel.fetch(totals)
    count = float(totals["count"])
    out = {
        c: {"acc": float(totals[c]["correct"]) / count, "loss": float(totals[c]["loss"]) / count}
        for c in conditions
    }
    if per_class:
        counts = totals["class_count"]
        for c in conditions:
            out[c]["class_acc"] = [
                float(right) / float(n) if n else None
                for right, n in zip(totals[c]["class_correct"], counts)
            ]
    return out


#: The conditions of the (class, cue present) groups: the cue absent, the cue present.
CUE_GROUPS = ("nocue", "cue")


def worst_group(test: Mapping[str, Mapping]) -> dict:
    """Worst-group accuracies of :func:`evaluate`'s ``per_class`` results: ``"class_cue"``,
    the least accurate of the (class, cue present or not) groups (the spurious-correlation
    field's worst-group accuracy, the cue being the spurious attribute: the ``nocue`` and
    ``cue`` test sets), and ``"class_condition"``, of every (class, condition) cell. A
    condition or class missing from ``test`` is left out; ``{}`` without per-class results."""

    def lowest(conditions):
        found = (test[c].get("class_acc", []) for c in conditions if c in test)
        cells = [a for accs in found for a in accs if a is not None]
        return min(cells) if cells else None

    found = {"class_cue": lowest(CUE_GROUPS), "class_condition": lowest(CONDITIONS)}
    return {k: v for k, v in found.items() if v is not None}
