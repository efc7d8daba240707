"""Settings that make JAX faster on a workstation: a persistent compilation cache and, on
Linux CPUs, a host allocator that keeps XLA's buffers mapped (process-level, opt-in calls
that the entry points, benchmarks and tests make; importing mmc_jax changes nothing), and
cheap compilation for programs that run once.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
import sys
from typing import Optional

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_MIN_COMPILE_TIME = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def cache_dir(override: Optional[str] = None) -> pathlib.Path:
    """The cache folder: ``override``, else ``$MMC_JAX_CACHE``, else ``~/.cache/mmc_jax``."""
    path = override or os.environ.get("MMC_JAX_CACHE") or "~/.cache/mmc_jax"
    return pathlib.Path(path).expanduser()


def enable_compilation_cache(min_compile_time_s: float | None = None) -> str:
    """Keeps compiled XLA programs on disk so reruns and resumed runs skip compilation.

    Uses ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``<mmc_jax cache>/jax`` (see
    :func:`cache_dir`). Programs that compile faster than
    ``min_compile_time_s`` are not kept; by default
    ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, else 0.5 s. Returns the folder.
    """
    import jax

    if min_compile_time_s is None:
        min_compile_time_s = float(os.environ.get(_MIN_COMPILE_TIME, 0.5))
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache_dir() / "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    return folder


def one_shot_jit(fun, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` for a program that runs once or a few times per call
    site (initialization, a permutation gather), where compiling it costs more than running it.

    On CPU it is compiled without LLVM's backend optimizations: a model's initialization
    compiles in 0.4 s instead of 3.2 s (cnn4; 1.2 s instead of 4.8 s for resnet18_small), and
    runs in milliseconds either way. Results may differ from the fully optimized program in
    the last bit of a float (fused multiply-adds); they are deterministic. Called on tracers
    (inside ``jax.eval_shape`` or another ``jit``) it is an ordinary nested ``jit``; other
    backends compile as usual.
    """
    import jax

    jitted = jax.jit(fun, **jit_kwargs)
    cheap = jax.jit(fun, compiler_options={"xla_backend_optimization_level": 0}, **jit_kwargs)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        # Decided per call, not when decorating: deciding at import would start the backend
        # before the user could configure it (devices, platforms).
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
        use_cheap = not traced and jax.default_backend() == "cpu"
        return (cheap if use_cheap else jitted)(*args, **kwargs)

    return call


def tune_host_allocator() -> bool:
    """Stops glibc from mapping and unmapping XLA's large CPU buffers on every step.

    By default glibc serves large allocations with fresh ``mmap``s (and per-thread arenas
    shrink and grow), so every training step page-faults its activations in again: on a
    2-core machine a quarter of the time went to the kernel. One arena, no ``mmap`` for large
    blocks and no trimming keep freed buffers for reuse (training throughput of the demo
    model +25–30 %, ``benchmarks/train_throughput.py``). The cost: memory freed by the
    process is not returned to the OS until it exits.

    Call it early, before JAX starts its threads. A no-op (returns False) off Linux/glibc
    or when ``MMC_JAX_TUNE_MALLOC=0``.
    """
    if os.environ.get("MMC_JAX_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    )


__all__ = ["enable_compilation_cache", "one_shot_jit", "tune_host_allocator"]
