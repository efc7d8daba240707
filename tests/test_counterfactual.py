"""The four counterfactual conditions: labels kept, cue semantics, jit equivalence."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, data


def _batch(n=64, seed=0, h=32):
    key = jax.random.key(seed)
    x = jax.random.uniform(key, (n, h, 32, 3), minval=-0.99, maxval=0.99)
    y = jnp.arange(n) % 10
    return x, y


def test_nocue_is_identity_and_cue_stamps_label_box():
    x, y = _batch()
    cue = data.box_cue(10)
    chex.assert_trees_all_equal(data.counterfactual(cue, "nocue", x, y, jax.random.key(0)), x)
    chex.assert_trees_all_equal(
        data.counterfactual(cue, "cue", x, y, jax.random.key(0)), cue.add(x, y)
    )


def test_randimg_keeps_cue_of_true_label_on_other_images():
    x, y = _batch()
    cue = data.box_cue(10)
    out = np.asarray(data.counterfactual(cue, "randimg", x, y, jax.random.key(3)))
    xs = np.asarray(x)
    # Every output is some batch image stamped with the *original* label's box.
    cleaned_matches = 0
    for i in range(len(xs)):
        stamped = np.asarray(cue.add(x, jnp.full((len(xs),), y[i])))
        j = np.flatnonzero((stamped == out[i]).all(axis=(1, 2, 3)))
        assert j.size == 1
        cleaned_matches += int(j[0] != i)
    assert cleaned_matches > len(xs) // 2  # images really moved
    # The images used are a permutation of the batch.
    perm = jax.random.permutation(jax.random.key(3), len(xs))
    chex.assert_trees_all_equal(out, np.asarray(cue.add(x[perm], y)))


def test_randcue_keeps_image_outside_box_and_is_seeded():
    x, y = _batch()
    cue = data.box_cue(10)
    a = data.counterfactual(cue, "randcue", x, y, jax.random.key(5))
    b = data.counterfactual(cue, "randcue", x, y, jax.random.key(5))
    c = data.counterfactual(cue, "randcue", x, y, jax.random.key(6))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a, c)
    changed = np.asarray((a != x).any(-1)).sum(axis=(1, 2))
    assert set(changed.tolist()) <= {0, 9}  # at most one 3x3 box per image


@pytest.mark.parametrize("condition", data.CONDITIONS)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_jit_matches_eager(condition, num_classes):
    x, y = _batch(32)
    y = (y * 7) % num_classes
    cue = data.box_cue(num_classes)
    key = jax.random.key(11)
    eager = data.counterfactual(cue, condition, x, y, key)
    jitted = jax.jit(data.counterfactual, static_argnums=(0, 1))(cue, condition, x, y, key)
    chex.assert_trees_all_equal(eager, jitted)
    chex.assert_shape(jitted, x.shape)


@pytest.mark.parametrize("condition", data.CONDITIONS)
def test_domino_conditions(condition):
    x, y = _batch(16, h=64)
    cue = data.DominoCue(rows=32)
    key = jax.random.key(2)
    out = np.asarray(jax.jit(data.counterfactual, static_argnums=(0, 1))(cue, condition, x, y, key))
    top, bottom = np.asarray(x[:, :32]), np.asarray(x[:, 32:])
    perm = np.asarray(jax.random.permutation(key, 16))
    expected_top = {
        "nocue": np.zeros_like(top),
        "cue": (top + 1) / 2,
        "randcue": (top[perm] + 1) / 2,
        "randimg": (top + 1) / 2,
    }[condition]
    expected_bottom = bottom[perm] if condition == "randimg" else bottom
    np.testing.assert_allclose(out[:, :32], expected_top, atol=1e-7)
    np.testing.assert_array_equal(out[:, 32:], expected_bottom)


def test_unknown_condition_is_a_clear_error():
    x, y = _batch(4)
    with pytest.raises(InputError, match="unknown condition 'rand'.*nocue, cue, randcue"):
        data.counterfactual(data.box_cue(10), "rand", x, y, jax.random.key(0))


@pytest.mark.parametrize("condition", data.CONDITIONS)
@pytest.mark.parametrize("domino", [False, True])
def test_a_cue_mask_stamps_only_its_samples_and_keeps_the_draws(condition, domino):
    # The paper code's partly cued test sets: a sample outside the mask is what the
    # condition gives without any cue (randimg: the same random image, cue-free).
    x, y = _batch(24, h=64 if domino else 32)
    cue = data.DominoCue(rows=32) if domino else data.box_cue(10)
    key, pool = jax.random.key(4), x[::-1]
    mask = np.arange(24) % 3 != 0
    fn = jax.jit(data.counterfactual, static_argnums=(0, 1))
    full = np.asarray(fn(cue, condition, x, y, key, pool))
    masked = np.asarray(fn(cue, condition, x, y, key, pool, jnp.asarray(mask)))
    np.testing.assert_array_equal(masked[mask], full[mask])
    base = x
    if condition == "randimg":
        base = data.cues.draw_images(pool, key, 24)
    np.testing.assert_array_equal(masked[~mask], np.asarray(cue.remove(base))[~mask])
    chex.assert_trees_all_equal(fn(cue, condition, x, y, key, pool, jnp.ones(24, bool)), full)
