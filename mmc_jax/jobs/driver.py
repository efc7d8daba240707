"""The driver loop shared by the executors that run units away from the driver (``processes``
and ``ray``): which units wait, which run, which are done, failed or blocked by a failed
input; light units (reports) run here as soon as their inputs are complete; one progress bar;
a stop request (SIGINT/SIGTERM) ends the loop and stops what runs. An executor says only how
a unit starts, how finished ones are collected and how running ones are stopped."""

from __future__ import annotations

import time

from absl import logging

from mmc_jax.jobs import units as units_lib
from mmc_jax.jobs import worker
from mmc_jax.jobs.outcomes import failure, progress_bar
from mmc_jax.runtime import stopping


class Driver:
    """Runs ``pending`` units of ``job``; ``notify(unit, record)`` as each completes.

    Subclasses implement :meth:`start` (start the units that can start), :meth:`collect`
    (report finished ones through :meth:`completed`; the number reported), :meth:`stop` (stop
    the running ones) and keep :attr:`running` (name → handle) up to date.
    """

    #: Seconds between looks when nothing finished.
    POLL_SECONDS = 0.1

    def __init__(self, job: units_lib.Job, pending: list, notify):
        self.job, self.notify = job, notify
        self.waiting = list(pending)
        self.done = {u.name for u in job} - {u.name for u in pending}
        self.failed: dict[str, str] = {}
        self.blocked: set[str] = set()
        self.running: dict[str, object] = {}
        self.folders = {u.name: u.folder for u in job}
        self.pool = worker.pool_size()
        self.root = worker.package_root(job)
        self.priority = job.chain_costs()

    def run(self) -> None:
        """The loop; raises :class:`~mmc_jax.jobs.outcomes.UnitFailed` when units failed."""
        self.bar = progress_bar(self.job, self.waiting)
        try:
            with stopping.requests() as stop:
                while (self.waiting or self.running) and not stop:
                    self._drop_blocked()
                    self._run_light()
                    self.start()
                    collected = self.collect()
                    self.bar.set_postfix_str(", ".join(self.running) or "-", refresh=False)
                    if not collected:
                        time.sleep(self.POLL_SECONDS)
        finally:
            if self.running:
                self.stop()
            self.bar.close()
        if self.failed:
            raise failure(self.failed, self.job)

    def ready(self, also=()) -> list:
        """Waiting heavy units whose inputs are done (or in ``also``), longest chain first."""
        ready = [
            u
            for u in self.waiting
            if not u.light and all(i in self.done or i in also for i in u.inputs)
        ]
        return sorted(ready, key=lambda u: -self.priority[u.name])

    def completed(self, unit: units_lib.Unit, why: str | None) -> None:
        """``unit`` finished elsewhere: done when it wrote its record, else failed (``why``)."""
        self.running.pop(unit.name, None)
        record = unit.record() if why is None else None
        if record is None:
            self.failed[unit.name] = why or "no record written"
            logging.error(f"unit {unit.name} failed ({self.failed[unit.name]}); log: {unit.log}")
        else:
            self._finished(unit, record)

    def start(self) -> None:
        raise NotImplementedError

    def collect(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _drop_blocked(self) -> None:
        """Units downstream of a failed unit never run."""
        lost = set(self.failed) | self.blocked
        for unit in list(self.waiting):
            if lost & set(unit.inputs):
                self.waiting.remove(unit)
                self.blocked.add(unit.name)
                lost.add(unit.name)

    def _run_light(self) -> None:
        for unit in list(self.waiting):
            if unit.light and all(i in self.done for i in unit.inputs):
                self.waiting.remove(unit)
                inputs = units_lib.input_records(unit, self.folders)
                self._finished(unit, units_lib.run_here(unit, inputs))

    def _finished(self, unit, record) -> None:
        self.done.add(unit.name)
        self.bar.update()
        self.notify(unit, record)
