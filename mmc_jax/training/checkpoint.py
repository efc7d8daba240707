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
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from flax import traverse_util

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


def check_config(workdir, config: dict, ignore: tuple[str, ...] = ()) -> None:
    """Stores ``config`` as ``workdir/config.json`` on first use; later, raises InputError
    listing every field (outside ``ignore``) that differs from the stored one, so a rerun can
    never mix two configs in one workdir."""
    path = pathlib.Path(workdir) / "config.json"
    config = json.loads(json.dumps(config))  # tuples → lists, as stored
    if path.exists():
        stored = json.loads(path.read_text())
        diffs = [d for d in config_differences(stored, config) if d.split(":")[0] not in ignore]
        if diffs:
            raise InputError(
                f"{pathlib.Path(workdir).resolve()} holds a run with a different config "
                f"({'; '.join(diffs)}); rerun with --restart to start over, or use another "
                "--workdir"
            )
    else:
        write_json(path, config)


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

    def __init__(
        self,
        workdir,
        config: dict,
        max_to_keep: int = 3,
        ignore: tuple[str, ...] = (),
        min_interval_s: float = 30.0,
    ):
        self.workdir = pathlib.Path(workdir).resolve()
        self.min_interval_s = min_interval_s
        self._last_save = float("-inf")
        check_config(self.workdir, config, ignore)
        self.manager = ocp.CheckpointManager(
            self.workdir / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

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
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        self._last_save = time.monotonic()
        return True

    def restore(self, state, step: Optional[int] = None):
        """Restores the checkpoint at ``step`` (default: the latest readable one) into the
        structure of ``state``; returns ``(state, meta)``, or ``(state, None)`` when there is
        none.

        A latest checkpoint that cannot be read (corrupt or partly deleted files) is skipped
        with a warning, and the previous one restored: the steps since are recomputed, with
        the same result.

        Raises:
          InputError: the checkpoint was written for another architecture (names or shapes
            differ), or no checkpoint can be read.
        """
        if step is None and self.latest_step is None:
            return state, None
        items = {name: getattr(state, name) for name in STATE_FIELDS}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, items)

        def read(candidate):
            restored = self.manager.restore(
                candidate,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
            return state.replace(**restored.state), restored.meta

        return self._first_readable(step, items, read)

    def restore_variables(self, variables, step: Optional[int] = None) -> dict:
        """Only ``{"params", "batch_stats"}`` of the checkpoint at ``step`` (default: the
        latest readable one, as :meth:`restore`), shaped like ``variables`` (arrays or
        ``jax.ShapeDtypeStruct``): an orbax partial restore that reads neither the optimizer
        state nor the rest of the train state.

        Raises:
          InputError: no checkpoint, one written for another architecture, or none that can
            be read.
        """
        if step is None and self.latest_step is None:
            raise InputError(f"no checkpoint in {self.workdir / 'checkpoints'}")
        wanted = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
            {name: tree for name, tree in wanted.items() if tree},
        )

        def read(candidate):
            with ocp.PyTreeCheckpointer() as checkpointer:
                restored = checkpointer.restore(
                    self.workdir / "checkpoints" / str(candidate) / "state",
                    args=ocp.args.PyTreeRestore(
                        target,
                        ocp.checkpoint_utils.construct_restore_args(target),
                        partial_restore=True,
                    ),
                )
            return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}

        return self._first_readable(step, wanted, read)

    def _first_readable(self, step: Optional[int], items: dict, read):
        """``read(step)`` of the checkpoint at ``step``, or (``None``) of the newest one that
        can be read, warning about the newer ones skipped; ``items`` (``params`` and
        ``batch_stats``, at least) are what the checkpoint must match."""
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        errors = []
        for candidate in steps:
            try:
                mismatch = self._mismatch(candidate, items)
            except Exception as err:  # unreadable metadata: a damaged checkpoint
                errors.append((candidate, _first_line(err)))
                continue
            if mismatch:
                raise InputError(
                    f"checkpoint {self.workdir / 'checkpoints' / str(candidate)} "
                    f"does not match the model ({mismatch})"
                )
            try:
                result = read(candidate)
            except Exception as err:  # orbax/tensorstore raise several types for bad files
                errors.append((candidate, _first_line(err)))
                continue
            for bad, reason in errors:
                warnings.warn(
                    f"checkpoint {self.workdir / 'checkpoints' / str(bad)} cannot be "
                    f"read ({reason}); resuming from step {candidate} instead",
                    stacklevel=3,
                )
            return result
        latest, reason = errors[0]
        raise InputError(
            f"checkpoint {self.workdir / 'checkpoints' / str(latest)} cannot be read ({reason})"
        ) from None

    def _mismatch(self, step: int, items: dict) -> Optional[str]:
        """How the stored parameters and BN statistics differ from the model's in names or
        shapes (read from the checkpoint's metadata), or None when they fit."""
        stored = self.manager.item_metadata(step)["state"]

        def shapes(tree):
            flat = traverse_util.flatten_dict(
                {k: tree[k] for k in ("params", "batch_stats")}, sep="/"
            )
            return {
                path: tuple(flat[path].shape)
                for path in sorted(flat, key=lambda path: path.split("/"))
            }

        have, want = shapes(stored), shapes(items)
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            return "; ".join(
                ([f"missing {', '.join(missing[:3])}"] if missing else [])
                + ([f"unexpected {', '.join(extra[:3])}"] if extra else [])
            )
        for name, shape in want.items():
            if have[name] != shape:
                return f"{name}: checkpoint {have[name]}, model {shape}"
        return None

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
