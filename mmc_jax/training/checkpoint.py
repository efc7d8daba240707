"""Checkpoints of a run with orbax ``CheckpointManager``, and the config stored beside them.

A run's workdir holds ``config.json`` (the config it was started with) and
``checkpoints/<step>/`` (the arrays of the train state plus a JSON of run metadata: epoch
history, elapsed seconds). Orbax writes each checkpoint to a temporary folder and renames it,
so a kill never leaves a half-written latest checkpoint. Restoring uses an abstract target
(shapes and dtypes of a freshly built state), so nothing is materialised twice.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from mmc_jax.errors import InputError
from mmc_jax.io import write_json

#: TrainState fields saved in a checkpoint (``apply_fn`` and ``tx`` are rebuilt from config).
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "key")


def config_differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Fields whose values differ between two (nested) config dicts, as dotted names."""
    out = []
    for name in sorted(set(stored) | set(current)):
        a, b = stored.get(name, "<missing>"), current.get(name, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}: {a!r} -> {b!r}")
    return out


class RunCheckpoints:
    """Save and restore a train state (and JSON metadata) under ``workdir``.

    Args:
      workdir: the run folder.
      config: the run's config as a JSON-serialisable dict; stored as ``config.json`` on
        first use and compared on every later use.
      max_to_keep: checkpoints kept (older ones are deleted).
      ignore: config fields allowed to differ on resume (e.g. evaluation-only settings).
      min_interval_s: unforced saves closer than this to the previous save are skipped, so
        short epochs do not spend their time writing checkpoints. Resuming replays the steps
        since the last save, with the same result.
    """

    def __init__(self, workdir, config: dict, max_to_keep: int = 3,
                 ignore: tuple[str, ...] = (), min_interval_s: float = 30.0):
        self.workdir = pathlib.Path(workdir).resolve()
        self.min_interval_s = min_interval_s
        self._last_save = float("-inf")
        self._check_config(config, ignore)
        self.manager = ocp.CheckpointManager(
            self.workdir / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "meta"))

    def _check_config(self, config: dict, ignore: tuple[str, ...]) -> None:
        path = self.workdir / "config.json"
        if path.exists():
            stored = json.loads(path.read_text())
            diffs = [d for d in config_differences(stored, config)
                     if d.split(":")[0] not in ignore]
            if diffs:
                raise InputError(
                    f"{self.workdir} holds a run with a different config ({'; '.join(diffs)}); "
                    "use another --workdir, or delete that one to start over")
        else:
            write_json(path, config)

    @property
    def latest_step(self) -> Optional[int]:
        """Step of the newest checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, state, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Saves ``state`` (a TrainState) and ``meta`` at ``state.step``, then waits for the
        write to finish (a later kill cannot lose it). Unless ``force``, skips the save when
        the previous one is less than ``min_interval_s`` old; returns whether it saved."""
        if not force and time.monotonic() - self._last_save < self.min_interval_s:
            return False
        step = int(jax.device_get(state.step))
        items = {name: getattr(state, name) for name in STATE_FIELDS}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()
        self._last_save = time.monotonic()
        return True

    def restore(self, state, step: Optional[int] = None):
        """Restores the checkpoint at ``step`` (default: the latest) into the structure of
        ``state``; returns ``(state, meta)``, or ``(state, None)`` when there is none.

        Raises:
          InputError: the checkpoint does not fit the model (architecture mismatch).
        """
        step = self.latest_step if step is None else step
        if step is None:
            return state, None
        items = {name: getattr(state, name) for name in STATE_FIELDS}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, items)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"checkpoint {self.workdir / 'checkpoints' / str(step)} does not "
                             f"match the model ({str(err).splitlines()[0][:200]})") from None
        return state.replace(**restored.state), restored.meta

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
