"""Paths over PyTrees and barrier metrics: endpoint, formula and known-value checks."""

import chex
import jax
import numpy as np
import pytest

from mmc_jax import InputError, paths
from mmc_jax.connectivity import barrier


def _tree(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "params": {"w": jax.random.normal(k1, (3, 4))},
        "batch_stats": {"mean": jax.random.normal(k2, (4,))},
    }


A, C, B = _tree(0), _tree(1), _tree(2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: paths.linear(A, B),
        lambda: paths.bezier(A, C, B),
        lambda: paths.polygonal_chain([A, C, B]),
        lambda: paths.bezier_curve([A, C, C, B]),
    ],
)
def test_endpoints_are_exact(make):
    path = make()
    chex.assert_trees_all_close(path(0.0), A, atol=1e-6)
    chex.assert_trees_all_close(path(1.0), B, atol=1e-6)
    assert float(path.weights(0.37).sum()) == pytest.approx(1.0)


def test_linear_and_quadratic_formulas():
    t = 0.3
    expected_linear = jax.tree.map(lambda a, b: (1 - t) * a + t * b, A, B)
    chex.assert_trees_all_close(paths.linear(A, B)(t), expected_linear, atol=1e-6)
    expected_quad = jax.tree.map(
        lambda a, c, b: (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b, A, C, B
    )
    chex.assert_trees_all_close(paths.bezier(A, C, B)(t), expected_quad, atol=1e-6)
    # The curve's midpoint is (a + 2c + b) / 4.
    chex.assert_trees_all_close(
        paths.bezier(A, C, B)(0.5),
        jax.tree.map(lambda a, c, b: (a + 2 * c + b) / 4, A, C, B),
        atol=1e-6,
    )


def test_chain_passes_through_control_points_and_is_piecewise_linear():
    chain = paths.polygonal_chain([A, C, B])
    chex.assert_trees_all_close(chain(0.5), C, atol=1e-6)
    chex.assert_trees_all_close(
        chain(0.25), jax.tree.map(lambda a, c: (a + c) / 2, A, C), atol=1e-6
    )


def test_paths_are_jittable_and_vmappable_in_t():
    path = paths.bezier(A, C, B)
    ts = paths.grid(5)
    stacked = jax.jit(jax.vmap(path))(ts)
    for i, t in enumerate(ts):
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], stacked), path(t), atol=1e-6)


def test_bad_paths():
    with pytest.raises(InputError, match="at least two points"):
        paths.bezier_curve([A])
    with pytest.raises(InputError, match="same PyTree structure"):
        paths.linear(A, {"params": A["params"]})
    with pytest.raises(InputError, match="at least 2 points"):
        paths.grid(1)


def test_barriers_on_known_values():
    ts = np.linspace(0, 1, 5)
    losses = [1.0, 2.5, 3.0, 2.0, 0.2]  # chord: 1, .8, .6, .4, .2
    assert barrier.loss_barrier(ts, losses) == pytest.approx(2.4)
    accs = [0.9, 0.5, 0.2, 0.6, 0.7]  # chord: .9, .85, .8, .75, .7
    assert barrier.accuracy_barrier(ts, accs) == pytest.approx(0.6)
    assert barrier.loss_barrier(ts, [1, 0.5, 0.4, 0.3, 0.2]) == pytest.approx(0.0)  # convex
    assert barrier.trapezoid(ts, [1, 1, 1, 1, 1]) == pytest.approx(1.0)
    assert barrier.trapezoid(ts, ts) == pytest.approx(0.5)
