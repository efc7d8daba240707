"""How a process runs: JAX settings, devices, graceful stops and the library's errors.

- :mod:`~mmc_jax.runtime.settings`: the persistent compilation cache, the CPU host allocator,
  cheap compilation of one-shot programs, the cache folder;
- :mod:`~mmc_jax.runtime.parallel`: data parallelism over every device (a mesh, sharded
  batches, replicated variables);
- :mod:`~mmc_jax.runtime.distributed`: several processes (hosts) as one computation
  (``jax.distributed``), and process 0 as the one that writes files;
- :mod:`~mmc_jax.runtime.stopping`: SIGINT/SIGTERM turned into :class:`Interrupted` at a point
  where the run can save;
- :mod:`~mmc_jax.runtime.errors`: :class:`InputError` (bad input, one line) and
  :class:`WriteError` (a refused write), and the bound checks that raise them.

Nothing here imports the rest of the library, so every package may use it.
"""

from mmc_jax.runtime import distributed, errors, parallel, settings, stopping
from mmc_jax.runtime.errors import InputError, WriteError
from mmc_jax.runtime.settings import (
    cache_dir,
    enable_compilation_cache,
    one_shot_jit,
    tune_host_allocator,
)
from mmc_jax.runtime.stopping import Interrupted

__all__ = [
    "InputError",
    "Interrupted",
    "WriteError",
    "cache_dir",
    "distributed",
    "enable_compilation_cache",
    "errors",
    "one_shot_jit",
    "parallel",
    "settings",
    "stopping",
    "tune_host_allocator",
]
