"""What a run of units reports, whatever the executor: the driver's progress bar, a failed
worker's exit status in words, and the one line that names the failed units and their logs."""

from __future__ import annotations

from typing import Mapping

from tqdm.auto import tqdm


class UnitFailed(Exception):
    """Units of a job failed: one line naming them and their logs (the rest completed)."""


def progress_bar(job, pending: list) -> tqdm:
    """The driver's bar: units complete of all, the running ones beside it."""
    return tqdm(total=len(job), initial=len(job) - len(pending), desc="units", unit="unit")


def failure(failed: Mapping[str, str], job) -> UnitFailed:
    """One line naming the failed units (name → why) and where their logs are."""
    parts = [f"{name} ({why}; log: {job.units[name].log})" for name, why in failed.items()]
    return UnitFailed(
        f"unit{'s' if len(parts) > 1 else ''} failed: {'; '.join(parts)}; the other units "
        "completed, rerun the same command to resume"
    )


def why(returncode: int) -> str:
    """A worker's exit status in words."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    if returncode >= 128:
        return f"stopped by signal {returncode - 128}"
    return f"exit status {returncode}"
