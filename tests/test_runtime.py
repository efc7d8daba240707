"""Process settings: the compilation cache folder and the host-allocator switch."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax import runtime


def test_compilation_cache_follows_the_environment(monkeypatch, tmp_path):
    previous = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "a"))
        assert runtime.enable_compilation_cache() == str(tmp_path / "a")
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
        monkeypatch.setenv("MMC_JAX_CACHE", str(tmp_path / "b"))
        assert runtime.enable_compilation_cache() == str(tmp_path / "b" / "jax")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "b" / "jax")
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_cached_compile_time_threshold_follows_the_environment(monkeypatch):
    previous = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
        runtime.enable_compilation_cache()
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
        runtime.enable_compilation_cache()
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.1
        runtime.enable_compilation_cache(2.0)  # an explicit value wins
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)


def _tune(env):
    code = "from mmc_jax import runtime; print(runtime.tune_host_allocator())"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_host_allocator_tuning_applies_on_linux_and_can_be_switched_off():
    assert _tune({}) == str(sys.platform.startswith("linux"))
    assert _tune({"MMC_JAX_TUNE_MALLOC": "0"}) == "False"


def test_one_shot_jit_equals_jit_and_nests_in_traces():
    def f(key, scale):
        return jax.random.normal(key, (64, 8)) @ jax.random.uniform(key, (8, 4)) * scale

    key = jax.random.key(3)
    cheap = runtime.one_shot_jit(f)
    np.testing.assert_allclose(cheap(key, 2.0), jax.jit(f)(key, 2.0), rtol=1e-6, atol=1e-6)
    # Inside eval_shape or another jit its arguments are tracers: an ordinary nested jit.
    assert jax.eval_shape(lambda: cheap(jax.random.key(0), 1.0)).shape == (64, 4)
    np.testing.assert_allclose(
        jax.jit(lambda k: cheap(k, 2.0))(key), cheap(key, 2.0), rtol=1e-6, atol=1e-6
    )
    static = runtime.one_shot_jit(lambda n, x: x * n, static_argnums=0)
    assert float(static(3, jnp.float32(2.0))) == 6.0


def test_importing_the_library_leaves_the_backend_unstarted():
    """Devices and platforms stay configurable after ``import mmc_jax`` (and every module)."""
    script = (
        "import importlib, pkgutil, jax, mmc_jax\n"
        "for m in pkgutil.walk_packages(mmc_jax.__path__, 'mmc_jax.'):\n"
        "    if m.name != 'mmc_jax.models.torch_reference':\n"
        "        importlib.import_module(m.name)\n"
        "jax.config.update('jax_num_cpu_devices', 3)\n"
        "print(jax.device_count())\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr[-2000:]
