"""Experiments as jobs of work units, and the executors that run them.

- :mod:`~mmc_jax.jobs.units`: :class:`Unit` (a named, resumable step with its inputs and
  folder) and :class:`Job` (a graph of units);
- :mod:`~mmc_jax.jobs.executors`: :func:`execute` a job ``inline``, on worker
  ``processes`` pinned to this machine's cores, or as ``ray`` tasks on a cluster, with the
  same results everywhere;
- :mod:`~mmc_jax.jobs.worker`: one unit in a process of its own;
- :mod:`~mmc_jax.jobs.driver`: the loop that runs units away from the driver process (shared by
  ``processes`` and ``ray``);
- :mod:`~mmc_jax.jobs.outcomes`: the driver's progress bar and one-line failures;
- :mod:`~mmc_jax.jobs.ray_tasks`: the Ray executor (imported only when used).
"""

from mmc_jax.jobs import driver, executors, outcomes, units, worker
from mmc_jax.jobs.executors import EXECUTORS, Execution, execute
from mmc_jax.jobs.outcomes import UnitFailed
from mmc_jax.jobs.units import Job, Unit

__all__ = [
    "EXECUTORS",
    "Execution",
    "Job",
    "Unit",
    "UnitFailed",
    "driver",
    "execute",
    "executors",
    "outcomes",
    "units",
    "worker",
]
