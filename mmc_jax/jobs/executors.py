"""Where a job's units run: in this process, in worker processes on this machine's cores, or
as Ray tasks on a cluster. Every executor gives the same results (bit for bit): each unit is
deterministic given its inputs, and runs with XLA's thread pool of one fixed size.

- ``inline``: one unit after another in this process.
- ``processes``: each unit in a process of its own (:mod:`mmc_jax.jobs.worker`), started as
  soon as its inputs are complete, at most ``workers`` at a time, each pinned to its share of
  the free cores (a unit that runs alone gets them all). Two demo training processes pinned to
  one core each do 1.25–1.4× the work of one process on two cores.
- ``ray``: each unit a Ray task (``num_cpus``/``num_gpus`` from the unit) whose arguments are
  its inputs' tasks, so Ray schedules the graph; ``ray_address`` joins a running cluster
  (``auto`` or ``HOST:PORT``), else a local Ray starts. The workdir must be on a filesystem
  that every node sees.
- ``auto``: ``processes`` on a CPU-only machine with 2 or more cores, else ``inline`` (one
  process owns the accelerator; in a run over several processes, each is one part of every
  unit's computation).

A unit that fails is named with its log in one line
(:class:`~mmc_jax.jobs.outcomes.UnitFailed`), after the units that do not depend on it have
finished; complete units are kept and a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping

from absl import logging

from mmc_jax.jobs import driver, worker
from mmc_jax.jobs import units as units_lib
from mmc_jax.jobs.outcomes import why
from mmc_jax.runtime.configs import Config, field

#: The executors by name.
EXECUTORS = ("auto", "inline", "processes", "ray")
#: Memory a worker process is assumed to need when capping the number of workers.
WORKER_MEMORY_BYTES = 2 << 30


@dataclasses.dataclass(frozen=True)
class Execution(Config):
    """Where a job's units run (the same results everywhere).

    Attributes:
      executor: one of :data:`EXECUTORS`.
      workers: units at a time for ``processes`` (0: the number of cores, capped by free
        memory), and the CPUs of a local Ray instance.
      ray_address: ``ray``: a cluster to join, ``auto`` or ``HOST:PORT``; empty: start a
        local Ray instance.
    """

    prefix = "config."
    kind = "execution"
    executor: str = field("auto", choices=EXECUTORS)
    workers: int = field(0, bounds="non_negative")
    ray_address: str = ""

    def resolved(self) -> "Execution":
        """``auto`` made concrete for this machine, and the number of workers."""
        executor = self.executor
        if executor == "auto":
            import jax

            cpu_only = jax.default_backend() == "cpu" and jax.process_count() == 1
            executor = "processes" if cpu_only and len(worker.cores()) >= 2 else "inline"
        workers = self.workers or len(worker.cores())
        if executor == "processes":
            workers = _capped_by_memory(workers)
        return self.changed(executor=executor, workers=workers)


def _capped_by_memory(workers: int) -> int:
    """At most as many workers as the free memory holds (one line when it caps them)."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvail"))
    except (OSError, StopIteration):
        return workers
    fits = max(1, free // WORKER_MEMORY_BYTES)
    if fits < workers:
        logging.info(
            f"{workers} workers asked, {fits} run: {free / 2**30:.1f} GiB free, about "
            f"{WORKER_MEMORY_BYTES / 2**30:g} GiB each"
        )
    return min(workers, fits)


OnDone = Callable[[units_lib.Unit, dict], None]


def execute(
    job: units_lib.Job, execution: Execution | None = None, on_done: OnDone | None = None
) -> dict[str, dict]:
    """Runs the units of ``job`` that are not complete, on ``execution``'s executor.

    Args:
      job: the units.
      execution: where they run (default: ``inline``).
      on_done: called in this process as ``on_done(unit, record)`` when a unit completes
        (not for units complete before).

    Returns:
      Every unit's record (``{"unit", "fingerprint", "result", "seconds"}``), by name.

    Raises:
      mmc_jax.jobs.outcomes.UnitFailed: units failed (the others completed; a rerun
        resumes).
      InputError: the executor cannot start (Ray missing or unreachable).
    """
    execution = (execution or Execution(executor="inline")).resolved()
    pending = job.pending()
    records = {u.name: u.record() for u in job if u not in pending}
    notify = _notifier(records, on_done)
    if pending:
        logging.info(
            f"{len(pending)} of {len(job)} units to run ({execution.executor}"
            + (f", {execution.workers} workers)" if execution.executor != "inline" else ")")
        )
    if execution.executor == "inline":
        for unit in pending:
            logging.info(f"unit {unit.name}")
            inputs = {i: records[i]["result"] for i in unit.inputs}
            notify(unit, units_lib.run_here(unit, inputs))
    elif execution.executor == "processes":
        _Processes(job, pending, execution.workers, notify).run()
    else:
        from mmc_jax.jobs import ray_tasks

        ray_tasks.run(job, pending, execution, notify)
    return records


def _notifier(records: dict, on_done: OnDone | None):
    def notify(unit, record):
        records[unit.name] = record
        for warning in (
            record["result"].get("warnings", []) if isinstance(record["result"], dict) else []
        ):
            logging.warning(f"{unit.name}: {warning}")
        if on_done:
            on_done(unit, record)

    return notify


class _Processes(driver.Driver):
    """The ``processes`` executor: ready units to free cores, as they free."""

    def __init__(self, job, pending, workers: int, notify):
        super().__init__(job, pending, notify)
        self.workers = workers
        self.free = worker.cores()
        self.cores: dict[str, list] = {}

    def start(self) -> None:
        ready = self.ready()
        slots = min(len(ready), self.workers - len(self.running), len(self.free))
        for i, unit in enumerate(ready[:slots]):
            share = len(self.free) // (slots - i)
            self.cores[unit.name], self.free = self.free[:share], self.free[share:]
            self.waiting.remove(unit)
            self.running[unit.name] = worker.launch(
                unit, self.folders, self.cores[unit.name], self.pool, self.root
            )

    def collect(self) -> int:
        codes = {name: process.poll() for name, process in self.running.items()}
        ended = [(name, code) for name, code in codes.items() if code is not None]
        for name, code in ended:
            self.free = sorted(self.free + self.cores.pop(name))
            self.completed(self.job.units[name], why(code) if code else None)
        return len(ended)

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Workers still running (the driver was stopped) save and stop: SIGTERM, then
        SIGKILL after ``grace_seconds``."""
        for process in self.running.values():
            process.terminate()
        deadline = time.monotonic() + grace_seconds
        for process in self.running.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - past the grace period
                process.kill()
        self.running.clear()


def summary(job: units_lib.Job, records: Mapping[str, dict], execution: Execution) -> dict:
    """How a job ran, for its results: the executor and workers, the units' run times summed
    (``unit_seconds``) and along the graph's longest chain (``critical_path_seconds``), and
    the ideal wall time on ``workers`` (the larger of the two after dividing the sum by the
    workers). Run times are from the units' last runs (a resumed unit's are its resumption's).
    """
    seconds = {name: float(r.get("seconds", 0.0)) for name, r in records.items() if r}
    total, critical = sum(seconds.values()), job.critical_path(seconds)
    workers = 1 if execution.executor == "inline" else execution.workers
    return {
        "executor": execution.executor,
        "workers": workers,
        "units": len(job),
        "unit_seconds": round(total, 1),
        "critical_path_seconds": round(critical, 1),
        "ideal_seconds": round(max(total / workers, critical), 1),
    }


__all__ = [
    "EXECUTORS",
    "Execution",
    "execute",
    "summary",
]
