"""Shared test setup: a persistent XLA compilation cache and a private dataset cache."""

import os
import pathlib

import jax
import pytest

from mmc_jax import runtime

runtime.tune_host_allocator()

# Compiled programs are reused across test runs (CI sets JAX_COMPILATION_CACHE_DIR).
jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path("~/.cache/mmc_jax/jax").expanduser())))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keeps generated and decoded datasets out of the user's cache."""
    os.environ["MMC_JAX_CACHE"] = str(tmp_path_factory.mktemp("mmc_jax_cache"))
    yield
