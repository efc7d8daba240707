"""mmc_jax: Mechanistic Mode Connectivity (Lubana et al., ICML 2023) in JAX/Flax.

Submodules:
  data: datasets, cues and counterfactual evaluation sets.
  models: the paper's VGG-13 and ResNet-18 (Flax Linen) and small presets.
  training: PyTorch-equivalent SGD, train/eval steps, checkpoints, the training loop.
  paths, barrier, path_eval: paths between models, barrier metrics, the path evaluator.
  similarity: pairwise linear-path barriers of N models, clustered.
  layerwise: per-layer barriers (one layer interpolated at a time).
  plane: loss and accuracy over the plane through three models.
  repair: REPAIR, the activation-statistics correction along a path (``bn="repair"``).
  permute: permutation specs, weight and activation matching.
  objectives, finetune: CBFT's losses; naive FT, LLRT, LPFT and CBFT.
  parallel: data parallelism over all local devices (sharding annotations).
  runtime: compilation cache and host-allocator settings for fast CPU runs.
  timing: wall-clock and compile seconds of a run's phases.
"""

from mmc_jax import (
    barrier,
    curve,
    data,
    finetune,
    layerwise,
    models,
    objectives,
    parallel,
    path_eval,
    paths,
    permute,
    plane,
    repair,
    runtime,
    similarity,
    timing,
    training,
)
from mmc_jax.errors import InputError

__version__ = "0.1.0"
__all__ = [
    "barrier",
    "curve",
    "data",
    "finetune",
    "layerwise",
    "models",
    "objectives",
    "parallel",
    "path_eval",
    "paths",
    "permute",
    "plane",
    "repair",
    "runtime",
    "similarity",
    "timing",
    "training",
    "InputError",
    "__version__",
]
