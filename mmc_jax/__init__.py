"""mmc_jax: Mechanistic Mode Connectivity (Lubana et al., ICML 2023) in JAX/Flax.

Submodules:
  data: datasets, cues and counterfactual evaluation sets.
"""

from mmc_jax import data
from mmc_jax.errors import InputError

__version__ = "0.1.0"
__all__ = ["data", "InputError", "__version__"]
