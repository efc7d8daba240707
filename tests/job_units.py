"""Unit functions for the job and executor tests: small, deterministic, with JAX in them."""

import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp


def draw(folder: str, seed: int, sleep: float = 0.0, inputs=None) -> dict:
    """The mean of 2M JAX random numbers (whose last bits depend on the size of XLA's CPU
    thread pool), plus the inputs' values: a result every executor must reproduce exactly.
    Waits ``sleep`` seconds first, with a file ``started`` in ``folder`` saying so."""
    pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(folder) / "started").write_text(str(os.getpid()))
    time.sleep(sleep)
    x = jax.random.normal(jax.random.PRNGKey(seed), (2048, 1024))
    value = float(jnp.mean(x)) + sum(r["value"] for r in (inputs or {}).values())
    (pathlib.Path(folder) / "value.json").write_text(json.dumps(value))
    return {"value": value, "pid": os.getpid()}


def fail(folder: str) -> dict:
    """A unit that always fails."""
    raise RuntimeError(f"this unit fails ({folder})")


def report(folder: str, inputs) -> dict:
    """A light unit: the sum of its inputs' values."""
    return {"value": sum(r["value"] for r in inputs.values()), "warnings": ["a note"]}


def gated(folder: str, gate: str, inputs=None) -> dict:
    """Fails until the file ``gate`` exists (a unit fixed between two runs)."""
    if not os.path.exists(gate):
        raise RuntimeError(f"{gate} is missing")
    return {"value": 1.0 + sum(r["value"] for r in (inputs or {}).values())}
