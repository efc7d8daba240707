"""mmc_jax: Mechanistic Mode Connectivity (Lubana et al., ICML 2023) in JAX/Flax.

Submodules:
  data: datasets, cues and counterfactual evaluation sets.
  models: the paper's VGG-13 and ResNet-18 (Flax Linen) and small presets.
  training: PyTorch-equivalent SGD, train/eval steps, checkpoints, the training loop.
"""

from mmc_jax import data, models, training
from mmc_jax.errors import InputError

__version__ = "0.1.0"
__all__ = ["data", "models", "training", "InputError", "__version__"]
