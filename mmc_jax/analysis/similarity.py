"""Mechanistic similarity of N models: the barrier on the straight line between every pair,
per counterfactual condition, from one compiled evaluation.

The paper's claim is that models relying on the same mechanism are linearly connected: on a
condition that isolates a mechanism (``cue``, ``randimg``, ...), models sharing it have no
barrier between them. ``pairwise_barriers`` evaluates all N(N−1)/2 lines as the points of a
single path-evaluator program (a point is ``(i, j, t)``), so the work is batched like the
points of one path; ``order`` and ``clusters`` group the models by average-linkage
hierarchical clustering of a barrier matrix. For example::

    result = similarity.pairwise_barriers(model.apply, {"θ_C": a, "FT": b, "CBFT": c},
                                          test, bn_set=train)
    result.loss["cue"]          # N×N, symmetric, zero diagonal
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mmc_jax import paths
from mmc_jax.connectivity import barrier, path_eval
from mmc_jax.data import CONDITIONS, Dataset
from mmc_jax.runtime.errors import InputError

PyTree = Any


class PairLines(struct.PyTreeNode):
    """The straight lines between every pair of ``n`` stacked models, as one path-like
    object: a point ``t = (i, j, s)`` is ``(1 − s) θ_i + s θ_j``.

    Attributes:
      models: PyTree whose leaves have shape ``[n, ...]``.
    """

    models: PyTree

    def __call__(self, t) -> PyTree:
        """The model at ``t = (i, j, s)`` (``i``, ``j`` as floats holding integers)."""
        t = jnp.asarray(t, jnp.float32)
        i, j, s = t[0].astype(jnp.int32), t[1].astype(jnp.int32), t[2]
        return jax.tree.map(
            lambda x: ((1.0 - s) * x[i].astype(jnp.float32) + s * x[j].astype(jnp.float32)).astype(
                x.dtype
            ),
            self.models,
        )

    def anchors(self) -> PyTree:
        """The stacked models (see :meth:`weights`)."""
        return self.models

    def weights(self, t) -> jax.Array:
        """``[n]`` weights of the models at ``t = (i, j, s)``: ``1 − s`` on i, ``s`` on j."""
        t = jnp.asarray(t, jnp.float32)
        n = jax.tree.leaves(self.models)[0].shape[0]
        hot = lambda k: jax.nn.one_hot(k.astype(jnp.int32), n)  # noqa: E731
        return (1.0 - t[2]) * hot(t[0]) + t[2] * hot(t[1])

    def endpoints(self) -> tuple[PyTree, PyTree]:
        """The first and last model (what the evaluator reads BatchNorm's momentum off)."""
        return (
            jax.tree.map(lambda x: x[0], self.models),
            jax.tree.map(lambda x: x[-1], self.models),
        )


@dataclasses.dataclass
class SimilarityResult:
    """Pairwise linear-path barriers of named models.

    ``loss[c]`` and ``acc[c]`` are ``N×N`` arrays (symmetric, zero diagonal) of the loss
    barrier and the accuracy barrier (a fraction) on condition ``c``; ``curves[c]`` holds
    the loss and accuracy along every line, ``[N, N, K]`` (for ``i < j``: from model i at
    t = 0 to model j at t = 1 at ``ts``; ``[j, i]`` is the same line reversed, i.e. at
    ``1 − ts``; the diagonal is left at NaN).
    """

    names: list[str]
    ts: np.ndarray
    loss: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]
    curves: dict[str, dict[str, np.ndarray]]

    def order(self, condition: str, metric: str = "loss") -> list[int]:
        """Model indices in the leaf order of average-linkage clustering of a barrier
        matrix (similar models next to each other)."""
        return [int(i) for i in _linkage_tree(self._matrix(condition, metric))["order"]]

    def clusters(self, condition: str, threshold: float, metric: str = "loss") -> list[int]:
        """A cluster label per model: groups whose average pairwise barrier is at most
        ``threshold`` (average linkage, cut at that height); labels count from 0 in the
        order of first appearance."""
        tree = _linkage_tree(self._matrix(condition, metric))
        from scipy.cluster import hierarchy

        raw = (
            hierarchy.fcluster(tree["linkage"], t=threshold, criterion="distance")
            if len(self.names) > 1
            else np.ones(1, int)
        )
        relabel: dict[int, int] = {}
        return [relabel.setdefault(int(c), len(relabel)) for c in raw]

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` layout: names, ts, and per condition both matrices."""
        return {
            "names": self.names,
            "ts": [float(t) for t in self.ts],
            "conditions": {
                c: {"loss_barrier": self.loss[c].tolist(), "acc_barrier": self.acc[c].tolist()}
                for c in self.loss
            },
        }

    def _matrix(self, condition: str, metric: str) -> np.ndarray:
        if metric not in ("loss", "acc"):
            raise InputError(f"metric must be 'loss' or 'acc', got {metric!r}")
        if condition not in self.loss:
            raise InputError(
                f"condition {condition!r} was not evaluated; evaluated: {', '.join(self.loss)}"
            )
        return (self.loss if metric == "loss" else self.acc)[condition]


def _linkage_tree(matrix: np.ndarray) -> dict[str, Any]:
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    n = matrix.shape[0]
    if n < 2:
        return {"linkage": None, "order": np.arange(n)}
    distances = squareform(np.maximum(matrix, 0.0), checks=False)
    linkage = hierarchy.linkage(distances, method="average")
    return {"linkage": linkage, "order": hierarchy.leaves_list(linkage)}


def pair_points(n: int, ts, aligned: bool = False) -> np.ndarray:
    """``[(i, j, t)]`` for every pair ``i < j`` of ``n`` models and every ``t``, ``[P·K, 3]``
    (pairs in row-major order, ``t`` fastest). ``aligned``: the second index is instead that
    of the pair's aligned copy, ``n + p`` for the ``p``-th pair."""
    ts = np.asarray(ts, np.float32)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return np.asarray(
        [(i, n + p if aligned else j, t) for p, (i, j) in enumerate(pairs) for t in ts], np.float32
    )


def pairwise_barriers(
    apply_fn: Callable,
    models: Mapping[str, PyTree],
    eval_set: Dataset,
    *,
    ts=None,
    conditions: Sequence[str] = CONDITIONS,
    align: Optional[Callable[[PyTree, PyTree], PyTree]] = None,
    **evaluator: Any,
) -> Optional[SimilarityResult]:
    """The linear-path barrier between every pair of ``models`` on every condition.

    Args:
      apply_fn: ``module.apply`` of the models' common architecture.
      models: name → variables (``{"params", "batch_stats"}``), at least two, one structure.
      eval_set: clean evaluation images (the conditions are built from them).
      ts: points of each line (default ``paths.grid(11)``; must start at 0 and end at 1).
      conditions: which of :data:`mmc_jax.data.CONDITIONS`.
      align: ``align(a, b)`` returns ``b`` permuted to match ``a`` (e.g. weight matching,
        ``permute.apply(spec, permute.weight_matching(spec, a, b, key), b)``); given, the
        line of pair ``i < j`` runs from model i to model j aligned to it, and ``[j, i]``
        mirrors ``[i, j]``.
      **evaluator: passed to :func:`mmc_jax.connectivity.path_eval.evaluate_path` (``bn``,
        ``bn_set``, ``bn_batches``, ``batch_size``, ``strategy``, ``memory_budget``,
        ``key``, ``store`` to resume, ...); every line is evaluated exactly as
        ``evaluate_path`` would.

    Returns:
      A :class:`SimilarityResult`; its entry ``[i, j]`` equals the barrier of
      ``path_eval.evaluate_path(apply_fn, paths.linear(models[i], models[j]), ts, ...)``.
      None with ``shard`` (only a share of the saved parts was evaluated).

    Raises:
      InputError: fewer than two models, models of different structures or shapes, or
        ``ts`` that does not run from 0 to 1.
    """
    names = list(models)
    if len(names) < 2:
        raise InputError(f"pairwise barriers need at least two models, got {len(names)}")
    paths.require_same_architecture([models[n] for n in names], f"models {', '.join(names)}")
    ts = paths.check_grid(paths.grid(11) if ts is None else ts)
    n, k = len(names), len(ts)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    members = [models[name] for name in names]
    if align is not None:
        members += [align(members[i], members[j]) for i, j in pairs]
    stacked = PairLines(jax.tree.map(lambda *xs: jnp.stack(xs), *members))
    result = path_eval.evaluate_path(
        apply_fn,
        stacked,
        pair_points(n, ts, align is not None),
        eval_set,
        conditions=conditions,
        **evaluator,
    )
    if result is None:  # a shard of the parts: the joining call computes the barriers
        return None
    loss, acc, curves = {}, {}, {}
    for c in result.metrics:
        per_pair = {m: result.metrics[c][m].reshape(len(pairs), k) for m in ("loss", "acc")}
        loss[c], acc[c] = np.zeros((n, n)), np.zeros((n, n))
        curves[c] = {m: np.full((n, n, k), np.nan) for m in ("loss", "acc")}
        for p, (i, j) in enumerate(pairs):
            lc, ac = per_pair["loss"][p], per_pair["acc"][p]
            loss[c][i, j] = loss[c][j, i] = barrier.loss_barrier(ts, lc)
            acc[c][i, j] = acc[c][j, i] = barrier.accuracy_barrier(ts, ac)
            curves[c]["loss"][i, j], curves[c]["acc"][i, j] = lc, ac
            curves[c]["loss"][j, i], curves[c]["acc"][j, i] = lc[::-1], ac[::-1]
    return SimilarityResult(names, ts.astype(np.float64), loss, acc, curves)


__all__ = ["PairLines", "SimilarityResult", "pair_points", "pairwise_barriers"]
