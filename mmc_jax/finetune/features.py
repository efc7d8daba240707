"""Penultimate features of a frozen model (eval-mode BatchNorm): what the last-layer methods
(LLRT, LPFT's probe, DFR) retrain a linear head on."""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from mmc_jax import metrics
from mmc_jax.models.nnx_bridge import accepts_nnx


@accepts_nnx
def features_of(
    apply_fn,
    variables,
    images,
    cue,
    batch_size: int = 500,
    *,
    labels: Optional[np.ndarray] = None,
    cued: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Penultimate features ``[N, D]`` of uint8 images, computed in batches.

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).

    Without ``cued`` the images are cue-free (``data.clean_inputs``); with it (bool ``[N]``)
    the flagged images carry their label's cue (``labels`` needed), the others none, as
    ``metrics.cued_inputs`` builds training batches.
    """
    if cued is not None and labels is None:
        raise ValueError("cued images need their labels")

    def forward(v, batch):
        x = metrics.cued_inputs(cue, batch)
        return apply_fn(v, x, train=False, return_features=True)[1]

    forward = jax.jit(forward)
    arrays = {"images": images}
    if cued is not None:
        arrays.update(labels=np.asarray(labels), cue=np.asarray(cued, bool))
    return np.concatenate(
        [
            np.asarray(forward(variables, {k: a[i : i + batch_size] for k, a in arrays.items()}))
            for i in range(0, len(images), batch_size)
        ]
    )


__all__ = ["features_of"]
