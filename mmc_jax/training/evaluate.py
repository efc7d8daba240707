"""Accuracy and loss of a model on a dataset under the counterfactual conditions."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from mmc_jax import parallel
from mmc_jax.data import CONDITIONS, Dataset
from mmc_jax.data.batching import stack_batches
from mmc_jax.data.cues import Cue
from mmc_jax.training.steps import eval_step


@functools.partial(jax.jit, static_argnames=("apply_fn", "cue", "conditions"))
def _eval_batch(apply_fn, variables, batch, key, cue, conditions):
    return eval_step(apply_fn, variables, batch, key, cue, conditions)


def evaluate(apply_fn, variables, dataset: Dataset, key: jax.Array, *, cue: Cue | None = None,
             conditions: Sequence[str] = CONDITIONS, batch_size: int = 500,
             mesh=None) -> dict:
    """Mean loss and accuracy under each condition, eval-mode BatchNorm.

    Args:
      apply_fn: ``module.apply``.
      variables: ``{"params", "batch_stats"}``.
      dataset: the evaluation set (clean images).
      key: PRNG key of the random conditions (batch ``i`` uses ``fold_in(key, i)``).
      cue: the cue (default ``dataset.cue``).
      conditions: which of :data:`CONDITIONS`.
      batch_size: evaluation batch size (``randimg`` draws its images within a batch).
      mesh: data-parallel mesh (default: every local device, see :mod:`mmc_jax.parallel`);
        batches are split over it, the variables replicated.

    Returns:
      ``{condition: {"acc": float, "loss": float}}``.
    """
    cue = dataset.cue if cue is None else cue
    conditions = tuple(conditions)
    totals = None
    stacked = stack_batches(dataset, batch_size)
    rows = ({k: v[i] for k, v in stacked.items()} for i in range(len(stacked["labels"])))
    mesh = parallel.data_mesh() if mesh is None else mesh
    variables = parallel.replicate(variables, mesh)
    for i, batch in enumerate(parallel.shard_batches(rows, mesh)):
        out = _eval_batch(apply_fn, variables, batch, jax.random.fold_in(key, i), cue,
                          conditions)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {c: {"acc": float(totals[c]["correct"]) / count,
                "loss": float(totals[c]["loss"]) / count} for c in conditions}
