"""Where a run's time goes: wall-clock seconds of named phases, and how many of them went to
tracing, lowering and compiling XLA programs (from ``jax.monitoring`` events). For example::

    phases = timing.Phases()
    with phases("θ_C"):
        ...
    phases.to_json()   # {"θ_C": {"seconds": 81.2, "compile_seconds": 6.3}}

The entry points store this in ``results.json`` ("timings") and ``results.md``; the demo
benchmark (``benchmarks/demo_pipeline.py``) reads it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import jax

#: The ``jax.monitoring`` duration events that make up compilation: tracing to a jaxpr,
#: lowering to StableHLO, XLA's compilation (or its retrieval from the persistent cache).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class Phases:
    """Seconds of named phases; a phase entered again adds to its total."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.compile_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Times the block as phase ``name`` (nested phases count in both)."""
        spent = [0.0]

        def listen(event: str, duration: float, **_):
            if event in COMPILE_EVENTS:
                spent[0] += duration

        jax.monitoring.register_event_duration_secs_listener(listen)
        start = time.perf_counter()
        try:
            yield
        finally:
            jax.monitoring.unregister_event_duration_listener(listen)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.compile_seconds[name] = self.compile_seconds.get(name, 0.0) + spent[0]

    def to_json(self) -> dict[str, dict[str, float]]:
        """``{phase: {"seconds", "compile_seconds"}}`` rounded to 0.1 s, in entry order."""
        return {
            name: {"seconds": round(s, 1), "compile_seconds": round(self.compile_seconds[name], 1)}
            for name, s in self.seconds.items()
        }


def markdown(timings: dict[str, dict[str, float]]) -> str:
    """A table of :meth:`Phases.to_json` output."""
    rows = [
        f"| {name} | {t['seconds']:.1f} | {t['compile_seconds']:.1f} |"
        for name, t in timings.items()
    ]
    return "\n".join(["| phase | seconds | of which compiling |", "|---|---|---|", *rows])


__all__ = ["COMPILE_EVENTS", "Phases", "markdown"]
