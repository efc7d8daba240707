"""Fine-tuning a cue-reliant model θ_C away from its cue: CBFT and the baselines.

- :mod:`~mmc_jax.finetune.objectives`: CBFT's losses (cross-entropy, barrier, invariance) as
  composable pure functions of the parameters;
- :mod:`~mmc_jax.finetune.methods`: naive fine-tuning, LLRT, LPFT and CBFT, each a resumable
  run over paired clean and cued batches, and the spurious-correlation baselines;
- :mod:`~mmc_jax.finetune.groups`: the (class, cue present) groups those baselines use;
- :mod:`~mmc_jax.finetune.features`: a frozen model's penultimate features, which the
  last-layer methods retrain a head on;
- :mod:`~mmc_jax.finetune.dfr`, :mod:`~mmc_jax.finetune.jtt`,
  :mod:`~mmc_jax.finetune.group_dro`: Deep Feature Reweighting, Just Train Twice, Group DRO.
"""

from mmc_jax.finetune import dfr, features, group_dro, groups, jtt, methods, objectives
from mmc_jax.finetune.features import features_of
from mmc_jax.finetune.groups import cued_flags
from mmc_jax.finetune.methods import (
    CBFT_MODES,
    CUED_STATISTICS,
    FinetuneConfig,
    PairedIterator,
    cbft,
    cbft_step,
    dfr_finetune,
    draw_subsets,
    group_dro_finetune,
    jtt_finetune,
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
    "cued_flags",
    "dfr",
    "dfr_finetune",
    "draw_subsets",
    "features",
    "features_of",
    "group_dro",
    "group_dro_finetune",
    "groups",
    "jtt",
    "jtt_finetune",
    "llrt",
    "methods",
    "naive_finetune",
    "naive_step",
    "objectives",
    "paired_batches",
    "paired_iterator",
]
