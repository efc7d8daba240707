"""Dominoes: a cue image (Fashion-MNIST) stacked on top of a natural image (CIFAR-10).

As in the paper's code, the i-th bottom image of class c is paired with the i-th top image of
class c (cycling through the top images when a class has fewer of them), and the top image is
converted to RGB and resized to the bottom's width. Any two datasets with the same number of
classes can be stacked, so dominoes also work on the embedded data.
"""

from __future__ import annotations

import jax
import numpy as np

from mmc_jax.runtime.errors import InputError


def pair_by_class(top_labels: np.ndarray, bottom_labels: np.ndarray) -> np.ndarray:
    """Index into the top set for each bottom sample: the i-th bottom sample of class c gets
    the i-th top sample of class c (modulo the number of top samples of c)."""
    top_labels, bottom_labels = np.asarray(top_labels), np.asarray(bottom_labels)
    pairs = np.empty(bottom_labels.shape, np.int64)
    for c in np.unique(bottom_labels):
        tops = np.flatnonzero(top_labels == c)
        if tops.size == 0:
            raise InputError(f"dominoes: class {c} has no top image to pair with")
        bottoms = np.flatnonzero(bottom_labels == c)
        pairs[bottoms] = tops[np.arange(bottoms.size) % tops.size]
    return pairs


def to_rgb_square(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``[N, H, W, 1|3]`` → uint8 ``[N, side, side, 3]`` (bilinear resize, rounded)."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[1:3] == (side, side):
        return np.asarray(images)
    resized = jax.image.resize(
        np.asarray(images, np.float32), (images.shape[0], side, side, 3), "bilinear"
    )
    return np.asarray(np.clip(np.round(resized), 0, 255), np.uint8)


def stack(
    top_images: np.ndarray,
    top_labels: np.ndarray,
    bottom_images: np.ndarray,
    bottom_labels: np.ndarray,
) -> np.ndarray:
    """Domino images uint8 ``[N, W + H, W, 3]``: the paired top image above each bottom
    image (``N``, ``H``, ``W`` of the bottom set)."""
    side = bottom_images.shape[2]
    pairs = pair_by_class(top_labels, bottom_labels)
    tops = to_rgb_square(np.asarray(top_images)[pairs], side)
    bottoms = np.asarray(bottom_images)
    if bottoms.shape[-1] == 1:
        bottoms = np.repeat(bottoms, 3, axis=-1)
    return np.concatenate([tops, bottoms], axis=1)
