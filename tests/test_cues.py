"""Box and domino cues: exact locations, colours, replacement, proportion selection."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, data
from mmc_jax.data import cues

# Reference §3.1: top-left corner of each grid location on 32x32 images.
CORNERS_32 = {
    0: (0, 0),
    1: (0, 14),
    2: (0, 29),
    3: (14, 0),
    4: (14, 14),
    5: (14, 29),
    6: (29, 0),
    7: (29, 14),
    8: (29, 29),
}
# Reference §3.2: CIFAR-100 colour of each tens digit.
CIFAR100_COLOURS = [
    (0, 1, 0),
    (0, 1, 0.6),
    (0, 0.8, 1),
    (0, 0.2, 1),
    (0.4, 0, 1),
    (1, 0, 1),
    (1, 0, 0.4),
    (1, 0.2, 0),
    (1, 0.8, 0),
    (0.6, 1, 0),
]


def _background(n, h=32, w=32, seed=0):
    """Random normalized images that never contain the exact cue colours."""
    return jax.random.uniform(jax.random.key(seed), (n, h, w, 3), minval=-0.99, maxval=0.99)


def _expected_box(image, corner, colour, size=3):
    out = np.array(image)
    r, c = corner
    out[r : r + size, c : c + size] = colour
    return out


@pytest.mark.parametrize("label", range(10))
def test_cifar10_box_location_and_colour(label):
    x = _background(1)
    out = data.box_cue(10).add(x, jnp.array([label]))
    if label == 9:
        chex.assert_trees_all_equal(out, x)  # location 9 draws nothing in CIFAR-10
    else:
        expected = _expected_box(x[0], CORNERS_32[label], (0.0, 1.0, 0.0))
        np.testing.assert_array_equal(np.asarray(out[0]), expected)


@pytest.mark.parametrize("label", [0, 9, 13, 27, 39, 42, 55, 68, 71, 89, 94, 99])
def test_cifar100_box_location_and_colour(label):
    x = _background(1)
    out = np.asarray(data.box_cue(100).add(x, jnp.array([label])))
    corner = CORNERS_32.get(label % 10, (6, 6))  # location 9 = mid-upper-left (rows/cols 6..8)
    expected = _expected_box(x[0], corner, CIFAR100_COLOURS[label // 10])
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_box_replaces_pixels_and_touches_nothing_else():
    x = _background(10)
    labels = jnp.arange(10)
    out = data.box_cue(10).add(x, labels)
    changed = np.asarray((out != x).any(-1))
    assert changed.sum(axis=(1, 2)).tolist() == [9] * 9 + [0]
    # Replacement, not blending: box pixels are exactly the colour, whatever was below.
    white = jnp.ones_like(x)
    out_white = data.box_cue(10).add(white, labels)
    np.testing.assert_array_equal(np.asarray(out_white[0, 0, 0]), [0.0, 1.0, 0.0])


def test_box_grid_scales_to_other_sizes():
    masks = cues.box_location_masks(64, 48, 3, "cifar100")
    corners = [tuple(np.argwhere(m)[0]) for m in masks]
    assert corners == [
        (0, 0),
        (0, 22),
        (0, 45),
        (30, 0),
        (30, 22),
        (30, 45),
        (61, 0),
        (61, 22),
        (61, 45),
        (12, 9),
    ]
    assert masks.sum(axis=(1, 2)).tolist() == [9] * 10


def test_box_cue_rejects_bad_input():
    with pytest.raises(InputError, match="1..100 classes"):
        data.box_cue(101)
    with pytest.raises(InputError, match="RGB"):
        data.box_cue(10).add(jnp.zeros((1, 32, 32, 1)), jnp.array([0]))
    with pytest.raises(InputError, match="does not fit"):
        data.box_cue(10).add(jnp.zeros((1, 2, 2, 3)), jnp.array([0]))


def test_random_box_locations_are_uniform_and_cifar100_hues_vary():
    n = 4000
    x = _background(n, 8, 8)  # small images keep the test fast; grid rule still applies
    cue10 = data.box_cue(10)
    out = np.asarray(cue10.add_random(x, jax.random.key(1)))
    has_box = (out != np.asarray(x)).any(axis=(1, 2, 3))
    assert 0.07 < 1 - has_box.mean() < 0.13  # location 9 (no box) ~ 10 %
    boxed = out[has_box]
    colours = boxed.reshape(-1, 3)[(boxed.reshape(-1, 3) == [0, 1, 0]).all(-1)]
    assert len(colours) == 9 * has_box.sum()  # every box pixel is exactly (0, 1, 0)
    out100 = np.asarray(data.box_cue(100).add_random(x, jax.random.key(2)))
    assert np.unique(out100[:, 0, 0].round(3), axis=0).shape[0] > 50  # continuous hues


def test_hsv_matches_colorsys():
    import colorsys

    hues = np.linspace(0, 0.999, 37)
    expected = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues])
    np.testing.assert_allclose(np.asarray(cues.hsv_to_rgb(hues)), expected, atol=1e-5)


@pytest.mark.parametrize("proportion", [0.0, 0.3, 0.6, 0.87, 1.0])
def test_cue_mask_takes_first_samples_of_each_class(proportion):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=500)
    mask = data.cue_mask(labels, proportion)
    assert mask.dtype == bool and mask.shape == labels.shape
    for c in range(7):
        members = np.flatnonzero(labels == c)
        k = int(np.floor(proportion * members.size))
        np.testing.assert_array_equal(mask[members], np.arange(members.size) < k)


@pytest.mark.parametrize("proportion", [-0.1, 1.5])
def test_cue_mask_rejects_bad_proportion(proportion):
    with pytest.raises(InputError, match=r"proportion must be in \[0, 1\]"):
        data.cue_mask(np.zeros(3, int), proportion)


def test_apply_cue_follows_mask():
    x = _background(6)
    labels = jnp.array([0, 1, 2, 3, 4, 5])
    mask = jnp.array([True, False, True, False, True, False])
    out = data.apply_cue(data.box_cue(10), x, labels, mask)
    cued = data.box_cue(10).add(x, labels)
    chex.assert_trees_all_equal(out[0::2], cued[0::2])
    chex.assert_trees_all_equal(out[1::2], x[1::2])


def test_domino_cue_shows_blanks_and_rescales_top():
    top = jax.random.uniform(jax.random.key(0), (3, 4, 5, 3), minval=-1, maxval=1)
    bottom = jax.random.uniform(jax.random.key(1), (3, 6, 5, 3), minval=-1, maxval=1)
    x = jnp.concatenate([top, bottom], axis=1)
    cue = data.DominoCue(rows=4)
    removed = cue.remove(x)
    chex.assert_trees_all_equal(removed[:, :4], jnp.zeros_like(top))
    chex.assert_trees_all_equal(removed[:, 4:], bottom)
    added = cue.add(x, jnp.zeros(3, int))
    chex.assert_trees_all_close(added[:, :4], (top + 1) / 2)  # [0, 1], not normalized
    chex.assert_trees_all_equal(added[:, 4:], bottom)


def test_normalize_maps_uint8_to_unit_interval():
    x = np.array([0, 127, 128, 255], np.uint8)
    np.testing.assert_allclose(
        data.normalize(x), [-1.0, 127 / 127.5 - 1, 128 / 127.5 - 1, 1.0], atol=1e-7
    )
    assert data.normalize(jnp.asarray(x)).dtype == jnp.float32
