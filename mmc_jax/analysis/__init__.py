"""Analyses of many trained models through the path evaluator.

- :mod:`~mmc_jax.analysis.similarity`: pairwise linear-path barriers of N models, clustered
  (which models share a mechanism);
- :mod:`~mmc_jax.analysis.layerwise`: per-layer barriers, one layer interpolated at a time
  (where along the depth two models differ);
- :mod:`~mmc_jax.analysis.plane`: loss and accuracy over the plane through three models.
"""

from mmc_jax.analysis import layerwise, plane, similarity
from mmc_jax.analysis.layerwise import layerwise_barriers
from mmc_jax.analysis.plane import evaluate_plane
from mmc_jax.analysis.similarity import pairwise_barriers

__all__ = [
    "evaluate_plane",
    "layerwise",
    "layerwise_barriers",
    "pairwise_barriers",
    "plane",
    "similarity",
]
