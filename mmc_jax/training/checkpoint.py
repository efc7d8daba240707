"""Checkpoints of a run with orbax ``CheckpointManager``, and the config stored beside them.

A run's workdir holds ``config.json`` (the config it was started with) and
``checkpoints/<step>/`` (the arrays of the train state plus a JSON of run metadata: epoch
history, elapsed seconds). Orbax writes each checkpoint to a temporary folder and renames it,
so a kill never leaves a half-written latest checkpoint. Restoring uses an abstract target
(shapes and dtypes of a freshly built state), so nothing is materialised twice.

A save the operating system refuses (disk full, no permission, read-only folder) raises
:class:`~mmc_jax.runtime.errors.WriteError` naming the checkpoint's folder; the temporary folder of
the failed save is removed, so the earlier checkpoints stay the latest ones and restore as
before. Orbax reports such failures in two forms, both converted: an ``OSError`` from its
Python file operations (folders, metadata, JSON, the final rename), and, from tensorstore's
array writes in its background threads, a ``ValueError`` whose message ends with
``[os_error_code='28']``.

The run folder also records its layout version (``layout.json``, :mod:`mmc_jax.reporting.files`)
when the run starts; a folder of a newer layout is refused.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging as std_logging
import os
import pathlib
import re
import shutil
import sys
import threading
import time
import warnings
from collections import deque
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from mmc_jax.reporting.files import LAYOUT_FILE, check_layout, write_json, write_layout
from mmc_jax.runtime import distributed
from mmc_jax.runtime.errors import InputError, WriteError

#: TrainState fields saved in a checkpoint (``apply_fn`` and ``tx`` are rebuilt from config).
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "key")
#: The suffix of the temporary folder orbax writes a checkpoint to before renaming it.
TMP_SUFFIX = ".orbax-checkpoint-tmp"
#: ``errno`` values by which the operating system refuses a write.
REFUSED_WRITES = frozenset(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EFBIG,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EIO,
    )
    if code is not None
)


def state_fields(state) -> tuple[str, ...]:
    """The fields of ``state`` a checkpoint stores: :data:`STATE_FIELDS`, and those a train
    state of a method adds (its class's ``EXTRA_FIELDS``, e.g. Group DRO's group weights)."""
    return STATE_FIELDS + tuple(getattr(type(state), "EXTRA_FIELDS", ()))


def refused_write(err: BaseException) -> Optional[OSError]:
    """The operating-system error behind a failed orbax write, or None when the write failed
    for another reason.

    Looks through ``err``, its causes and contexts (and exception groups) for an ``OSError``
    with one of :data:`REFUSED_WRITES`, or for tensorstore's message form
    ``[os_error_code='28']`` (tensorstore's C++ writes raise ``ValueError``), which becomes an
    ``OSError`` of that code.
    """
    queue, seen = deque([err]), set()
    while queue:
        current = queue.popleft()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, WriteError) and isinstance(current.cause, OSError):
            return current.cause
        if isinstance(current, OSError) and current.errno in REFUSED_WRITES:
            return current
        found = re.search(r"os_error_code='?(\d+)", str(current))
        if found and int(found.group(1)) in REFUSED_WRITES:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        queue.extend([current.__cause__, current.__context__])
        queue.extend(getattr(current, "exceptions", ()))
    return None


class _AbandonedWrites(std_logging.Filter):
    """Drops the reports of a save that failed, other than the exception raised to the
    caller (as WriteError when the OS refused a write): orbax's tracebacks logged from its
    background threads, and asyncio's "exception was never retrieved" about the array writes
    the failed save abandoned, each refused in turn."""

    FOLDER = f"{os.sep}orbax{os.sep}"

    def filter(self, record) -> bool:
        if record.levelno < std_logging.ERROR:
            return True
        if record.name == "asyncio":
            return not (record.exc_info and refused_write(record.exc_info[1]) is not None)
        return self.FOLDER not in record.pathname


_ABANDONED_WRITES = _AbandonedWrites()
#: Set once a save has failed: the writes it abandoned may still report afterwards.
_FAILED = [False]


def _drop_late_callbacks(unraisable) -> None:
    """``sys.unraisablehook`` that drops tensorstore completing an abandoned array write for
    the event loop orbax closed when another write of the same save failed (a
    ``RuntimeError: Event loop is closed`` from ``call_soon_threadsafe``, printed as a
    traceback otherwise), and passes everything else on."""
    err, frames = unraisable.exc_value, _frame_names(unraisable.exc_traceback)
    if not (isinstance(err, RuntimeError) and "call_soon_threadsafe" in frames):
        _drop_late_callbacks.previous(unraisable)


def _frame_names(tb) -> set[str]:
    """The function names of a traceback's frames."""
    names = set()
    while tb is not None:
        names.add(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


@contextlib.contextmanager
def orbax_errors_raised_only():
    """Within the block, orbax's failures reach the caller as exceptions only, not also as
    logged or printed tracebacks or warnings; after a failure this stays so, since the writes
    the failed save abandoned report late (when the run is ending with its one-line error)."""
    loggers = (logging.get_absl_logger(), std_logging.getLogger("asyncio"))
    for logger in loggers:
        logger.addFilter(_ABANDONED_WRITES)
    if sys.unraisablehook is not _drop_late_callbacks:
        _drop_late_callbacks.previous = sys.unraisablehook
        sys.unraisablehook = _drop_late_callbacks
    try:
        yield
    except BaseException:
        _FAILED[0] = True
        # The coroutines of the abandoned writes are never awaited: Python would say so at
        # exit, after the run's one-line error.
        warnings.filterwarnings(
            "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
        )
        raise
    finally:
        if not _FAILED[0]:
            for logger in loggers:
                logger.removeFilter(_ABANDONED_WRITES)
            if sys.unraisablehook is _drop_late_callbacks:
                sys.unraisablehook = _drop_late_callbacks.previous


def release_stranded(threads) -> None:
    """Lets the orbax threads among ``threads`` that still wait for a signal from a step of a
    failed save (the folders it could not create) end without writing: otherwise they wait
    for orbax's timeout (minutes), and Python waits for them before a process exits."""
    try:
        from orbax.checkpoint._src.futures import future, signaling_client

        waiting = future._SignalingThread
        key = future.AwaitableSignalsContract.get_unique_awaitable_singal_key
        client = signaling_client.get_signaling_client()
    except (ImportError, AttributeError):  # another orbax: nothing known to release
        return
    stranded = [t for t in threads if isinstance(t, waiting) and t.is_alive()]
    for thread in stranded:
        thread._cancelled = True  # what it runs once released: nothing
        for signal in getattr(thread, "_receive_signals", ()):
            with contextlib.suppress(Exception):
                client.key_value_set(
                    key(signal, thread._operation_id), "released", allow_overwrite=True
                )
    for thread in stranded:
        threading.Thread.join(thread, timeout=1.0)  # orbax's join raises once cancelled


def discard_unfinished(folder: pathlib.Path, name: str, settle_s: float = 0.0) -> None:
    """Removes what orbax left of an unfinished write of ``folder/name`` (its temporary
    folders), so no half-written checkpoint stays beside the finished ones.

    With ``settle_s`` (after a failed save), keeps removing them until none has reappeared
    for that long (at most 5 s): tensorstore may still be completing array writes the
    failed save abandoned, which create the folders again.
    """
    pattern = f"{glob.escape(name)}{TMP_SUFFIX}*"
    deadline, quiet_since = time.monotonic() + 5.0, None
    while True:
        found = list(folder.glob(pattern))
        for tmp in found:
            shutil.rmtree(tmp, ignore_errors=True)
        now = time.monotonic()
        quiet_since = quiet_since if not found and quiet_since is not None else now
        if now - quiet_since >= settle_s or now > deadline:
            return
        time.sleep(0.02)


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
        check_layout(self.workdir, restart_hint=True)
        if (
            not (self.workdir / "config.json").exists()
            and not (self.workdir / LAYOUT_FILE).exists()
        ):  # a new run: it is written in this version's layout
            write_layout(self.workdir)
        check_config(self.workdir, config, ignore)
        folder = self.workdir / "checkpoints"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(folder, err) from err
        self.manager = ocp.CheckpointManager(
            folder,
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
        the previous one is less than ``min_interval_s`` old; returns whether it saved.

        Raises:
          WriteError: the OS refused a write (disk full, no permission, read-only folder);
            nothing of this save is left, the earlier checkpoints are unchanged.
        """
        if not force and time.monotonic() - self._last_save < self.min_interval_s:
            return False
        step = int(jax.device_get(state.step))
        items = {name: getattr(state, name) for name in state_fields(state)}
        with self._writing(step):
            if distributed.is_main():  # every process saves; process 0 tidies
                discard_unfinished(self.workdir / "checkpoints", str(step))  # of a failed save
            distributed.barrier(f"checkpoint {step}")
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

    @contextlib.contextmanager
    def _writing(self, step: int):
        """Turns a write of checkpoint ``step`` that the OS refuses into WriteError, after
        removing what the failed write left: its temporary folder and, when orbax reported
        the failure only after renaming the checkpoint into place, the checkpoint itself, so
        a save that raises adds no checkpoint."""
        final = self.workdir / "checkpoints" / str(step)
        existed, running = final.exists(), set(threading.enumerate())
        try:
            with orbax_errors_raised_only():
                yield
        except Exception as err:
            cause = refused_write(err)
            self._drain()
            release_stranded(set(threading.enumerate()) - running)
            discard_unfinished(self.workdir / "checkpoints", str(step), settle_s=0.1)
            if not existed:
                shutil.rmtree(final, ignore_errors=True)
            with contextlib.suppress(Exception):  # the steps on disk, the failed one not
                self.manager.reload()
            if cause is None:
                raise
            raise WriteError(self.workdir / "checkpoints" / str(step), cause) from err

    def _drain(self) -> None:
        """Waits for what a failed save still has running (the manager's finalisation and
        its checkpointer's background commit, whose errors were already reported), so it
        neither writes into the folder being tidied nor raises again later."""
        waiters = (self.manager, getattr(self.manager, "_checkpointer", None))
        for waiter in waiters:
            with contextlib.suppress(Exception):
                waiter.wait_until_finished()

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
        items = {name: getattr(state, name) for name in state_fields(state)}
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

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise
            # Another error is on its way out (a refused write, say): it is the one to report.


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
