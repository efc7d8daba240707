"""What the benchmark scripts share: a description of the machine and the JSON output."""

from __future__ import annotations

import json
import pathlib
import platform

import jax

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The accelerator (kind × count, backend), the host processor and the JAX version."""
    return (f"{jax.devices()[0].device_kind} ×{jax.device_count()} ({jax.default_backend()}), "
            f"{platform.processor() or platform.machine()}, jax {jax.__version__}")


def save(name: str, payload: dict) -> pathlib.Path:
    """Writes ``payload`` plus the machine description to ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
