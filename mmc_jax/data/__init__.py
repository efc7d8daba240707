"""Datasets, cues and counterfactual evaluation sets.

>>> from mmc_jax import data
>>> train = data.load("shapes10", "train")            # embedded, no download
>>> mask = data.cue_mask(train.labels, 0.9)            # which samples carry the cue
>>> x = data.normalize(train.images[:8])
>>> x_rc = data.counterfactual(train.cue, "randcue", x, train.labels[:8], key)
"""

from mmc_jax.data.batching import EpochIterator
from mmc_jax.data.counterfactual import (
    CONDITIONS,
    RANDOM_FROM,
    check_condition,
    check_random_from,
    clean_inputs,
    condition_key,
    counterfactual,
)
from mmc_jax.data.cues import (
    BoxCue,
    Cue,
    DominoCue,
    apply_cue,
    box_cue,
    check_proportion,
    cue_mask,
    normalize,
)
from mmc_jax.data.datasets import NAMES, Dataset, describe, load
from mmc_jax.runtime.parallel import prefetch_to_device

__all__ = [
    "BoxCue",
    "CONDITIONS",
    "Cue",
    "Dataset",
    "DominoCue",
    "EpochIterator",
    "NAMES",
    "RANDOM_FROM",
    "apply_cue",
    "box_cue",
    "check_condition",
    "check_proportion",
    "check_random_from",
    "clean_inputs",
    "condition_key",
    "counterfactual",
    "cue_mask",
    "describe",
    "load",
    "normalize",
    "prefetch_to_device",
]
