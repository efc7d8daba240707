"""Synthetic cues: label-predictive patterns stamped onto normalized images on device.

A cue is a small hashable object (so it can be a static argument of a jitted function) with
three pure operations on *normalized* float images ``[N, H, W, C]``:

* ``remove(images)``: the cue-free version of a batch;
* ``add(images, labels, source=None)``: every image carries the cue of its label;
* ``add_random(images, key, pool=None)``: every image carries a cue drawn at random (for
  cues that are images, drawn from ``pool``, e.g. the whole evaluation set).

Two cues reproduce the paper's code (see ``shared/design/reference.md`` §3):

* :class:`BoxCue`: a 3×3 box whose grid location (and, above 10 classes, colour) encodes
  the label. Images stay clean until a box is stamped, so ``remove`` is the identity.
* :class:`DominoCue`: the top half of a 64×32 "domino" holds an image whose class matches
  the label (Fashion-MNIST above CIFAR-10). Dataset images carry their paired top image;
  ``remove`` blanks it to zeros, ``add`` shows it scaled to [0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax.runtime.errors import InputError

Array = jax.Array

#: Number of box locations on the 3×3 grid plus the extra location 9.
NUM_LOCATIONS = 10


def normalize(images):
    """Maps uint8 pixels to float32 in [-1, 1] as ``x / 127.5 - 1``.

    This is the paper code's ``Normalize(mean=0.5, std=0.5)`` after ``ToTensor``. Works on
    numpy arrays, jax arrays and tracers, and returns the same kind of array.
    """
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def hsv_to_rgb(hue: Array) -> Array:
    """Fully saturated, full-value HSV colour of ``hue`` in [0, 1), as RGB in [0, 1].

    Jittable version of ``colorsys.hsv_to_rgb(h, 1, 1)`` for an array of hues ``[N]``;
    returns ``[N, 3]``.
    """
    hue = jnp.asarray(hue, jnp.float32)[..., None]
    k = jnp.mod(jnp.array([5.0, 3.0, 1.0], jnp.float32) + hue * 6.0, 6.0)
    return 1.0 - jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def box_colour(hue: Array) -> Array:
    """The paper code's box colour for ``hue``: HSV→RGB, then channels reordered ``[2, 0, 1]``.

    Hue 0 gives (0, 1, 0), the fixed CIFAR-10 colour; hue ``d / 10`` gives the CIFAR-100
    colour of tens digit ``d``.
    """
    return hsv_to_rgb(hue)[..., jnp.array([2, 0, 1])]


def box_location_masks(height: int, width: int, size: int, style: str) -> np.ndarray:
    """Boolean masks ``[10, height, width]``, one per box location.

    Locations 0–8 index the 3×3 grid in reading order (upper-left … lower-right). Each row
    (column) of the grid starts at ``0``, ``(H - size) // 2`` or ``H - size``, which is the
    reference's 0, 14, 29 on 32×32 images and scales to any size. Location 9 is empty in the
    ``"cifar10"`` style and the "mid-upper-left" box (rows/cols 6..8 on 32×32, scaled as
    ``6 * H // 32``) in the ``"cifar100"`` style.
    """
    if min(height, width) < size:
        raise InputError(f"box cue of size {size} does not fit {height}x{width} images")
    masks = np.zeros((NUM_LOCATIONS, height, width), bool)
    rows = (0, (height - size) // 2, height - size)
    cols = (0, (width - size) // 2, width - size)
    for loc in range(9):
        r, c = rows[loc // 3], cols[loc % 3]
        masks[loc, r : r + size, c : c + size] = True
    if style == "cifar100":
        r, c = 6 * height // 32, 6 * width // 32
        masks[9, r : r + size, c : c + size] = True
    return masks


@dataclasses.dataclass(frozen=True)
class BoxCue:
    """A ``size``×``size`` box stamped at a label-dependent location, replacing the pixels.

    Attributes:
      num_classes: number of classes of the labels it encodes (at most 100).
      style: ``"cifar10"`` (location ``label % 10``, location 9 draws nothing, colour
        (0, 1, 0)) or ``"cifar100"`` (location ``label % 10`` with location 9 the
        mid-upper-left box, colour from the tens digit, hue ``(label // 10) / 10``).
      size: side of the box in pixels (3 in the paper).

    Colours are written in normalized space, as in the paper's code: a box pixel becomes
    exactly (0, 1, 0) in a [-1, 1] image.
    """

    num_classes: int
    style: str = "cifar10"
    size: int = 3

    def __post_init__(self):
        if self.style not in ("cifar10", "cifar100"):
            raise InputError(f"unknown box cue style {self.style!r}; use 'cifar10' or 'cifar100'")
        if not 1 <= self.num_classes <= 100:
            raise InputError(
                f"a box cue encodes 1..100 classes, got num_classes={self.num_classes}"
            )

    def label_hue(self, labels: Array) -> Array:
        """Hue of each label's box: 0 in the CIFAR-10 style, ``(label // 10) / 10`` above."""
        if self.style == "cifar10":
            return jnp.zeros(labels.shape, jnp.float32)
        return (labels // 10).astype(jnp.float32) / 10.0

    def stamp(self, images: Array, locations: Array, hues: Array) -> Array:
        """Writes a box of colour ``box_colour(hue)`` at grid ``locations`` (ints in 0..9)."""
        _, height, width, channels = images.shape
        if channels != 3:
            raise InputError(f"box cues need RGB images, got {channels} channel(s)")
        masks = jnp.asarray(box_location_masks(height, width, self.size, self.style))
        inside = masks[locations][..., None]
        colour = box_colour(hues)[:, None, None, :].astype(images.dtype)
        return jnp.where(inside, colour, images)

    def remove(self, images: Array) -> Array:
        """Box cues are stamped onto clean images, so the cue-free batch is the batch itself."""
        return images

    def add(self, images: Array, labels: Array, source: Optional[Array] = None) -> Array:
        """Stamps every image with the box of its label (``source`` is unused for boxes)."""
        del source
        return self.stamp(images, labels % NUM_LOCATIONS, self.label_hue(labels))

    def add_random(self, images: Array, key: Array, pool: Optional[Array] = None) -> Array:
        """Stamps a random box: location uniform over 0..9 and, in the CIFAR-100 style, hue
        uniform in [0, 1) (the paper code's randomised cue); ``pool`` is unused."""
        del pool
        loc_key, hue_key = jax.random.split(key)
        n = images.shape[0]
        locations = jax.random.randint(loc_key, (n,), 0, NUM_LOCATIONS)
        if self.style == "cifar10":
            hues = jnp.zeros((n,), jnp.float32)
        else:
            hues = jax.random.uniform(hue_key, (n,), jnp.float32)
        return self.stamp(images, locations, hues)


@dataclasses.dataclass(frozen=True)
class DominoCue:
    """The top ``rows`` rows of a domino image are the cue: an image of the label's class.

    Dataset images carry their paired cue image on top (see ``mmc_jax.data.dominoes``).
    In normalized images the cue is shown as ``(x + 1) / 2``, i.e. scaled to [0, 1] and not
    normalized, as in the paper's code; a cue-free domino has an all-zero top.
    """

    rows: int = 32

    def _split(self, images: Array):
        if images.shape[1] <= self.rows:
            raise InputError(
                f"domino images need more than {self.rows} rows, got shape {tuple(images.shape)}"
            )
        return images[:, : self.rows], images[:, self.rows :]

    def remove(self, images: Array) -> Array:
        """Blanks the cue half to zeros."""
        top, bottom = self._split(images)
        return jnp.concatenate([jnp.zeros_like(top), bottom], axis=1)

    def add(self, images: Array, labels: Array, source: Optional[Array] = None) -> Array:
        """Shows each sample's paired cue image, taken from ``source`` (default ``images``).

        ``labels`` are implied by the pairing and unused; ``source`` lets ``randimg`` keep
        the cue of the original sample under a different bottom image.
        """
        del labels
        _, bottom = self._split(images)
        top, _ = self._split(images if source is None else source)
        return jnp.concatenate([(top + 1.0) / 2.0, bottom], axis=1)

    def add_random(self, images: Array, key: Array, pool: Optional[Array] = None) -> Array:
        """Shows a random cue image: the top of a uniformly drawn member of ``pool`` (the whole
        evaluation set: a random Fashion-MNIST image, as in the paper's code), or with no
        pool, of a random other sample of the batch."""
        if pool is None:
            source = images[jax.random.permutation(key, images.shape[0])]
        else:
            source = draw_images(pool, key, images.shape[0])
        return self.add(images, None, source=source)


Cue = BoxCue | DominoCue


def draw_images(pool: Array, key: Array, n: int) -> Array:
    """``n`` normalized images drawn uniformly, with replacement, from ``pool`` (uint8, or
    already normalized)."""
    drawn = pool[jax.random.randint(key, (n,), 0, pool.shape[0])]
    return normalize(drawn) if drawn.dtype == jnp.uint8 else drawn


def box_cue(num_classes: int, size: int = 3) -> BoxCue:
    """The paper's box cue for ``num_classes``: CIFAR-10 style up to 10 classes, CIFAR-100
    style above (up to 100)."""
    return BoxCue(num_classes, "cifar10" if num_classes <= 10 else "cifar100", size)


def check_proportion(proportion: float) -> float:
    """Returns ``proportion`` as a float if it lies in [0, 1], else raises InputError."""
    try:
        value = float(proportion)
    except (TypeError, ValueError):
        raise InputError(f"cue proportion must be a number in [0, 1], got {proportion!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"cue proportion must be in [0, 1], got {proportion}")
    return value


def cue_mask(labels, proportion: float) -> np.ndarray:
    """Which training samples carry the cue: the first ``floor(proportion * n_c)`` samples of
    each class ``c`` in dataset order (deterministic, as in the paper's code).

    Args:
      labels: int array ``[N]``.
      proportion: fraction in [0, 1] of each class that carries the cue.

    Returns:
      bool numpy array ``[N]``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {labels.shape}")
    check_proportion(proportion)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    classes, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
    rank = np.arange(labels.size) - np.repeat(starts, counts)
    quota = np.floor(float(proportion) * counts).astype(np.int64)
    mask = np.empty(labels.size, bool)
    mask[order] = rank < np.repeat(quota, counts)
    return mask


def apply_cue(cue: Cue, images: Array, labels: Array, mask: Array) -> Array:
    """Cued training batch: images where ``mask`` is True carry their label's cue, the
    others are cue-free. Pure and jittable; ``mask`` is a bool array ``[N]``."""
    cued = cue.add(images, labels)
    clean = cue.remove(images)
    return jnp.where(jnp.asarray(mask)[:, None, None, None], cued, clean)
