"""Mode connectivity: barriers along paths between models, and the paths worth measuring.

- :mod:`mmc_jax.paths` (a top-level module, as the public API has it): linear and quadratic
  Bezier paths over PyTrees;
- :mod:`~mmc_jax.connectivity.barrier`: loss and accuracy barriers of values along a path;
- :mod:`~mmc_jax.connectivity.path_eval`: the path evaluator, many points of a path in one
  compiled call (vmap on GPU/TPU, chunked ``lax.map`` on CPU, ``shard_map`` across devices),
  with the BatchNorm policies (interpolate, recompute, REPAIR);
- :mod:`~mmc_jax.connectivity.curve`: the quadratic Bezier curve's control point, trained so the
  curve has low loss (Garipov et al. 2018);
- :mod:`~mmc_jax.connectivity.repair`: REPAIR's activation-statistics correction along a path.
"""

from mmc_jax.connectivity import barrier, curve, path_eval, repair
from mmc_jax.connectivity.barrier import accuracy_barrier, loss_barrier
from mmc_jax.connectivity.curve import CurveConfig, fit_curve
from mmc_jax.connectivity.path_eval import PathResult, compile_evaluation, evaluate_path

__all__ = [
    "CurveConfig",
    "PathResult",
    "accuracy_barrier",
    "barrier",
    "compile_evaluation",
    "curve",
    "evaluate_path",
    "fit_curve",
    "loss_barrier",
    "path_eval",
    "repair",
]
