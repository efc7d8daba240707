"""The ``ray`` executor: a job's units as Ray tasks (``pip install -e ".[ray]"``).

Each unit becomes one task, given its inputs' tasks as arguments, so Ray itself runs the graph:
a task starts when its inputs' tasks have finished, on a node with the CPUs and GPUs the unit
asks for. A task runs its unit as :mod:`mmc_jax.jobs.worker` does for the ``processes``
executor (a process of its own, XLA's thread pool of the driver's size), so results are the
same as on this machine; the workdir must be on a filesystem every node sees. Units marked
``light`` (reports) run in the driver once their inputs are complete.
"""

from __future__ import annotations

import socket
import warnings
from typing import Mapping

from absl import logging

from mmc_jax.jobs import outcomes, units, worker
from mmc_jax.runtime import stopping
from mmc_jax.runtime.errors import InputError


class TaskFailed(Exception):
    """A unit's process failed inside its Ray task."""

    def __init__(self, unit: str, why: str):
        super().__init__(unit, why)
        self.unit, self.why = unit, why


def run_task(spec: dict, folders: Mapping[str, str], pool: int, root: str, *inputs) -> str:
    """Body of a unit's Ray task: runs the unit in a process of its own, raises
    :class:`TaskFailed` unless it wrote its record. ``inputs``: the input tasks' names, passed
    only so Ray waits for them."""
    del inputs
    unit = units.Unit.of_spec(spec)
    process = worker.launch(unit, folders, None, pool, root)
    code = process.wait()
    if code != 0 or unit.record() is None:
        raise TaskFailed(unit.name, outcomes.why(code) if code else "no record written")
    return unit.name


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(
            "executor 'ray' needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"
        ) from None
    return ray


def connect(ray, execution) -> bool:
    """Joins ``execution.ray_address`` (``auto`` or ``HOST:PORT``) or starts a local Ray
    with ``execution.workers`` CPUs; True when it started one (to shut down after).

    Raises:
      InputError: the address is malformed or unreachable, or no cluster runs (``auto``).
    """
    address = execution.ray_address
    if address and address != "auto":
        host, _, port = address.rpartition(":")
        if not (host and port.isdigit()):
            raise InputError(f"ray_address must be 'auto' or HOST:PORT, got {address!r}")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise InputError(
                f"cannot reach a Ray cluster at {address} ({err.strerror or err}); start one "
                "with `ray start --head` or leave ray_address empty for a local Ray"
            ) from None
    options = {"logging_level": "ERROR", "log_to_driver": False}
    try:
        with warnings.catch_warnings():  # Ray starts its processes by fork; JAX warns of it
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=execution.workers, include_dashboard=False, **options)
    except ConnectionError as err:
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot connect to a Ray cluster at {address!r}: {line}") from None
    return not address


def run(job: units.Job, pending: list, execution, notify) -> None:
    """Runs the ``pending`` units of ``job`` as Ray tasks (see the module's docstring)."""
    ray = _ray()
    started = connect(ray, execution)
    try:
        _Driver(ray, job, pending, notify).run()
    finally:
        if started:
            ray.shutdown()


class _Driver:
    """Submits each unit once its light inputs are complete; waits on the tasks."""

    def __init__(self, ray, job, pending, notify):
        self.ray, self.job, self.notify = ray, job, notify
        self.task = ray.remote(run_task)
        self.remaining = list(pending)
        self.done = {u.name for u in job} - {u.name for u in pending}
        self.failed: dict[str, str] = {}
        self.blocked: set[str] = set()
        self.refs: dict[str, object] = {}
        self.in_flight: dict[object, str] = {}
        self.folders = {u.name: u.folder for u in job}
        self.pool = worker.pool_size()
        self.root = worker.package_root(job)

    def run(self) -> None:
        self.bar = outcomes.progress_bar(self.job, self.remaining)
        try:
            with stopping.requests() as stop:
                while (self.remaining or self.in_flight) and not stop:
                    self._submit()
                    if self.in_flight:
                        self._collect()
                    elif self.remaining and not self._runnable():
                        break  # what is left waits on failed units
        finally:
            for ref in self.in_flight:
                self.ray.cancel(ref, force=True)
            self.bar.close()
        if self.failed:
            raise outcomes.failure(self.failed, self.job)

    def _runnable(self) -> bool:
        return any(not (set(u.inputs) & (set(self.failed) | self.blocked)) for u in self.remaining)

    def _submit(self) -> None:
        for unit in list(self.remaining):
            if set(unit.inputs) & (set(self.failed) | self.blocked):
                self.remaining.remove(unit)
                self.blocked.add(unit.name)
            elif unit.light and all(i in self.done for i in unit.inputs):
                self.remaining.remove(unit)
                inputs = units.input_records(unit, self.folders)
                self._finished(unit, units.run_here(unit, inputs))
            elif not unit.light and all(i in self.done or i in self.refs for i in unit.inputs):
                self.remaining.remove(unit)
                deps = [self.refs[i] for i in unit.inputs if i in self.refs]
                ref = self.task.options(
                    num_cpus=unit.cpus, num_gpus=unit.gpus, name=unit.name
                ).remote(unit.spec(), self.folders, self.pool, self.root, *deps)
                self.refs[unit.name] = ref
                self.in_flight[ref] = unit.name

    def _collect(self) -> None:
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            name = self.in_flight.pop(ref)
            unit = self.job.units[name]
            try:
                self.ray.get(ref)
            except Exception as err:  # noqa: BLE001 - Ray wraps the task's error
                cause = getattr(err, "cause", err)
                if isinstance(cause, TaskFailed) and cause.unit != name:
                    self.blocked.add(name)  # an input failed; that one is reported
                    continue
                self.failed[name] = (
                    cause.why if isinstance(cause, TaskFailed) else (f"Ray: {type(cause).__name__}")
                )
                logging.error(f"unit {name} failed ({self.failed[name]}); log: {unit.log}")
                continue
            self._finished(unit, unit.record())
        self.bar.set_postfix_str(", ".join(self.in_flight.values()) or "-", refresh=False)

    def _finished(self, unit, record) -> None:
        self.done.add(unit.name)
        self.bar.update()
        self.notify(unit, record)
