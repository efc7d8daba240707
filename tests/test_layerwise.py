"""Per-layer barriers: each group's partial line equals the straight line to A with that
group taken from B, a group whose variables are equal in A and B has no barrier, and bad
groups are one-line errors."""

import jax
import numpy as np
import pytest

from mmc_jax import InputError, models, paths
from mmc_jax.analysis import layerwise
from mmc_jax.connectivity import path_eval

KW = dict(conditions=("nocue", "cue"), bn="recompute", bn_batches=2, batch_size=30)


@pytest.fixture(scope="module")
def setup(three_tiny_models):
    model, variables, train, test = three_tiny_models
    return model, variables["a"], variables["b"], train, test


def _with_group(a, b, group):
    """``a`` with module ``group``'s params and batch_stats taken from ``b``."""
    out = {col: dict(a[col]) for col in a}
    for col in out:
        if group in b[col]:
            out[col][group] = b[col][group]
    return out


@pytest.mark.parametrize("bn", ["recompute", "repair"])
def test_each_group_equals_the_line_to_a_with_that_group_from_b(setup, bn):
    """Also under REPAIR, whose targets come from each partial line's own two models."""
    model, a, b, train, test = setup
    ts = paths.grid(3)
    groups = ["conv1", "bn2", "classifier"]
    kw = {**KW, "bn": bn}
    result = layerwise.layerwise_barriers(
        model.apply, a, b, test, groups=groups, ts=ts, bn_set=train, **kw
    )
    assert result.groups == groups
    for g, group in enumerate(groups):
        single = path_eval.evaluate_path(
            model.apply, paths.linear(a, _with_group(a, b, group)), ts, test, bn_set=train, **kw
        )
        for c in KW["conditions"]:
            np.testing.assert_allclose(
                result.curves[c]["loss"][g], single.metrics[c]["loss"], atol=1e-4
            )
            assert result.loss[c][g] == pytest.approx(single.barriers(c)["loss"], abs=1e-4)
            assert result.acc[c][g] == pytest.approx(single.barriers(c)["acc"], abs=1e-6)


def test_a_layer_equal_in_both_models_has_no_barrier(setup):
    model, a, b, train, test = setup
    b_same_conv0 = _with_group(b, a, "conv0")  # b, but conv0 equal to a's
    result = layerwise.layerwise_barriers(
        model.apply, a, b_same_conv0, test, ts=paths.grid(3), bn_set=train, **KW
    )
    assert result.groups == layerwise.layer_names(a)
    g = result.groups.index("conv0")
    for c in KW["conditions"]:
        np.testing.assert_allclose(
            result.curves[c]["loss"][g], result.curves[c]["loss"][g][0], atol=1e-5
        )
        assert result.loss[c][g] == pytest.approx(0.0, abs=1e-5)
        assert result.acc[c][g] == pytest.approx(0.0, abs=1e-6)
    assert set(result.to_json()["conditions"]["cue"]) == {
        "loss_barrier",
        "acc_barrier",
        "loss",
        "acc",
    }


def test_bad_groups_and_models(setup):
    model, a, b, train, test = setup
    with pytest.raises(InputError, match="no module named 'conv9'"):
        layerwise.layerwise_barriers(model.apply, a, b, test, groups=["conv9"], bn_set=train)
    wide = models.init(models.create("cnn4", 10, width=0.5), jax.random.key(0), (32, 32, 3))
    with pytest.raises(InputError, match="do not share one architecture"):
        layerwise.layerwise_barriers(model.apply, a, wide, test, bn_set=train)
