"""The four counterfactual evaluation conditions of the paper (Table 1 columns).

* ``nocue`` (NC): the clean images;
* ``cue`` (C): every image carries its label's cue;
* ``randcue`` (RC): the cue is drawn at random, the natural image is kept;
* ``randimg`` (RI): the natural image is replaced by another random image of the batch,
  and the cue still matches the *original* label (high accuracy means the model reads the
  cue; chance is the ideal).

Labels are never changed. All conditions are pure and jittable (``cue`` and ``condition``
are static), so they are built on device inside evaluation steps.
"""

from __future__ import annotations

import jax

from mmc_jax.data.cues import Cue
from mmc_jax.errors import InputError

CONDITIONS = ("nocue", "cue", "randcue", "randimg")


def check_condition(condition: str) -> str:
    """Returns ``condition`` if it is one of :data:`CONDITIONS`, else raises InputError."""
    if condition not in CONDITIONS:
        raise InputError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    return condition


def counterfactual(cue: Cue, condition: str, images: jax.Array, labels: jax.Array,
                   key: jax.Array) -> jax.Array:
    """Builds the ``condition`` version of a batch of normalized images.

    Args:
      cue: the dataset's cue (``Dataset.cue``, ``box_cue(...)`` or ``DominoCue()``).
      condition: one of :data:`CONDITIONS`.
      images: normalized float images ``[N, H, W, C]`` (see ``normalize``), cue-free for box
        cues, with their paired cue image on top for dominoes.
      labels: int labels ``[N]``.
      key: PRNG key; ``nocue`` and ``cue`` ignore it.

    Returns:
      float images of the same shape. ``nocue`` returns box-cue images unchanged (and blanks
      the cue half of dominoes).
    """
    check_condition(condition)
    if condition == "nocue":
        return cue.remove(images)
    if condition == "cue":
        return cue.add(images, labels)
    if condition == "randcue":
        return cue.add_random(images, key)
    perm = jax.random.permutation(key, images.shape[0])
    return cue.add(images[perm], labels, source=images)
