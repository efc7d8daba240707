"""Work units and jobs: an experiment as a graph of named steps that any process can run.

A :class:`Unit` is a named step: a function (``"package.module:function"``, so any process
can import it), its JSON arguments, the units whose outputs it reads (``inputs``) and the
folder it writes. A unit is *complete* when its folder holds its record (``unit.json``),
written last and atomically, with the fingerprint of its function and arguments: a complete
unit is skipped, a killed one runs again (and resumes from its own checkpoints). A
:class:`Job` is a graph of units without cycles. Each unit is deterministic given its
inputs, so a job's results do not depend on where or in what order its units ran
(:mod:`mmc_jax.jobs.executors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging as std_logging
import pathlib
import time
from typing import Any, Iterator, Mapping, Optional

from mmc_jax.reporting import files
from mmc_jax.runtime import distributed
from mmc_jax.runtime.errors import InputError

#: The record of a complete unit, in its folder.
RECORD = "unit.json"
#: The log of a unit's last run, in its folder.
LOG = "unit.log"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One step of a job.

    Attributes:
      name: unique in its job, e.g. ``"seed_0/cbft"``.
      target: ``"package.module:function"``; the function is called as
        ``function(**kwargs, inputs={name: result})`` (``inputs`` only when the unit has
        inputs) and returns a JSON-serialisable result (a dict; its ``"warnings"``, a list of
        strings, are shown by the driver).
      folder: where the unit writes (its record and log included).
      kwargs: JSON-serialisable arguments.
      inputs: names of the units whose outputs this one reads.
      light: runs in the driver's process whatever the executor (writing reports from its
        inputs' results, where starting a process would cost more than the work).
      cpus, gpus: the resources it asks of a Ray cluster.
      cost: its expected run time relative to the job's other units; the ``processes``
        executor starts the ready unit with the costliest chain of units after it first.
    """

    name: str
    target: str
    folder: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    light: bool = False
    cpus: float = 1.0
    gpus: float = 0.0
    cost: float = 1.0

    def spec(self) -> dict:
        """The unit as JSON (what a worker process is given)."""
        return {
            **dataclasses.asdict(self),
            "kwargs": _plain(self.kwargs),
            "inputs": list(self.inputs),
        }

    @classmethod
    def of_spec(cls, spec: Mapping) -> "Unit":
        """The unit of :meth:`spec`."""
        return cls(**{**spec, "inputs": tuple(spec["inputs"])})

    def fingerprint(self) -> str:
        """A hash of the function and its arguments: a record with another one is stale."""
        text = json.dumps([self.target, _plain(self.kwargs)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def log(self) -> pathlib.Path:
        """The file its runs log to."""
        return pathlib.Path(self.folder) / LOG

    def record(self) -> Optional[dict]:
        """Its record if it is complete (same fingerprint), else None."""
        path = pathlib.Path(self.folder) / RECORD
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if record.get("fingerprint") == self.fingerprint() else None


def _plain(value):
    """``value`` as JSON gives it back (tuples become lists), so every process sees the same."""
    return json.loads(json.dumps(value))


class Job:
    """Units forming a graph without cycles, kept in an order where inputs come first.

    Raises:
      ValueError: two units with one name or one folder, an input that is not a unit of
        the job, or a cycle.
    """

    def __init__(self, units):
        units = list(units)
        by_name = {u.name: u for u in units}
        if len(by_name) != len(units):
            raise ValueError(f"unit names repeat: {[u.name for u in units]}")
        folders = [str(pathlib.Path(u.folder).resolve()) for u in units]
        if len(set(folders)) != len(folders):
            raise ValueError("two units share a folder")
        for u in units:
            missing = [i for i in u.inputs if i not in by_name]
            if missing:
                raise ValueError(f"unit {u.name!r} reads unknown unit(s) {missing}")
        order: list[Unit] = []
        state: dict[str, str] = {}

        def visit(unit, chain):
            if state.get(unit.name) == "done":
                return
            if state.get(unit.name) == "open":
                raise ValueError(f"units form a cycle: {' → '.join((*chain, unit.name))}")
            state[unit.name] = "open"
            for name in unit.inputs:
                visit(by_name[name], (*chain, unit.name))
            state[unit.name] = "done"
            order.append(unit)

        for unit in units:
            visit(unit, ())
        self.units: dict[str, Unit] = {u.name: u for u in order}

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units.values())

    def pending(self) -> list[Unit]:
        """The units without a current record, inputs first."""
        return [u for u in self if u.record() is None]

    def chain_costs(self) -> dict[str, float]:
        """Per unit, the largest sum of ``cost`` along a chain from it to the job's end (the
        unit's own included): list scheduling by this starts the units that hold up the
        end of the job first."""
        after: dict[str, list[str]] = {name: [] for name in self.units}
        for unit in self:
            for name in unit.inputs:
                after[name].append(unit.name)
        out: dict[str, float] = {}
        for unit in reversed(list(self)):
            out[unit.name] = unit.cost + max((out[n] for n in after[unit.name]), default=0.0)
        return out

    def critical_path(self, seconds: Mapping[str, float]) -> float:
        """The longest chain of ``seconds`` (per unit) through the graph: no executor can
        finish the job sooner."""
        finish: dict[str, float] = {}
        for unit in self:
            start = max((finish[i] for i in unit.inputs), default=0.0)
            finish[unit.name] = start + seconds.get(unit.name, 0.0)
        return max(finish.values(), default=0.0)


def prefixed(units, prefix: str, strip: str = "") -> list[Unit]:
    """``units`` renamed ``prefix + name`` (their inputs too), e.g. to merge the jobs of a
    sweep's points into one; with ``strip``, only the units named ``strip...``, with that
    taken off first. Fingerprints do not change (they do not include the name)."""

    def name(n: str) -> str:
        return prefix + n.removeprefix(strip)

    return [
        dataclasses.replace(u, name=name(u.name), inputs=tuple(name(i) for i in u.inputs))
        for u in units
        if u.name.startswith(strip)
    ]


def input_records(unit: Unit, folders: Mapping[str, str]) -> dict:
    """The results of ``unit``'s inputs, read from their records (``folders``: name →
    folder of every unit of the job).

    Raises:
      InputError: an input is not complete.
    """
    out = {}
    for name in unit.inputs:
        path = pathlib.Path(folders[name]) / RECORD
        try:
            out[name] = json.loads(path.read_text())["result"]
        except (OSError, ValueError, KeyError):
            raise InputError(f"unit {unit.name!r}: its input {name!r} has no record") from None
    return out


def run_here(unit: Unit, inputs: Mapping[str, Any], log: bool = True) -> dict:
    """Runs ``unit`` in this process with its ``inputs``' results (logging to its log file as
    well, with ``log``), and writes its record. Returns the record: ``{"unit",
    "fingerprint", "result", "seconds"}``."""
    module, _, name = unit.target.partition(":")
    function = getattr(importlib.import_module(module), name)
    kwargs = _plain(dict(unit.kwargs))
    if unit.inputs:
        kwargs["inputs"] = dict(inputs)
    folder = pathlib.Path(unit.folder)
    start = time.perf_counter()
    # In a run over several processes, process 0 logs the unit; the others log to their own file.
    with _logging_to(unit.log) if log and distributed.is_main() else contextlib.nullcontext():
        result = function(**kwargs)
    record = {
        "unit": unit.name,
        "fingerprint": unit.fingerprint(),
        "result": _plain(result),
        "seconds": round(time.perf_counter() - start, 2),
    }
    files.write_json(folder / RECORD, record)
    return record


@contextlib.contextmanager
def _logging_to(path: pathlib.Path):
    """Python (and absl) log records also go to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = std_logging.FileHandler(path, mode="a")
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = std_logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
