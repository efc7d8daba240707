"""The plane through three models: the basis places them where they are, the evaluated
values at the three models equal their own evaluations, and bad input is one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, paths
from mmc_jax.analysis import plane
from mmc_jax.connectivity import path_eval

KW = dict(conditions=("nocue", "cue"), bn="recompute", bn_batches=2, batch_size=30)


@pytest.fixture(scope="module")
def setup(three_tiny_models):
    return three_tiny_models


def test_basis_reproduces_the_three_models(setup):
    _, named, _, _ = setup
    points, coords = plane.basis(named["a"], named["b"], named["c"])
    assert coords[0].tolist() == [0.0, 0.0] and coords[1, 1] == 0.0 and coords[2, 1] > 0
    for name, xy in zip("abc", coords):
        got = points(xy)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(named[name])):
            np.testing.assert_allclose(x, y, atol=2e-5)


def test_values_at_the_models_equal_their_own_evaluations(setup):
    model, named, train, test = setup
    result = plane.evaluate_plane(model.apply, named, test, size=3, bn_set=train, **KW)
    assert result.metrics["cue"]["loss"].shape == (3, 3)
    assert result.xs[0] < 0 < result.coords[1, 0] < result.xs[-1]
    for i, name in enumerate("abc"):
        own = path_eval.evaluate_path(
            model.apply,
            paths.linear(named[name], named[name]),
            [0.0, 1.0],
            test,
            bn_set=train,
            **KW,
        )
        for c in KW["conditions"]:
            assert result.models[c]["loss"][i] == pytest.approx(own.metrics[c]["loss"][0], abs=2e-4)
            assert result.models[c]["acc"][i] == pytest.approx(own.metrics[c]["acc"][0], abs=1e-6)
    assert set(result.to_json()["conditions"]["cue"]) == {"loss", "acc", "models"}


def test_bad_input(setup):
    model, named, train, test = setup
    with pytest.raises(InputError, match="exactly three models"):
        plane.evaluate_plane(model.apply, {"a": named["a"], "b": named["b"]}, test, bn_set=train)
    with pytest.raises(InputError, match="at least 2 points"):
        plane.evaluate_plane(model.apply, named, test, size=1, bn_set=train)
    mid = jax.tree.map(lambda x, y: (x + y) / 2, named["a"], named["b"])
    with pytest.raises(InputError, match="on one line"):
        plane.basis(named["a"], named["b"], mid)
    with pytest.raises(InputError, match="distinct"):
        plane.basis(named["a"], named["a"], named["c"])


def test_a_quadratic_curve_lies_in_the_plane_of_its_control_points(setup):
    """``bezier_coords`` in the plane through (a, b, control) are the curve's models."""
    _, variables, _, _ = setup
    a, b, control = variables["a"], variables["b"], variables["c"]
    points, coords = plane.basis(a, b, control)
    curve = plane.bezier_coords(coords[0], coords[2], coords[1], num=5)
    path = paths.bezier(a, control, b)
    for t, xy in zip(np.linspace(0, 1, 5), curve):
        jax.tree.map(
            lambda x, y: np.testing.assert_allclose(x, y, atol=2e-4),
            points(jnp.asarray(xy, jnp.float32)),
            path(t),
        )
