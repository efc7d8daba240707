"""TensorBoard event files beside a run's checkpoints and results, without TensorFlow at run
time (tensorboardX writes them): ``tensorboard --logdir=<workdir>`` shows every run below it.

Training runs log their per-epoch records and, every ``STEP_EVERY`` steps, the step's own
metrics; the analyses log the loss and accuracy along each path (the step is the position on
the path in percent, ``round(100·t)``) and their barriers.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Mapping, Optional

import numpy as np

#: Training steps between two per-step scalars (each costs one device-to-host copy).
STEP_EVERY = 50
#: The folder of a run's event files.
FOLDER = "tensorboard"


class EventLog:
    """Scalars (and figures) for TensorBoard under ``folder``; the file is created on the
    first write, so a run that logs nothing leaves nothing."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self._writer = None

    def _open(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            # Two writers opened in the same second keep separate files, which TensorBoard
            # reads in name order: the suffix sorts them by their creation.
            suffix = f".{time.time_ns():020d}.{os.getpid()}"
            self._writer = SummaryWriter(str(self.folder), flush_secs=30, filename_suffix=suffix)
        return self._writer

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        """One scalar per ``values`` entry, tagged ``prefix + name`` (TensorBoard turns
        spaces into ``_``), at ``step``; entries that are not single numbers are skipped."""
        writer = self._open()
        for name, value in values.items():
            if value is None or isinstance(value, (bool, str)) or np.ndim(value) != 0:
                continue
            writer.add_scalar(f"{prefix}{name}", float(value), int(step))

    def tree(self, step: int, values: Mapping, prefix: str = "") -> None:
        """Every number of a nested mapping, tagged by its keys joined with ``/``."""
        from flax import traverse_util

        self.scalars(step, traverse_util.flatten_dict(dict(values), sep="/"), prefix)

    def figure(self, tag: str, fig, step: int = 0) -> None:
        """A matplotlib figure as an image (the figure stays open)."""
        self._open().add_figure(tag, fig, int(step), close=False)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def path_curves(log: EventLog, name: str, summary: Mapping, ts: Optional[list] = None) -> None:
    """The loss and accuracy along a path (``PathResult.to_json`` layout: ``ts`` and
    ``conditions[c]["loss" | "acc"]``) as ``path/<name>/<c>/<loss|acc>`` at step
    ``round(100·t)``, and its barriers as ``barrier/<name>/<c>/<loss|acc>``."""
    ts = summary["ts"] if ts is None else ts
    for condition, m in summary["conditions"].items():
        for metric in ("loss", "acc"):
            for t, value in zip(ts, m[metric]):
                log.scalars(round(100 * t), {f"path/{name}/{condition}/{metric}": value})
        for metric, value in m.get("barrier", {}).items():
            log.scalars(0, {f"barrier/{name}/{condition}/{metric}": value})


def save_figure(log: EventLog, path, fig) -> pathlib.Path:
    """``path`` as a PNG (``io.save_figure``) and the same figure in ``log``, tagged by the
    file's name."""
    from mmc_jax import io

    log.figure(pathlib.Path(path).stem, fig)
    return io.save_figure(path, fig)


def open_log(workdir) -> EventLog:
    """The event log of the run in ``workdir`` (``workdir/tensorboard``)."""
    return EventLog(pathlib.Path(workdir) / FOLDER)


__all__ = ["FOLDER", "STEP_EVERY", "EventLog", "open_log", "path_curves", "save_figure"]
