"""Pairwise linear-path barriers of N models: symmetric with a zero diagonal, every entry
equal to the single-path evaluation, clustering that groups what is connected."""

import jax
import numpy as np
import pytest

from mmc_jax import InputError, models, paths
from mmc_jax.analysis import similarity
from mmc_jax.connectivity import path_eval


@pytest.fixture(scope="module")
def setup(three_tiny_models):
    return three_tiny_models


KW = dict(conditions=("nocue", "cue"), bn="recompute", bn_batches=2, batch_size=30)


def test_matrix_is_symmetric_with_zero_diagonal_and_equals_single_paths(setup):
    model, variables, train, test = setup
    ts = paths.grid(3)
    result = similarity.pairwise_barriers(model.apply, variables, test, ts=ts, bn_set=train, **KW)
    assert result.names == ["a", "b", "c"]
    for c in KW["conditions"]:
        for matrix in (result.loss[c], result.acc[c]):
            np.testing.assert_array_equal(matrix, matrix.T)
            np.testing.assert_array_equal(np.diag(matrix), 0.0)
        for i, j in ((0, 1), (0, 2), (1, 2)):
            single = path_eval.evaluate_path(
                model.apply,
                paths.linear(variables[result.names[i]], variables[result.names[j]]),
                ts,
                test,
                bn_set=train,
                **KW,
            )
            assert result.loss[c][i, j] == pytest.approx(single.barriers(c)["loss"], abs=1e-4)
            assert result.acc[c][i, j] == pytest.approx(single.barriers(c)["acc"], abs=1e-6)
            np.testing.assert_allclose(
                result.curves[c]["loss"][i, j], single.metrics[c]["loss"], atol=1e-4
            )
            np.testing.assert_allclose(
                result.curves[c]["loss"][j, i], single.metrics[c]["loss"][::-1], atol=1e-4
            )
    json = result.to_json()
    assert json["names"] == ["a", "b", "c"] and set(json["conditions"]) == {"nocue", "cue"}


def test_a_model_and_its_copy_have_no_barrier(setup):
    model, variables, train, test = setup
    named = {"a": variables["a"], "b": variables["b"], "a_copy": variables["a"]}
    result = similarity.pairwise_barriers(
        model.apply, named, test, ts=paths.grid(3), bn_set=train, **KW
    )
    for c in KW["conditions"]:
        assert result.loss[c][0, 2] == pytest.approx(0.0, abs=1e-5)
        assert result.acc[c][0, 2] == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(result.loss[c][1], result.loss[c][:, 1], atol=0)


def test_clusters_and_order_follow_the_barriers():
    """Two groups with small barriers inside and large ones between: two clusters at a
    threshold between the two scales, one at a threshold above both, and the clustering
    order keeps each group contiguous."""
    names = ["p", "q", "r", "s", "t"]
    group = np.array([0, 1, 0, 1, 0])
    rng = np.random.default_rng(0)
    matrix = np.where(group[:, None] == group[None, :], 0.05, 1.0) + rng.uniform(0, 0.02, (5, 5))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 0.0)
    result = similarity.SimilarityResult(
        names, np.linspace(0, 1, 3), {"cue": matrix}, {"cue": matrix / 10}, {}
    )
    labels = result.clusters("cue", threshold=0.5)
    assert labels == [0, 1, 0, 1, 0]
    assert result.clusters("cue", threshold=2.0) == [0] * 5
    order = result.order("cue")
    positions = [order.index(i) for i in range(5)]
    firsts = sorted(positions[i] for i in range(5) if group[i] == 0)
    assert firsts == list(range(firsts[0], firsts[0] + 3))
    assert result.clusters("cue", threshold=0.5, metric="acc") == [0] * 5
    with pytest.raises(InputError, match="was not evaluated"):
        result.order("randimg")


def test_bad_input_is_one_line(setup):
    model, variables, train, test = setup
    with pytest.raises(InputError, match="at least two models"):
        similarity.pairwise_barriers(model.apply, {"a": variables["a"]}, test, bn_set=train)
    wide = models.init(models.create("cnn4", 10, width=0.5), jax.random.key(0), (32, 32, 3))
    with pytest.raises(InputError, match="do not share one architecture"):
        similarity.pairwise_barriers(
            model.apply, {"a": variables["a"], "w": wide}, test, bn_set=train
        )
    with pytest.raises(InputError, match="from 0 to 1"):
        similarity.pairwise_barriers(model.apply, variables, test, ts=[0.2, 1.0], bn_set=train)


def test_permuted_matrix_aligns_each_pair_and_equals_single_permuted_paths(setup):
    """With weight matching, a model and a permuted copy of it have no barrier, and every
    entry is the barrier of the single line to the aligned second model."""
    from mmc_jax import permute

    model, variables, train, test = setup
    a, b = variables["a"], variables["b"]
    spec = permute.spec_for(model, a)
    rng = np.random.default_rng(0)
    shuffled = permute.apply(spec, {p: rng.permutation(n) for p, n in spec.sizes.items()}, a)

    def align(x, y):
        return permute.apply(spec, permute.weight_matching(spec, x, y, jax.random.key(0)), y)

    named = {"a": a, "b": b, "a_shuffled": shuffled}
    plain = similarity.pairwise_barriers(
        model.apply, named, test, ts=paths.grid(3), bn_set=train, **KW
    )
    permuted = similarity.pairwise_barriers(
        model.apply, named, test, ts=paths.grid(3), bn_set=train, align=align, **KW
    )
    for c in KW["conditions"]:
        # Aligned, the line from a to its shuffled copy is a itself all along; unaligned not.
        flat = permuted.curves[c]["loss"][0, 2]
        np.testing.assert_allclose(flat, flat[0], atol=1e-5)
        assert abs(plain.curves[c]["loss"][0, 2][1] - flat[1]) > 1e-3
        assert permuted.loss[c][0, 2] == pytest.approx(0.0, abs=1e-5)
        np.testing.assert_array_equal(permuted.loss[c], permuted.loss[c].T)
        single = path_eval.evaluate_path(
            model.apply,
            paths.linear(b, align(b, shuffled)),
            paths.grid(3),
            test,
            bn_set=train,
            **KW,
        )
        assert permuted.loss[c][1, 2] == pytest.approx(single.barriers(c)["loss"], abs=1e-4)
