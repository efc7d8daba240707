"""Paths between models in parameter space, over any PyTree of variables.

A path is a weighted sum of control points, ``path(t) = Σ_j w_j(t) θ_j``, with ``t`` in
[0, 1], ``path(0) = a`` and ``path(1) = b``:

* :func:`linear` — ``(1 - t) a + t b`` (linear mode connectivity);
* :func:`bezier` — the quadratic Bezier curve ``(1 - t)² a + 2t(1 - t) c + t² b`` through a
  trained control point ``c`` (Garipov et al. 2018; the paper's "quadratic" path);
* :func:`bezier_curve` — a Bezier curve of any degree (Bernstein weights);
* :func:`polygonal_chain` — straight segments through the control points, equally spaced in t.

Everything is pure and jittable in ``t`` and vmappable over ``t``; params and batch_stats are
interpolated alike (BatchNorm policies along a path are the evaluator's business).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mmc_jax.runtime.errors import InputError

PyTree = Any


def _stack(points: Sequence[PyTree]) -> PyTree:
    structures = {jax.tree.structure(p) for p in points}
    if len(structures) != 1:
        raise InputError("path control points must have the same PyTree structure")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *points)


class Path(struct.PyTreeNode):
    """A path through ``n`` control points stacked along a leading axis of every leaf.

    Attributes:
      points: PyTree whose leaves have shape ``[n, ...]``.
      kind: ``"bezier"`` (Bernstein weights) or ``"chain"`` (piecewise linear).
    """

    points: PyTree
    kind: str = struct.field(pytree_node=False, default="bezier")

    @property
    def num_points(self) -> int:
        """Number of control points, endpoints included."""
        return jax.tree.leaves(self.points)[0].shape[0]

    def weights(self, t) -> jax.Array:
        """Weight ``w_j(t)`` of each control point, shape ``[n]``; they sum to 1."""
        n = self.num_points
        t = jnp.asarray(t, jnp.float32)
        j = jnp.arange(n, dtype=jnp.float32)
        if self.kind == "chain":
            return jnp.maximum(0.0, 1.0 - jnp.abs(t * (n - 1) - j))
        binom = jnp.asarray([math.comb(n - 1, k) for k in range(n)], jnp.float32)
        return binom * t**j * (1.0 - t) ** (n - 1 - j)

    def __call__(self, t) -> PyTree:
        """The point of the path at ``t`` (a PyTree shaped like one control point)."""
        w = self.weights(t)
        return jax.tree.map(
            lambda x: jnp.tensordot(w, x.astype(jnp.float32), axes=1).astype(x.dtype), self.points
        )

    def anchors(self) -> PyTree:
        """The control points, stacked: ``path(t) = Σ_j weights(t)_j anchors_j``."""
        return self.points

    def endpoints(self) -> tuple[PyTree, PyTree]:
        """``(path(0), path(1))`` without arithmetic."""
        return (
            jax.tree.map(lambda x: x[0], self.points),
            jax.tree.map(lambda x: x[-1], self.points),
        )


def bezier_curve(points: Sequence[PyTree]) -> Path:
    """Bezier curve through ``points[0]`` (t = 0) and ``points[-1]`` (t = 1)."""
    if len(points) < 2:
        raise InputError("a path needs at least two points")
    return Path(_stack(points), "bezier")


def linear(a: PyTree, b: PyTree) -> Path:
    """Straight line ``(1 - t) a + t b``."""
    return bezier_curve([a, b])


def bezier(a: PyTree, control: PyTree, b: PyTree) -> Path:
    """Quadratic Bezier curve ``(1 - t)² a + 2t(1 - t) control + t² b``."""
    return bezier_curve([a, control, b])


def polygonal_chain(points: Sequence[PyTree]) -> Path:
    """Straight segments through ``points``, the j-th reached at ``t = j / (n - 1)``."""
    if len(points) < 2:
        raise InputError("a path needs at least two points")
    return Path(_stack(points), "chain")


def require_same_architecture(models: Sequence[PyTree], what: str) -> None:
    """Raises InputError unless the models' variables share structure and shapes; ``what``
    names them in the message (e.g. ``"the two models"``)."""
    if (
        len({jax.tree.structure(m) for m in models}) != 1
        or len({tuple(jnp.shape(x) for x in jax.tree.leaves(m)) for m in models}) != 1
    ):
        raise InputError(
            f"{what} do not share one architecture (their variables differ in structure or shapes)"
        )


def check_grid(ts) -> np.ndarray:
    """``ts`` as a float32 array, checked to be a 1-d grid from 0 to 1 of ≥ 2 points."""
    ts = np.asarray(ts, np.float32)
    if ts.ndim != 1 or len(ts) < 2 or ts[0] != 0.0 or ts[-1] != 1.0:
        raise InputError("ts must be a 1-d grid from 0 to 1 with at least two points")
    return ts


def grid(num_points: int = 11) -> jax.Array:
    """``num_points`` equally spaced values of t from 0 to 1 (the paper's 11 by default)."""
    if num_points < 2:
        raise InputError(f"a path grid needs at least 2 points, got {num_points}")
    return jnp.linspace(0.0, 1.0, num_points)
