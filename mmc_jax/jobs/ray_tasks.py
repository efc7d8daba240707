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

from mmc_jax.jobs import driver, outcomes, units, worker
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


class _Driver(driver.Driver):
    """Submits each unit once its inputs are done or submitted; waits on the tasks."""

    def __init__(self, ray, job, pending, notify):
        super().__init__(job, pending, notify)
        self.ray = ray
        self.task = ray.remote(run_task)
        self.refs: dict[str, object] = {}

    def start(self) -> None:
        for unit in self.ready(also=self.refs):
            self.waiting.remove(unit)
            deps = [self.refs[i] for i in unit.inputs if i in self.refs]
            self.refs[unit.name] = self.running[unit.name] = self.task.options(
                num_cpus=unit.cpus, num_gpus=unit.gpus, name=unit.name
            ).remote(unit.spec(), self.folders, self.pool, self.root, *deps)

    def collect(self) -> int:
        names = {ref: name for name, ref in self.running.items()}
        ready, _ = self.ray.wait(list(names), num_returns=1, timeout=1.0)
        for ref in ready:
            unit = self.job.units[names[ref]]
            try:
                self.ray.get(ref)
            except Exception as err:  # noqa: BLE001 - Ray wraps the task's error
                cause = getattr(err, "cause", err)
                if isinstance(cause, TaskFailed) and cause.unit != unit.name:
                    del self.running[unit.name]  # an input failed; that one is reported
                    self.blocked.add(unit.name)
                else:
                    failed = isinstance(cause, TaskFailed)
                    self.completed(unit, cause.why if failed else f"Ray: {type(cause).__name__}")
                continue
            self.completed(unit, None)
        return len(ready)

    def stop(self) -> None:
        for ref in self.running.values():
            self.ray.cancel(ref, force=True)
        self.running.clear()
