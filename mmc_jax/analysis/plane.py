"""Loss and accuracy over the 2-D plane through three models (Garipov et al. 2018's
``plane.py``), on every counterfactual condition, as one batch of path points.

The plane through ``a``, ``b`` and ``c`` has the orthonormal basis (inner products over the
parameters) ``û = (b − a)/|b − a|`` and ``v̂``, the part of ``c − a`` orthogonal to ``û``,
normalized; the point at coordinates ``(x, y)`` is ``a + x û + y v̂`` (BatchNorm statistics,
stored with the variables, move along with the same coefficients and are then settled by
the evaluator's policy). ``a`` sits at ``(0, 0)``, ``b`` at ``(|b − a|, 0)``, ``c`` above
the x-axis. A G×G grid covering the three models, and the three models' own coordinates,
are evaluated in one compiled call. Through two models and the trained control point of a
quadratic curve between them (dnn-mode-connectivity's ``plane.py``), the whole curve lies in
the plane (:func:`bezier_coords` draws it in).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mmc_jax import paths
from mmc_jax.connectivity import path_eval
from mmc_jax.data import CONDITIONS, Dataset
from mmc_jax.runtime.errors import InputError

PyTree = Any


class PlanePoints(struct.PyTreeNode):
    """The plane ``origin + x·u + y·v``; a point is ``t = (x, y)``.

    Attributes:
      origin, u, v: the origin and the orthonormal directions (variables-shaped).
      coords: ``[3, 2]`` coordinates of the three models the plane goes through.
    """

    origin: PyTree
    u: PyTree
    v: PyTree
    coords: jax.Array

    def anchors(self) -> PyTree:
        """The three models, stacked (see :meth:`weights`)."""
        return jax.vmap(self)(jnp.asarray(self.coords, jnp.float32))

    def weights(self, t) -> jax.Array:
        """Barycentric weights ``[3]`` of ``t = (x, y)`` on the three models (negative
        outside their triangle)."""
        t = jnp.asarray(t, jnp.float32)
        corners = jnp.concatenate([jnp.ones((1, 3)), jnp.asarray(self.coords, jnp.float32).T])
        return jnp.linalg.solve(corners, jnp.concatenate([jnp.ones(1), t]))

    def __call__(self, t) -> PyTree:
        t = jnp.asarray(t, jnp.float32)
        return jax.tree.map(
            lambda o, u, v: (o.astype(jnp.float32) + t[0] * u + t[1] * v).astype(o.dtype),
            self.origin,
            self.u,
            self.v,
        )

    def endpoints(self) -> tuple[PyTree, PyTree]:
        """``(origin, origin)`` (what the evaluator reads BatchNorm's momentum off)."""
        return self.origin, self.origin


def _params_dot(x: PyTree, y: PyTree) -> float:
    return float(
        sum(
            jnp.vdot(p.astype(jnp.float32), q.astype(jnp.float32))
            for p, q in zip(jax.tree.leaves(x["params"]), jax.tree.leaves(y["params"]))
        )
    )


def basis(a: PyTree, b: PyTree, c: PyTree) -> tuple[PlanePoints, np.ndarray]:
    """The plane through three models and their coordinates ``[3, 2]`` in it.

    Raises:
      InputError: models of different structures, or three models on one line.
    """
    paths.require_same_architecture([a, b, c], "the three models")
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    u = jax.tree.map(lambda p, q: f32(q) - f32(p), a, b)
    w = jax.tree.map(lambda p, q: f32(q) - f32(p), a, c)
    u_norm = _params_dot(u, u) ** 0.5
    if u_norm == 0:
        raise InputError("the first two models are equal; a plane needs three distinct models")
    u = jax.tree.map(lambda x: x / u_norm, u)
    along = _params_dot(w, u)
    v = jax.tree.map(lambda x, y: x - along * y, w, u)
    v_norm = _params_dot(v, v) ** 0.5
    if v_norm <= 1e-6 * max(u_norm, 1.0):
        raise InputError(
            "the three models lie on one line; a plane needs three models not on a line"
        )
    v = jax.tree.map(lambda x: x / v_norm, v)
    coords = np.asarray([[0.0, 0.0], [u_norm, 0.0], [along, v_norm]])
    return PlanePoints(dict(a), u, v, jnp.asarray(coords, jnp.float32)), coords


def grid(coords: np.ndarray, size: int, margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``size`` equally spaced x and y values covering ``coords`` with ``margin`` × their
    extent on every side."""
    if size < 2:
        raise InputError(f"a plane grid needs at least 2 points per side, got {size}")
    low, high = coords.min(0), coords.max(0)
    pad = margin * (high - low)
    return (
        np.linspace(low[0] - pad[0], high[0] + pad[0], size),
        np.linspace(low[1] - pad[1], high[1] + pad[1], size),
    )


def bezier_coords(
    start: np.ndarray, control: np.ndarray, end: np.ndarray, num: int = 61
) -> np.ndarray:
    """``[num, 2]`` plane coordinates of the quadratic Bezier curve
    ``(1 − t)² start + 2t(1 − t) control + t² end`` at ``num`` equally spaced t: the plane
    through its three control points contains the whole curve (``paths.bezier``)."""
    t = np.linspace(0.0, 1.0, num)[:, None]
    return (
        (1 - t) ** 2 * np.asarray(start)
        + 2 * t * (1 - t) * np.asarray(control)
        + t**2 * np.asarray(end)
    )


@dataclasses.dataclass
class PlaneResult:
    """``metrics[c]["loss" | "acc"]`` are ``[G, G]`` arrays over ``(xs[i], ys[j])``;
    ``models[c]`` the same metrics at the three models' own coordinates ``coords``."""

    names: list[str]
    coords: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    metrics: dict[str, dict[str, np.ndarray]]
    models: dict[str, dict[str, np.ndarray]]
    #: ``[K, 2]`` coordinates of a curve to draw in (e.g. :func:`bezier_coords`), or None.
    curve: Optional[np.ndarray] = None

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` layout."""
        return {
            "names": self.names,
            "coords": self.coords.tolist(),
            "xs": self.xs.tolist(),
            "ys": self.ys.tolist(),
            "curve": None if self.curve is None else self.curve.tolist(),
            "conditions": {
                c: {
                    "loss": m["loss"].tolist(),
                    "acc": m["acc"].tolist(),
                    "models": {k: v.tolist() for k, v in self.models[c].items()},
                }
                for c, m in self.metrics.items()
            },
        }


def evaluate_plane(
    apply_fn: Callable,
    models: dict[str, PyTree],
    eval_set: Dataset,
    *,
    size: int = 21,
    margin: float = 0.2,
    conditions: Sequence[str] = CONDITIONS,
    **evaluator: Any,
) -> Optional[PlaneResult]:
    """Loss and accuracy on a ``size``×``size`` grid of the plane through three models.

    Args:
      apply_fn: ``module.apply`` of the models' common architecture.
      models: three named models (insertion order: origin, x-axis, third).
      eval_set: clean evaluation images.
      size: grid points per side (G; G² points in one evaluation).
      margin: how far the grid extends beyond the models, as a fraction of their extent.
      conditions: which of :data:`mmc_jax.data.CONDITIONS`.
      **evaluator: passed to :func:`mmc_jax.connectivity.path_eval.evaluate_path`.

    Returns:
      A :class:`PlaneResult`; its values at the three models equal their own evaluation
      under the same BatchNorm policy. None with ``shard`` (only a share of the saved parts
      was evaluated).
    """
    names = list(models)
    if len(names) != 3:
        raise InputError(f"a plane goes through exactly three models, got {len(names)}")
    points, coords = basis(*(models[n] for n in names))
    xs, ys = grid(coords, size, margin)
    xy = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    result = path_eval.evaluate_path(
        apply_fn,
        points,
        np.concatenate([xy, coords]).astype(np.float32),
        eval_set,
        conditions=conditions,
        **evaluator,
    )
    if result is None:  # a shard of the parts (``shard``): the joining call builds the result
        return None
    metrics, at_models = {}, {}
    for c, m in result.metrics.items():
        metrics[c] = {k: m[k][: size * size].reshape(size, size) for k in ("loss", "acc")}
        at_models[c] = {k: m[k][size * size :] for k in ("loss", "acc")}
    return PlaneResult(names, coords, xs, ys, metrics, at_models)


__all__ = ["PlanePoints", "PlaneResult", "basis", "bezier_coords", "evaluate_plane", "grid"]
