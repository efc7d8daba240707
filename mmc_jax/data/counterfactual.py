"""The four counterfactual evaluation conditions of the paper (Table 1 columns).

* ``nocue`` (NC): the clean images;
* ``cue`` (C): every image carries its label's cue;
* ``randcue`` (RC): the cue is drawn at random, the natural image is kept;
* ``randimg`` (RI): the natural image is replaced by another random image, and the cue still
  matches the *original* label (high accuracy means the model reads the cue; chance is the
  ideal).

Random images (``randimg``) and random domino cue images (``randcue`` on dominoes) come from
a *pool*: the whole evaluation set, as in the paper's code (``random_from="set"``), or the
batch itself (``"batch"``). Labels are never changed. All conditions are pure and jittable
(``cue`` and ``condition`` are static), so they are built on device inside evaluation steps.

:func:`clean_inputs` is the one way to turn stored images into cue-free model inputs: every
use of "clean data" (fine-tuning batches, LLRT features, BatchNorm statistics along paths,
activation matching) goes through it, for every cue type.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mmc_jax.data.cues import Cue, draw_images, normalize
from mmc_jax.runtime.errors import InputError

CONDITIONS = ("nocue", "cue", "randcue", "randimg")
#: Where random images and random domino cues are drawn from (see the module docstring).
RANDOM_FROM = ("set", "batch")


def check_condition(condition: str) -> str:
    """Returns ``condition`` if it is one of :data:`CONDITIONS`, else raises InputError."""
    if condition not in CONDITIONS:
        raise InputError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    return condition


def check_random_from(random_from: str) -> str:
    """Returns ``random_from`` if it is one of :data:`RANDOM_FROM`, else raises InputError."""
    if random_from not in RANDOM_FROM:
        raise InputError(
            f"unknown random_from {random_from!r}; choose from {', '.join(RANDOM_FROM)}"
        )
    return random_from


def clean_inputs(cue: Cue, images) -> jax.Array:
    """Cue-free, normalized model inputs from stored uint8 images (the ``nocue`` condition).

    Box-cue datasets store clean images, dominoes store the paired cue image on top; this
    removes it (an all-zero top, as the paper code's no-cue loader gives).
    """
    return cue.remove(normalize(images))


def condition_key(key: jax.Array, condition: str, batch_index) -> jax.Array:
    """The PRNG key of one condition on one evaluation batch.

    It depends only on ``(key, condition name, batch index)``, so a model sees the same
    counterfactual images whichever other conditions are evaluated with it, in
    ``training.evaluate`` as along a path.
    """
    return jax.random.fold_in(jax.random.fold_in(key, CONDITIONS.index(condition)), batch_index)


def counterfactual(
    cue: Cue,
    condition: str,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    pool: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
) -> jax.Array:
    """Builds the ``condition`` version of a batch of normalized images.

    Args:
      cue: the dataset's cue (``Dataset.cue``, ``box_cue(...)`` or ``DominoCue()``).
      condition: one of :data:`CONDITIONS`.
      images: normalized float images ``[N, H, W, C]`` (see ``normalize``), cue-free for box
        cues, with their paired cue image on top for dominoes.
      labels: int labels ``[N]``.
      key: PRNG key; ``nocue`` and ``cue`` ignore it.
      pool: images to draw random images (``randimg``) and random domino cues (``randcue``)
        from, uniformly with replacement: uint8 or normalized, ``[M, H, W, C]``, e.g. the
        whole evaluation set. ``None``: a random permutation of the batch itself.
      mask: bool ``[N]``, which samples carry a cue (``None``: all), as the paper code's
        sets at ``cue_proportion`` < 1 (``cue_mask``): a sample without one keeps its
        image (``randimg``: the random image) cue-free. The draws do not depend on it.

    Returns:
      float images of the same shape. ``nocue`` returns box-cue images unchanged (and blanks
      the cue half of dominoes).
    """
    check_condition(condition)
    if condition == "nocue":
        return cue.remove(images)
    base = images
    if condition == "cue":
        out = cue.add(images, labels)
    elif condition == "randcue":
        out = cue.add_random(images, key, pool)
    else:
        if pool is None:
            base = images[jax.random.permutation(key, images.shape[0])]
        else:
            base = draw_images(pool, key, images.shape[0])
        out = cue.add(base, labels, source=images)
    if mask is None:
        return out
    return jnp.where(jnp.asarray(mask)[:, None, None, None], out, cue.remove(base))
