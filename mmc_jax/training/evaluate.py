"""Accuracy and loss of a model on a dataset under the counterfactual conditions."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from mmc_jax import parallel
from mmc_jax.data import CONDITIONS, Dataset, check_random_from
from mmc_jax.data.batching import stack_batches
from mmc_jax.data.cues import Cue
from mmc_jax.training.steps import eval_step


@functools.partial(jax.jit, static_argnames=("apply_fn", "cue", "conditions"))
def _eval_batch(apply_fn, variables, batch, batch_index, key, pool, cue, conditions):
    return eval_step(apply_fn, variables, batch, key, cue, conditions, batch_index, pool)


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
) -> dict:
    """Mean loss and accuracy under each condition, eval-mode BatchNorm.

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
      mesh: data-parallel mesh (default: every local device, see :mod:`mmc_jax.parallel`);
        batches are split over it, the variables replicated.

    Returns:
      ``{condition: {"acc": float, "loss": float}}``.
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
    stacked = stack_batches(dataset, batch_size)
    rows = ({k: v[i] for k, v in stacked.items()} for i in range(len(stacked["labels"])))
    variables = parallel.replicate(variables, mesh)
    for i, batch in enumerate(parallel.shard_batches(rows, mesh)):
        out = _eval_batch(apply_fn, variables, batch, jnp.int32(i), key, pool, cue, conditions)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {
        c: {"acc": float(totals[c]["correct"]) / count, "loss": float(totals[c]["loss"]) / count}
        for c in conditions
    }
