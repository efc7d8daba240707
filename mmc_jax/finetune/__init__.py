"""Fine-tuning a cue-reliant model θ_C away from its cue: CBFT and the baselines.

- :mod:`~mmc_jax.finetune.objectives`: CBFT's losses (cross-entropy, barrier, invariance) as
  composable pure functions of the parameters;
- :mod:`~mmc_jax.finetune.methods`: naive fine-tuning, LLRT, LPFT and CBFT, each a resumable
  run over paired clean and cued batches.
"""

from mmc_jax.finetune import methods, objectives
from mmc_jax.finetune.methods import (
    CBFT_MODES,
    CUED_STATISTICS,
    FinetuneConfig,
    PairedIterator,
    cbft,
    cbft_step,
    draw_subsets,
    features_of,
    llrt,
    naive_finetune,
    naive_step,
    paired_batches,
    paired_iterator,
)

__all__ = [
    "CBFT_MODES",
    "CUED_STATISTICS",
    "FinetuneConfig",
    "PairedIterator",
    "cbft",
    "cbft_step",
    "draw_subsets",
    "features_of",
    "llrt",
    "methods",
    "naive_finetune",
    "naive_step",
    "objectives",
    "paired_batches",
    "paired_iterator",
]
