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

import atexit
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
import threading
import time
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
    gloo. At exit the processes leave in order (:func:`shutdown`).

    Raises:
      InputError: the flags are inconsistent, or the processes could not join (one line).
    """
    cluster.check()
    if not cluster.wanted:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A process that dies fails the others' next collective, which they report in one line
    # and exit, rather than the coordination service aborting them with a stack trace.
    jax.config.update("jax_enable_recoverability", True)
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
        with _without_notice(RECOVERABLE_NOTICE):
            jax.distributed.initialize(
                **explicit,
                initialization_timeout=cluster.initialization_timeout_s,
                heartbeat_timeout_seconds=cluster.heartbeat_timeout_s,
            )
    except (RuntimeError, ValueError) as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        where = cluster.coordinator_address or "the detected cluster"
        raise InputError(f"cannot join the processes at {where}: {line}") from None
    atexit.register(shutdown)  # before JAX's own clean-up, which would not wait
    return True


#: What the coordination service prints on process 0 when it starts in recoverable mode.
RECOVERABLE_NOTICE = "Using experimental recoverable task feature"


@contextlib.contextmanager
def _without_notice(notice: str):
    """Standard error (of the C++ runtime too) passes, but for the lines holding ``notice``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no standard error to filter
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(True) if notice.encode() not in line]
            if kept:
                os.write(2, b"".join(kept))


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


def watch(on_lost: Callable[[list[int]], None], every_s: float = 1.0) -> Callable[[], None]:
    """Watches the other processes from a background thread: when the coordination service
    finds one gone (no heartbeat for ``heartbeat_timeout_s``; the coordinator itself
    unreachable), calls ``on_lost(indices)`` once. A run blocked in a barrier or a collective
    with a dead process would otherwise wait for long timeouts. Returns the function that
    stops watching (call it once the processes finished together)."""
    client = _client()
    if jax.process_count() == 1 or client is None or not hasattr(client, "get_live_nodes"):
        return lambda: None
    everyone, me = list(range(jax.process_count())), jax.process_index()
    stopped = threading.Event()

    def run():
        while not stopped.wait(every_s):
            try:
                live = set(client.get_live_nodes(everyone))
            except Exception:  # noqa: BLE001 - the coordinator is gone
                live = {me}
            gone = sorted(set(everyone) - live)
            if gone and not stopped.is_set():
                on_lost(gone)
                return

    threading.Thread(target=run, name="mmc_jax-distributed-watch", daemon=True).start()
    return stopped.set


def _client():
    """The coordination client of ``jax.distributed.initialize`` (None without one)."""
    from jax._src import distributed as state

    return getattr(getattr(state, "global_state", None), "client", None)


def shutdown() -> None:
    """Leaves the run in order: the other processes disconnect first, process 0 (which hosts
    the coordination service) once they did; otherwise a process still disconnecting finds
    the service gone and aborts. Nothing in a single process. Registered to run at exit by
    :func:`initialize`."""
    if not jax.distributed.is_initialized():
        return
    client = _client()
    if is_main() and client is not None and hasattr(client, "get_live_nodes"):
        everyone = list(range(jax.process_count()))
        # Answers once every other process has asked too (a watch) or is gone.
        with contextlib.suppress(Exception):
            while set(client.get_live_nodes(everyone)) - {0}:
                time.sleep(0.05)
    jax.distributed.shutdown()


__all__ = [
    "Cluster",
    "barrier",
    "initialize",
    "is_main",
    "on_main",
    "process_count",
    "shutdown",
    "watch",
]
