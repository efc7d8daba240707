"""Per-layer barriers (layer-wise linear mode connectivity, Adilova et al. 2024): interpolate
one layer at a time between models A and B, the rest held at A, and measure the barrier of
each such partial line, on every condition, from one compiled evaluation.

A layer is a top-level module of the variables (``params/<name>`` with its
``batch_stats/<name>``), e.g. ``conv0``, ``bn0`` and ``classifier`` in ``cnn4``; ``groups``
chooses others. A point of the evaluation is ``(g, t)``: ``A + t·(B − A)`` on group ``g``'s
leaves, ``A`` elsewhere, so all G lines are batched like the points of one path.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct, traverse_util

from mmc_jax import paths
from mmc_jax.connectivity import barrier, path_eval
from mmc_jax.data import CONDITIONS, Dataset
from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.runtime.errors import InputError

PyTree = Any


class LayerLines(struct.PyTreeNode):
    """The partial lines from ``a`` towards ``b``, one per group: the point ``t = (g, s)`` is
    ``a + s · mask_g · (b − a)``.

    Attributes:
      a, b: the two models' variables.
      masks: like ``a``, each leaf a ``[G]`` vector of 0/1 (1: the leaf belongs to group g).
    """

    a: PyTree
    b: PyTree
    masks: PyTree

    def __call__(self, t) -> PyTree:
        """The model at ``t = (g, s)`` (``g`` as a float holding an integer)."""
        t = jnp.asarray(t, jnp.float32)
        g, s = t[0].astype(jnp.int32), t[1]
        return jax.tree.map(
            lambda a, b, m: (
                a.astype(jnp.float32) + s * m[g] * (b.astype(jnp.float32) - a.astype(jnp.float32))
            ).astype(a.dtype),
            self.a,
            self.b,
            self.masks,
        )

    def anchors(self) -> PyTree:
        """``a``, then ``a`` with group g's leaves from ``b`` for every g: ``[G + 1, ...]``."""

        def stack(a, b, m):
            a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
            mask = m.reshape(-1, *([1] * a.ndim))
            return jnp.concatenate([a32[None], a32 + mask * (b32 - a32)]).astype(a.dtype)

        return jax.tree.map(stack, self.a, self.b, self.masks)

    def weights(self, t) -> jax.Array:
        """``[G + 1]`` weights of :meth:`anchors` at ``t = (g, s)``."""
        t = jnp.asarray(t, jnp.float32)
        n = jax.tree.leaves(self.masks)[0].shape[0] + 1
        return (1.0 - t[1]) * jax.nn.one_hot(0, n) + t[1] * jax.nn.one_hot(
            t[0].astype(jnp.int32) + 1, n
        )

    def endpoints(self) -> tuple[PyTree, PyTree]:
        """``(a, b)``."""
        return self.a, self.b


@dataclasses.dataclass
class LayerwiseResult:
    """Barriers of the partial lines: ``loss[c]`` and ``acc[c]`` are arrays over
    ``groups``; ``curves[c]["loss" | "acc"]`` are ``[G, K]`` values along each line."""

    groups: list[str]
    ts: np.ndarray
    loss: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]
    curves: dict[str, dict[str, np.ndarray]]

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` layout: groups, ts, and per condition barriers and curves."""
        return {
            "groups": self.groups,
            "ts": [float(t) for t in self.ts],
            "conditions": {
                c: {
                    "loss_barrier": self.loss[c].tolist(),
                    "acc_barrier": self.acc[c].tolist(),
                    "loss": self.curves[c]["loss"].tolist(),
                    "acc": self.curves[c]["acc"].tolist(),
                }
                for c in self.loss
            },
        }


def layer_names(variables: Mapping) -> list[str]:
    """The top-level modules of ``variables["params"]``, by the numbers in their names
    (``bn0, conv0, bn1, conv1, …``; names without a number, such as the classifier, last)."""

    def key(name: str):
        numbers = tuple(int(n) for n in re.findall(r"\d+", name))
        return (0, numbers, name) if numbers else (1, (), name)

    return sorted(variables["params"], key=key)


def group_masks(variables: Mapping, groups: Sequence[str]) -> PyTree:
    """0/1 masks ``[G]`` per leaf: leaf ``(collection, name, ...)`` belongs to group
    ``name``. Raises InputError for a group that names no module."""
    flat = traverse_util.flatten_dict(dict(variables))
    known = {key[1] for key in flat if len(key) > 1}
    missing = [g for g in groups if g not in known]
    if missing:
        raise InputError(
            f"no module named {', '.join(map(repr, missing))} in the variables; "
            f"modules: {', '.join(sorted(known))}"
        )
    index = {g: i for i, g in enumerate(groups)}
    masks = {}
    for key in flat:
        mask = np.zeros(len(groups), np.float32)
        if len(key) > 1 and key[1] in index:
            mask[index[key[1]]] = 1.0
        masks[key] = jnp.asarray(mask)
    return traverse_util.unflatten_dict(masks)


@accepts_nnx(also=("b",))
def layerwise_barriers(
    apply_fn: Callable,
    a: PyTree,
    b: PyTree,
    eval_set: Dataset,
    *,
    groups: Optional[Sequence[str]] = None,
    ts=None,
    conditions: Sequence[str] = CONDITIONS,
    **evaluator: Any,
) -> LayerwiseResult:
    """The barrier of interpolating each group alone from ``a`` to ``b`` (the rest at ``a``).

    An ``nnx.Module`` may stand for ``(apply_fn, a)``, another for ``b``
    (:mod:`~mmc_jax.models.nnx_bridge`).

    Args:
      apply_fn: ``module.apply`` of the two models' common architecture.
      a, b: variables (``{"params", "batch_stats"}``) of one structure.
      eval_set: clean evaluation images.
      groups: module names (default: every top-level module of ``a["params"]``).
      ts: points of each line (default ``paths.grid(11)``, from 0 to 1).
      conditions: which of :data:`mmc_jax.data.CONDITIONS`.
      **evaluator: passed to :func:`mmc_jax.connectivity.path_eval.evaluate_path` (``bn``,
        ``bn_set``, ``bn_batches``, ``batch_size``, ``key``, ...).

    Returns:
      A :class:`LayerwiseResult`; group g's entry equals the barrier of
      ``evaluate_path(apply_fn, paths.linear(a, a with g's variables from b), ts, ...)``.
    """
    paths.require_same_architecture([a, b], "the two models")
    groups = layer_names(a) if groups is None else list(groups)
    if not groups:
        raise InputError("layerwise barriers need at least one group")
    ts = paths.check_grid(paths.grid(11) if ts is None else ts)
    lines = LayerLines(dict(a), dict(b), group_masks(a, groups))
    points = np.asarray([(g, t) for g in range(len(groups)) for t in ts], np.float32)
    result = path_eval.evaluate_path(
        apply_fn, lines, points, eval_set, conditions=conditions, **evaluator
    )
    k = len(ts)
    loss, acc, curves = {}, {}, {}
    for c, m in result.metrics.items():
        curves[c] = {name: m[name].reshape(len(groups), k) for name in ("loss", "acc")}
        loss[c] = np.asarray([barrier.loss_barrier(ts, v) for v in curves[c]["loss"]])
        acc[c] = np.asarray([barrier.accuracy_barrier(ts, v) for v in curves[c]["acc"]])
    return LayerwiseResult(groups, ts.astype(np.float64), loss, acc, curves)


__all__ = ["LayerLines", "LayerwiseResult", "group_masks", "layer_names", "layerwise_barriers"]
