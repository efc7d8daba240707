"""TensorBoard event files beside a run's checkpoints and results, without TensorFlow at run
time (tensorboardX builds the events): ``tensorboard --logdir=<workdir>`` shows every run below
it.

Training runs log their per-epoch records and, at the first step and every ``STEP_EVERY``
steps, the step's own metrics; the analyses log the loss and accuracy along each path (the
step is the position on the path in percent, ``round(100·t)``) and their barriers.

The events are written unbuffered, in the calling thread, so TensorBoard sees them at once
and a failed write is seen where it happens: tensorboardX's own writer writes from a
background thread, where a failed write would end the thread with a traceback and leave later
writes blocked on a full queue (tensorboardX builds the events, this module writes them).

The event files are a view of a run, not its results: a write the operating system refuses
(disk full, no permission, read-only folder) logs one warning naming the file and the cause,
and the run goes on without events; its checkpoints and results are written (or refused, with
:class:`~mmc_jax.runtime.errors.WriteError`) as usual.
"""

from __future__ import annotations

import os
import pathlib
import socket
import struct
import time
from typing import Mapping, Optional

import numpy as np
from absl import logging

from mmc_jax.runtime import distributed

#: Training steps between two per-step scalars (each costs one device-to-host copy).
STEP_EVERY = 50
#: The folder of a run's event files.
FOLDER = "tensorboard"
#: The event-file format version TensorBoard expects as a file's first event.
VERSION = "brain.Event:2"


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("Q", len(data))
    return (
        header
        + struct.pack("I", masked_crc32c(header))
        + data
        + struct.pack("I", masked_crc32c(data))
    )


class EventLog:
    """Scalars (and figures) for TensorBoard under ``folder``; the file is created on the
    first write, so a run that logs nothing leaves nothing. After a refused write, the log
    warns once and writes nothing more."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.path: Optional[pathlib.Path] = None  # the event file, once created
        self._file = None
        self._failed = False

    def _write(self, summaries) -> None:
        """Appends ``(step, Summary)`` pairs as events (one ``write``); a refused write warns
        and turns the log off."""
        if self._failed or not summaries or not distributed.is_main():
            return
        from tensorboardX.proto import event_pb2

        events = [
            event_pb2.Event(summary=summary, step=int(step), wall_time=time.time())
            for step, summary in summaries
        ]
        try:
            if self._file is None:
                self._file = self._create()
                events.insert(0, event_pb2.Event(wall_time=time.time(), file_version=VERSION))
            data = memoryview(b"".join(_record(e.SerializeToString()) for e in events))
            while data:  # a full disk may take part of a write before refusing the rest
                data = data[self._file.write(data) :]
        except OSError as err:
            self._give_up(err)

    def _create(self):
        """A new event file, named as TensorBoard expects (``events.out.tfevents.*``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # Two logs opened in the same second keep separate files, which TensorBoard reads in
        # name order: the suffix sorts them by their creation.
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{time.time_ns():020d}.{os.getpid()}"
        )
        self.path = self.folder / name
        return open(self.path, "wb", buffering=0)

    def _give_up(self, err: OSError) -> None:
        """Warns once about a refused write and writes no more events."""
        self._failed = True
        reason = err.strerror or str(err) or type(err).__name__
        logging.warning(
            f"TensorBoard events cannot be written to {self.path or self.folder}: {reason}; "
            "the run goes on without them"
        )
        self.close()

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        """One scalar per ``values`` entry, tagged ``prefix + name`` (TensorBoard turns
        spaces into ``_``), at ``step``; entries that are not single numbers are skipped."""
        from tensorboardX.summary import scalar

        self._write(
            [
                (step, scalar(f"{prefix}{name}", float(value)))
                for name, value in values.items()
                if value is not None and not isinstance(value, (bool, str)) and np.ndim(value) == 0
            ]
        )

    def tree(self, step: int, values: Mapping, prefix: str = "") -> None:
        """Every number of a nested mapping, tagged by its keys joined with ``/``."""
        from flax import traverse_util

        self.scalars(step, traverse_util.flatten_dict(dict(values), sep="/"), prefix)

    def figure(self, tag: str, fig, step: int = 0) -> None:
        """A matplotlib figure as an image (the figure stays open)."""
        if self._failed:
            return
        from tensorboardX.summary import image
        from tensorboardX.utils import figure_to_image

        self._write([(step, image(tag, figure_to_image(fig, close=False), dataformats="CHW"))])

    def flush(self) -> None:
        """Nothing to do: every event is written when it is logged."""

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError:
                pass  # unbuffered: nothing was waiting to be written

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
    """``path`` as a PNG (``files.save_figure``) and the same figure in ``log``, tagged by the
    file's name."""
    from mmc_jax.reporting import files

    log.figure(pathlib.Path(path).stem, fig)
    return files.save_figure(path, fig)


def open_log(workdir) -> EventLog:
    """The event log of the run in ``workdir`` (``workdir/tensorboard``)."""
    return EventLog(pathlib.Path(workdir) / FOLDER)


__all__ = ["FOLDER", "STEP_EVERY", "EventLog", "open_log", "path_curves", "save_figure"]
