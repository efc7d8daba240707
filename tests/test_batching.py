"""Epoch iteration: deterministic per (seed, epoch), resumable, complete, prefetched."""

import jax
import numpy as np
import pytest

from mmc_jax import InputError, data


def _iterator(**kwargs):
    arrays = {"x": np.arange(103) * 10, "y": np.arange(103)}
    return data.EpochIterator(arrays, batch_size=kwargs.pop("batch_size", 10), **kwargs)


def test_epoch_is_a_permutation_and_pairs_stay_aligned():
    it = _iterator(seed=3)
    batches = list(it.epoch(0))
    assert len(batches) == it.steps_per_epoch == 10
    seen = np.concatenate([b["y"] for b in batches])
    assert len(np.unique(seen)) == 100  # no repeats; 3 dropped as the remainder
    for b in batches:
        np.testing.assert_array_equal(b["x"], b["y"] * 10)


def test_same_seed_same_order_new_epoch_new_order():
    a = [b["y"] for b in _iterator(seed=3).epoch(1)]
    b = [b["y"] for b in _iterator(seed=3).epoch(1)]
    c = [b["y"] for b in _iterator(seed=3).epoch(2)]
    d = [b["y"] for b in _iterator(seed=4).epoch(1)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))
    assert not np.array_equal(np.stack(a), np.stack(d))


def test_resume_from_step_gives_the_remaining_batches():
    it = _iterator(seed=9)
    full = [b["y"] for b in it.epoch(5)]
    resumed = [b["y"] for b in it.epoch(5, start_step=4)]
    np.testing.assert_array_equal(np.stack(full[4:]), np.stack(resumed))


def test_keep_remainder_and_no_shuffle():
    it = _iterator(batch_size=25, shuffle=False, drop_remainder=False)
    batches = list(it.epoch(0))
    assert [len(b["y"]) for b in batches] == [25, 25, 25, 25, 3]
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in batches]), np.arange(103))


def test_prefetch_keeps_order_and_puts_on_device():
    it = _iterator(seed=1)
    expected = [b["y"] for b in it.epoch(0)]
    got = list(data.prefetch_to_device(it.epoch(0), size=3))
    assert all(isinstance(b["y"], jax.Array) for b in got)
    np.testing.assert_array_equal(np.stack([np.asarray(b["y"]) for b in got]), np.stack(expected))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"batch_size": 500}, "exceeds the 103 available samples"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        _iterator(**kwargs)


def test_mismatched_lengths():
    with pytest.raises(InputError, match="share their first dimension"):
        data.EpochIterator({"x": np.zeros(3), "y": np.zeros(4)}, batch_size=1)
