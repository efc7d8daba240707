"""One computation over several processes: a TPU pod slice, a multi-node GPU job, a SLURM
allocation, or two local processes for testing.

Every process runs the same command; :func:`initialize` joins them through
``jax.distributed`` (its own cluster detection with ``Cluster(auto=True)``, or an explicit
coordinator), after which ``jax.devices()`` lists every process's devices and
:mod:`mmc_jax.runtime.parallel`'s mesh spans them all. Nothing else changes for the user: each
process reads its share of every global batch, XLA all-reduces the gradients and BatchNorm
statistics over the global batch, checkpoints are written by every process together (orbax),
and files meant for people (results, figures, TensorBoard) by process 0 alone
(:func:`is_main`).

A process that dies takes the others with it: JAX's coordination service notices the missing
heartbeat within ``heartbeat_timeout_s`` and ends the others; rerunning every process resumes
from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import numpy as np

from mmc_jax.runtime.errors import InputError


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process joins the others (command-line flags, not config fields: they differ
    per process and say nothing about what is computed).

    Attributes:
      auto: join with ``jax.distributed.initialize()``'s own detection (SLURM, Open MPI,
        Kubernetes, Cloud TPU).
      coordinator_address: ``HOST:PORT`` of process 0's coordination service (explicit
        start-up, with ``num_processes`` and ``process_id``).
      num_processes: processes in all.
      process_id: this process's index, 0 … ``num_processes`` − 1.
      heartbeat_timeout_s: seconds after which the others give up on a silent process.
      initialization_timeout_s: seconds to wait for every process to join.
    """

    auto: bool = False
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    heartbeat_timeout_s: int = 100
    initialization_timeout_s: int = 300

    @property
    def wanted(self) -> bool:
        """Whether this process is one of several."""
        return self.auto or bool(self.coordinator_address)

    def check(self) -> "Cluster":
        """Raises InputError (one line) for an incomplete or inconsistent explicit start-up."""
        if not self.coordinator_address:
            if self.num_processes or self.process_id >= 0:
                raise InputError(
                    "--num_processes and --process_id need --coordinator_address=HOST:PORT "
                    "(or use --distributed to detect the cluster)"
                )
            return self
        if not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", self.coordinator_address):
            raise InputError(
                f"--coordinator_address must be HOST:PORT, got {self.coordinator_address!r}"
            )
        if self.num_processes < 1:
            raise InputError("--coordinator_address needs --num_processes=N (N ≥ 1)")
        if not 0 <= self.process_id < self.num_processes:
            raise InputError(
                f"--process_id must be in 0..{self.num_processes - 1}, got {self.process_id}"
            )
        return self


def initialize(cluster: Cluster) -> bool:
    """Joins the other processes of ``cluster`` (nothing when it is a single process); returns
    whether it did. Call it before anything touches a device. On CPU, collectives go through
    gloo.

    Raises:
      InputError: the flags are inconsistent, or the processes could not join (one line).
    """
    cluster.check()
    if not cluster.wanted:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = (
        {}
        if cluster.auto and not cluster.coordinator_address
        else {
            "coordinator_address": cluster.coordinator_address,
            "num_processes": cluster.num_processes,
            "process_id": cluster.process_id,
        }
    )
    try:
        jax.distributed.initialize(
            **explicit,
            initialization_timeout=cluster.initialization_timeout_s,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout_s,
        )
    except (RuntimeError, ValueError) as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        where = cluster.coordinator_address or "the detected cluster"
        raise InputError(f"cannot join the processes at {where}: {line}") from None
    return True


def process_count() -> int:
    """How many processes take part (1 without :func:`initialize`)."""
    return jax.process_count()


def is_main() -> bool:
    """Whether this is process 0, the one that writes files (results, figures, TensorBoard,
    configs; orbax writes checkpoints with every process). True in a single process, without
    touching a device."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (nothing in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def on_main(name: str, fn: Callable[..., Any], *args) -> Any:
    """``fn(*args)`` on process 0 alone (file operations on the shared workdir: renames,
    removals), then every process continues with its result (``None``, a bool or an int);
    ``name`` identifies the barrier. In one process, simply ``fn(*args)``."""
    if jax.process_count() == 1:
        return fn(*args)
    from jax.experimental import multihost_utils

    result = fn(*args) if is_main() else None
    if result is not None and not isinstance(result, (bool, int)):
        raise TypeError(f"on_main passes on None, a bool or an int, got {type(result)}")
    kind = 0 if result is None else 1 if isinstance(result, bool) else 2
    sent = multihost_utils.broadcast_one_to_all(np.asarray([kind, int(result or 0)], np.int64))
    barrier(name)
    kind, value = (int(v) for v in np.asarray(sent))
    return None if kind == 0 else bool(value) if kind == 1 else value


__all__ = ["Cluster", "barrier", "initialize", "is_main", "on_main", "process_count"]
