"""What the benchmark scripts share: runtime setup and the command line, a description of the
machine, and the JSON output."""

from __future__ import annotations

import argparse
import json
import pathlib
import platform

import jax

from mmc_jax import runtime

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """Sets up the runtime as the entry points do (host allocator, compilation cache) and
    returns an argument parser described by the script's docstring, with ``--quick``."""
    runtime.tune_host_allocator()
    runtime.enable_compilation_cache()
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    out.add_argument("--quick", action="store_true", help=quick_help)
    return out


def machine() -> str:
    """The accelerator (kind × count, backend), the host processor and the JAX version."""
    return (
        f"{jax.devices()[0].device_kind} ×{jax.device_count()} ({jax.default_backend()}), "
        f"{platform.processor() or platform.machine()}, jax {jax.__version__}"
    )


def save(name: str, payload: dict) -> pathlib.Path:
    """Writes ``payload`` plus the machine description to ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
