"""Per-class accuracy and worst-group accuracy: known values from a model that always
answers one class, and the multi-seed intervals of the report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import data, metrics
from mmc_jax.reporting import tables


def _always(label: int, num_classes: int = 10):
    def apply_fn(variables, x, train=False):
        del variables, train
        return jnp.zeros((x.shape[0], num_classes)).at[:, label].set(1.0)

    return apply_fn


def test_per_class_accuracy_and_worst_group_of_a_one_class_model():
    test = data.load("shapes10", "test", num_examples=60)
    out = metrics.evaluate(_always(3), {}, test, jax.random.key(0), batch_size=25, per_class=True)
    labels = np.asarray(test.labels)
    for condition in data.CONDITIONS:
        accs = out[condition]["class_acc"]
        assert len(accs) == 10
        for k, acc in enumerate(accs):
            expected = None if not (labels == k).any() else float(k == 3)
            assert acc == expected
        assert out[condition]["acc"] == pytest.approx(np.mean(labels == 3))
    assert metrics.worst_group(out) == {"class_cue": 0.0, "class_condition": 0.0}
    plain = metrics.evaluate(_always(3), {}, test, jax.random.key(0), batch_size=25)
    assert "class_acc" not in plain["nocue"] and metrics.worst_group(plain) == {}


def test_worst_group_takes_the_least_accurate_cell():
    test = {
        "nocue": {"class_acc": [0.9, 0.6, None]},
        "cue": {"class_acc": [1.0, 0.7, 0.8]},
        "randimg": {"class_acc": [0.1, 0.2, 0.3]},
    }
    assert metrics.worst_group(test) == {"class_cue": 0.6, "class_condition": 0.1}


def test_interval_half_widths_over_seeds_leaf_by_leaf():
    seeds = [{"a": 1.0, "b": [1.0, None]}, {"a": 2.0, "b": [3.0, 0.5]}, {"a": 3.0, "b": [2.0, 1]}]
    half = tables.ci_half_widths(seeds)
    assert half["a"] == pytest.approx(tables.mean_ci([1.0, 2.0, 3.0])[1])
    assert half["a"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert half["b"][0] == pytest.approx(half["a"]) and half["b"][1] is None
    mean, std = tables.mean_std(seeds)
    assert mean["b"] == [2.0, None] and std["a"] == pytest.approx(np.std([1, 2, 3]))
