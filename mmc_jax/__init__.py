"""mmc_jax: Mechanistic Mode Connectivity (Lubana et al., ICML 2023) in JAX/Flax.

The packages, from the bottom up (each imports only those above it in this list):

- runtime: JAX settings, devices, graceful stops, the library's errors.
- data: datasets, cues and the counterfactual evaluation sets.
- reporting: atomic result files, tables, plots, TensorBoard, timings.
- jobs: experiments as graphs of resumable work units, run inline, on worker processes
  pinned to this machine's cores, or as Ray tasks on a cluster, with the same results.
- models: the paper's VGG-13 and ResNet-18 (Flax Linen), small presets, PyTorch interop.
- metrics: the one evaluation kernel (loss and accuracy under the four conditions).
- paths: linear and quadratic Bezier paths between models, over any PyTree.
- training: PyTorch-equivalent SGD, train steps, checkpoints, the loop; calibration and
  diagnosis of a cue model.
- permute: permutation symmetries of a model, weight and activation matching.
- connectivity: barriers, the path evaluator, the trained quadratic curve, REPAIR.
- analysis: pairwise barriers of N models, per-layer barriers, loss planes.
- finetune: CBFT's objectives; naive FT, LLRT, LPFT and CBFT.
"""

from mmc_jax import (
    analysis,
    connectivity,
    data,
    finetune,
    jobs,
    metrics,
    models,
    paths,
    permute,
    reporting,
    runtime,
    training,
)
from mmc_jax.runtime.errors import InputError

__version__ = "0.1.0"
__all__ = [
    "InputError",
    "__version__",
    "analysis",
    "connectivity",
    "data",
    "finetune",
    "jobs",
    "metrics",
    "models",
    "paths",
    "permute",
    "reporting",
    "runtime",
    "training",
]
