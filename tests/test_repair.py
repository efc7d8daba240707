"""REPAIR as a path-evaluator policy: a model interpolated with itself is unchanged, the
repaired midpoint of two models has exactly the target activation statistics (on a model
without normalisation, written only here), and every path-like object names the anchor
models its points are made of."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import data, models, paths
from mmc_jax.analysis import layerwise, plane, similarity
from mmc_jax.connectivity import path_eval, repair


class PlainNet(nn.Module):
    """Two biased convolutions, global pooling, a hidden dense layer, the logits: no
    normalisation anywhere."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="c0")(x))
        x = nn.relu(nn.Conv(12, (3, 3), strides=2, name="c1")(x))
        x = nn.relu(nn.Dense(16, name="d0")(x.mean((1, 2))))
        return nn.Dense(self.num_classes, name="out")(x)


@pytest.fixture(scope="module")
def plain():
    model = PlainNet()

    def init(seed):
        return models.init(model, jax.random.key(seed), (32, 32, 3))

    return model, init(0), init(1)


@pytest.fixture(scope="module")
def images():
    train = data.load("shapes10", "train", num_examples=120)
    return data.normalize(jnp.asarray(train.images[:120])).reshape(2, 60, 32, 32, 3)


KW = dict(conditions=("nocue", "randimg"), bn_batches=2, batch_size=30)


@pytest.mark.parametrize("name", ["cnn4", "mlp", "plain"])
def test_a_model_interpolated_with_itself_is_unchanged(three_tiny_models, plain, name):
    """BatchNorm (cnn4), LayerNorm (mlp) and no normalisation: the targets are the model's
    own statistics, so every correction is the identity."""
    _, _, train, test = three_tiny_models
    if name == "plain":
        model, variables, _ = plain
    else:
        model = models.create(name, 10, width=0.25)
        variables = models.init(model, jax.random.key(3), (32, 32, 3))
    path = paths.linear(variables, variables)
    plain_eval = path_eval.evaluate_path(
        model.apply, path, paths.grid(3), test, bn="interpolate", **KW
    )
    repaired = path_eval.evaluate_path(
        model.apply, path, paths.grid(3), test, bn="repair", bn_set=train, **KW
    )
    for c in KW["conditions"]:
        for k in ("loss", "acc"):
            np.testing.assert_allclose(repaired.metrics[c][k], plain_eval.metrics[c][k], atol=2e-5)


def test_repair_restores_the_target_statistics_of_a_model_without_normalisation(plain, images):
    """Over several batches, at every site: each site is measured with the sites before it
    already corrected, so the repaired midpoint has the targets' statistics exactly."""
    model, a, b = plain
    anchors = jax.tree.map(lambda *x: jnp.stack(x), a, b)
    stats = repair.anchor_statistics(model.apply, anchors, images)
    assert set(stats) == {"c0", "c1", "d0"}  # the logits are left alone
    weights = jnp.asarray([0.7, 0.3])
    mid = paths.linear(a, b)(0.3)
    target = repair.interpolate(stats, weights)
    before = repair.measure(model.apply, mid, images)
    fixed = repair.repair(model.apply, mid, images, stats, weights)
    after = repair.measure(fixed, mid, images)
    for site in stats:
        np.testing.assert_allclose(after[site]["mean"], target[site]["mean"], atol=2e-5)
        np.testing.assert_allclose(after[site]["std"], target[site]["std"], rtol=2e-4)
    # What it repairs: the interpolated network's hidden activations have collapsed.
    collapse = [float(jnp.mean(before[s]["std"] / target[s]["std"])) for s in ("c1", "d0")]
    assert max(collapse) < 0.95, collapse
    # The statistics are those of all images together, not an average over batches.
    whole = repair.measure(model.apply, mid, images.reshape(1, -1, 32, 32, 3))
    np.testing.assert_allclose(before["c0"]["std"], whole["c0"]["std"], rtol=1e-4)


def test_every_path_like_object_is_the_weighted_sum_of_its_anchors(three_tiny_models):
    _, variables, _, _ = three_tiny_models
    a, b, c = variables["a"], variables["b"], variables["c"]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), a, b, c)
    cases = [
        (paths.bezier(a, c, b), [0.0, 0.3, 1.0]),
        (paths.polygonal_chain([a, c, b]), [0.25, 0.7]),
        (similarity.PairLines(stacked), [(0.0, 2.0, 0.4), (1.0, 2.0, 1.0)]),
        (
            layerwise.LayerLines(a, b, layerwise.group_masks(a, layerwise.layer_names(a))),
            [(0.0, 0.5), (3.0, 0.8)],
        ),
        (plane.basis(a, b, c)[0], [(0.0, 0.0), (1.5, -2.0), (30.0, 12.0)]),
    ]
    for path, ts in cases:

        @jax.jit
        def both(path, t):
            w = path.weights(t)
            return w, jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1), path.anchors()), path(t)

        for t in ts:
            w, mixed, point = both(path, jnp.asarray(t, jnp.float32))
            assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-4), mixed, point)


def test_at_the_three_models_the_repaired_plane_is_each_models_own_evaluation(three_tiny_models):
    """At an anchor the target is that model's own statistics: no correction."""
    model, variables, train, test = three_tiny_models
    result = plane.evaluate_plane(
        model.apply, variables, test, size=2, bn="repair", bn_set=train, **KW
    )
    for k, name in enumerate(result.names):
        own = path_eval.evaluate_path(
            model.apply,
            paths.linear(variables[name], variables[name]),
            paths.grid(2),
            test,
            bn="interpolate",
            **KW,
        )
        for c in KW["conditions"]:
            assert result.models[c]["loss"][k] == pytest.approx(own.metrics[c]["loss"][0], abs=2e-4)


def test_repair_needs_a_path_that_names_its_anchors(three_tiny_models):
    model, variables, train, test = three_tiny_models

    class Bare:
        def __init__(self, path):
            self.path = path

        def __call__(self, t):
            return self.path(t)

        def endpoints(self):
            return self.path.endpoints()

    with pytest.raises(Exception, match="anchors"):
        path_eval.evaluate_path(
            model.apply,
            Bare(paths.linear(variables["a"], variables["b"])),
            paths.grid(2),
            test,
            bn="repair",
            bn_set=train,
            **KW,
        )
