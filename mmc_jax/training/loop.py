"""``train_and_evaluate``: train a model on (partly) cued data, resumably, and evaluate it
on the four counterfactual conditions.

Rerunning with the same config and workdir resumes from the latest checkpoint and ends with
the same parameters as an uninterrupted run: the batch order depends only on
``(seed, epoch)``, the PRNG key is part of the state, and SIGINT/SIGTERM save a checkpoint at
the current step before exiting.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from mmc_jax import data
from mmc_jax.metrics import evaluate
from mmc_jax.reporting import tensorboard
from mmc_jax.reporting.files import write_json
from mmc_jax.runtime import parallel
from mmc_jax.runtime.errors import InputError
from mmc_jax.runtime.stopping import Requests, requests
from mmc_jax.training import diagnosis
from mmc_jax.training.build import create_model, create_state, load_data
from mmc_jax.training.checkpoint import RunCheckpoints
from mmc_jax.training.config import AUTO, TrainConfig
from mmc_jax.training.saved_model import DATA_SHAPES, check_compatible, load_model
from mmc_jax.training.state import TrainState
from mmc_jax.training.steps import train_step


class NonFiniteLoss(InputError):
    """The training loss became NaN or infinite (usually a learning rate that is too high)."""


def init_from(state: TrainState, config, folder) -> TrainState:
    """``state`` starting from the variables of the model in ``folder`` (the paper code's
    ``--use_pretrained``: θ_C trained from θ_NC), with a fresh optimizer state.

    Raises:
      InputError: no model there, or one of another architecture or data.
    """
    _, variables, source = load_model(folder)
    check_compatible(source, config, f"init_from model {folder}", "this run")
    params = jax.tree.map(jnp.asarray, variables["params"])
    return state.replace(
        params=params, batch_stats=variables.get("batch_stats", {}), opt_state=state.tx.init(params)
    )


def train_and_evaluate(
    config,
    workdir: str,
    *,
    progress: bool = True,
    datasets=None,
    epoch_hook=None,
    keep_last_batch: bool = False,
) -> dict[str, Any]:
    """Trains (or resumes) the model of ``config`` in ``workdir`` and evaluates it.

    With ``config.model.init_from`` (a folder holding a model, see ``training.load_model``)
    the run starts from that model's variables instead of a fresh initialisation. ``datasets``
    (``(train, test)``) replaces the config's data, e.g. a subset of it. ``epoch_hook(state,
    record) -> record``, called after each epoch's record (and its clean test accuracy), may
    add to it, and end training early by returning it with ``"stop": True`` (the result
    then has ``stopped_at_epoch``).
    ``keep_last_batch``: each epoch ends with the smaller batch of the samples left over, as
    PyTorch's loaders do (default: dropped, so every step has one shape).

    Returns:
      ``{"state", "result", "history"}``: the final TrainState, the ``results.json`` dict of
      the api (dataset, model, cue_proportion, epochs, seconds, test per condition; with a
      cue, the ``diagnosis`` of :func:`mmc_jax.training.diagnosis.diagnose`) and the per-epoch
      metrics.
    """
    config = TrainConfig.of(config)
    _require_cue_proportion(config)
    train, test = load_data(config) if datasets is None else datasets
    model = create_model(config, train.num_classes)
    iterator = _epoch_iterator(config, train, keep_last_batch)
    state = create_state(config, model, train.image_shape, iterator.steps_per_epoch)
    if config.model.init_from:
        state = init_from(state, config, config.model.init_from)
    eval_key = jax.random.PRNGKey(config.seed + 1)

    with RunCheckpoints(workdir, config.to_dict(), config.checkpoints_to_keep) as checkpoints:
        _write_data_shapes(checkpoints.workdir, train)
        state, meta = _train(
            config, state, checkpoints, iterator, train.cue, test, eval_key, progress, epoch_hook
        )

    test_metrics = evaluate(
        state.apply_fn, state.variables, test, eval_key, batch_size=config.eval_batch_size
    )
    result = _result(config, train, test_metrics, meta)
    return {"state": state, "result": result, "history": meta["history"]}


def _require_cue_proportion(config: TrainConfig) -> None:
    """Raises InputError when the cue proportion is still ``"auto"``: choosing it is the
    calibration's work, done before training."""
    if config.data.cue_proportion == AUTO:
        raise InputError(
            "cue_proportion 'auto' is chosen by mmc_jax.training.calibration (the entry "
            "points run it first); train_and_evaluate needs a number"
        )


def _epoch_iterator(config: TrainConfig, train, keep_last_batch: bool = False):
    """The training batches: images, labels and whether each example carries the cue (on
    ``cue_proportion`` of each class), in an order set by ``(seed, epoch)`` alone."""
    mask = data.cue_mask(train.labels, config.data.cue_proportion)
    return data.EpochIterator(
        {"images": train.images, "labels": train.labels, "cue": mask},
        batch_size=config.optim.batch_size,
        seed=config.seed,
        drop_remainder=not keep_last_batch,
    )


def _write_data_shapes(workdir, train) -> None:
    """Records the number of classes and the image shape beside the checkpoints, so that a
    saved model can be rebuilt without loading its data (``training.load_model``)."""
    write_json(
        workdir / DATA_SHAPES,
        {
            "num_classes": int(train.num_classes),
            "image_shape": [int(d) for d in train.image_shape],
        },
    )


def _result(config: TrainConfig, train, test_metrics: dict, meta: dict) -> dict[str, Any]:
    """The ``results.json`` dict of a training run (see :func:`train_and_evaluate`)."""
    result = {
        "dataset": train.name,
        "num_classes": train.num_classes,
        "model": config.model.name,
        "cue_proportion": config.data.cue_proportion,
        "epochs": config.optim.epochs,
        "seconds": round(meta["seconds"], 2),
        "test": test_metrics,
    }
    if "stopped_at_epoch" in meta:
        result["stopped_at_epoch"] = meta["stopped_at_epoch"]
    if config.data.cue_proportion:
        result["diagnosis"] = diagnosis.diagnose(
            {"cue_model": {"test": test_metrics}},
            config.data.cue_proportion,
            config.optim.weight_decay,
            train.num_classes,
        )
    return result


def _train(config, state, checkpoints, iterator, cue, test, eval_key, progress, epoch_hook=None):
    """Trains with a clean-test evaluation every ``config.eval_every_epochs`` epochs and
    after the last, then ``epoch_hook``; returns ``(state, meta)``."""
    step_fn = jax.jit(functools.partial(train_step, cue=cue), donate_argnums=0)

    every, epochs = config.eval_every_epochs, config.optim.epochs

    def on_epoch_end(state, record):
        if not record["epoch"] % every or record["epoch"] == epochs:
            clean = evaluate(
                state.apply_fn,
                state.variables,
                test,
                eval_key,
                conditions=("nocue",),
                batch_size=config.eval_batch_size,
            )["nocue"]
            record = {**record, "test_nocue_acc": clean["acc"], "test_nocue_loss": clean["loss"]}
        return record if epoch_hook is None else epoch_hook(state, record)

    return run_epochs(
        state, step_fn, iterator, checkpoints, epochs, on_epoch_end, progress=progress, desc="train"
    )


def run_epochs(
    state,
    step_fn,
    iterator,
    checkpoints: RunCheckpoints,
    epochs: int,
    on_epoch_end=None,
    *,
    progress: bool = True,
    desc: str = "train",
    mesh=None,
    constants: tuple = (),
):
    """The resumable epoch loop shared by every kind of training.

    Restores the latest checkpoint, runs ``step_fn(state, batch, *constants) -> (state,
    metrics)`` over the iterator's batches (resuming mid-epoch at ``state.step``), and after
    each epoch records the mean ``metrics`` (``train_<name>``), passes the record through
    ``on_epoch_end(state, record)`` and checkpoints (at most every
    ``checkpoints.min_interval_s``, and always after the last epoch). A record that comes
    back with ``"stop": True`` ends training there (checkpointed, ``meta["stopped_at_epoch"]``
    set; a rerun returns at once). ``constants`` (e.g. CBFT's anchor θ_C) reach the step as
    arguments rather than as values baked into its compiled program, so another θ_C reuses
    the program.

    Data-parallel over ``mesh`` (default: every local device, see
    :mod:`mmc_jax.runtime.parallel`): the state is replicated and every batch split along its
    first axis. TensorBoard event files go to ``<checkpoints' workdir>/tensorboard``
    (:mod:`mmc_jax.reporting.tensorboard`): every epoch's record under ``epoch/``, the first step's
    metrics and every ``tensorboard.STEP_EVERY`` steps' under ``step/``.

    SIGINT/SIGTERM (:mod:`mmc_jax.runtime.stopping`) end the loop at the next step boundary: the
    state is checkpointed there, with the unfinished epoch's running metric sums in the meta,
    and :class:`~mmc_jax.runtime.stopping.Interrupted` is raised (``stopped at epoch E step S; rerun
    the same command to continue``). A rerun restores both, so the epoch's mean metrics, the
    history and the parameters are those of an uninterrupted run. A signal during an epoch's
    last step or its ``on_epoch_end`` stops after that epoch's record is checkpointed.
    ``meta["seconds"]`` adds up the time spent in the epochs over all runs.

    Returns:
      ``(state, meta)`` with ``meta = {"history": [per-epoch records], "seconds": float}``.
    """
    mesh = parallel.data_mesh() if mesh is None else mesh
    state, meta, constants = _restored(checkpoints, state, constants, mesh)
    spe, step = iterator.steps_per_epoch, int(state.step)
    sums = _EpochSums.resumed(meta.pop(_PARTIAL, None), step)
    if step:
        logging.info(f"resuming from step {step} (epoch {step // spe})")
    # A run that ended early (``"stop"``) stays ended.
    first = epochs if "stopped_at_epoch" in meta else step // spe
    with (
        requests() as stop,
        _progress_bar(epochs * spe, step, desc, progress) as bar,
        tensorboard.open_log(checkpoints.workdir) as log,
    ):
        run = _EpochRun(
            step_fn,
            constants,
            iterator,
            mesh,
            checkpoints,
            epochs,
            on_epoch_end,
            meta,
            stop,
            bar,
            log,
        )
        for epoch in range(first, epochs):
            start = time.perf_counter()
            state, step = run.train(state, step, epoch, sums, start)
            stop_early = run.end(state, step, epoch, sums, start)
            sums = _EpochSums()
            if stop_early:
                break
    return parallel.local(state), meta


def _restored(checkpoints: RunCheckpoints, state, constants: tuple, mesh):
    """``(state, meta, constants)`` to start the loop from: the latest checkpoint's state and
    meta (none: ``state`` and a fresh meta), state and constants replicated over ``mesh``."""
    state, meta = checkpoints.restore(state)
    state = parallel.replicate(state, mesh)
    constants = parallel.replicate(tuple(constants), mesh)
    return state, meta or {"history": [], "seconds": 0.0}, constants


def _progress_bar(total: int, initial: int, desc: str, progress: bool) -> tqdm:
    """The loop's progress bar over steps (hidden unless ``progress``)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )


#: The meta key of an unfinished epoch's running metric sums, saved when a stop ends it.
_PARTIAL = "partial_epoch"


@dataclasses.dataclass
class _EpochSums:
    """The running sums of the current epoch's step metrics over ``count`` steps, and per
    metric the first step (1-based) at which it was NaN or infinite (0: never); both kept on
    device by :func:`_accumulate`, so the loop never waits for the host."""

    sums: Any = None
    first_bad: Any = None
    count: int = 0

    @classmethod
    def resumed(cls, partial, step: int) -> _EpochSums:
        """The sums to continue the epoch of a checkpoint at ``step``: those :meth:`saved`
        there, or none (an epoch's end, or an older checkpoint)."""
        if not partial or partial.get("step") != step:
            return cls()
        sums = {
            name: jnp.asarray(saved["value"], dtype=jnp.dtype(saved["dtype"]))
            for name, saved in partial["sums"].items()
        }
        # Saved only after check_finite passed: no metric was NaN or infinite yet.
        first_bad = {name: jnp.zeros((), jnp.int32) for name in sums}
        return cls(sums, first_bad, int(partial["count"]))

    def add(self, metrics, step: int) -> None:
        """Adds the metrics of ``step``."""
        self.sums, self.first_bad = _accumulate(self.sums, self.first_bad, metrics, step)
        self.count += 1

    def means(self) -> dict[str, float]:
        """The epoch's mean metrics, as the record's ``train_<name>``."""
        return {f"train_{k}": float(v) / self.count for k, v in self.sums.items()}

    def check_finite(self) -> None:
        """Raises NonFiniteLoss naming the metric that first became NaN or infinite, and
        when."""
        bad = {name: int(s) for name, s in jax.device_get(self.first_bad or {}).items() if int(s)}
        if bad:
            name, step = min(bad.items(), key=lambda item: item[1])
            raise NonFiniteLoss(
                f"training {name} became NaN or infinite at step {step}; stopped, "
                "and the last good checkpoint is kept (lower the learning rate, or "
                "set grad_clip_norm)"
            )

    def saved(self, step: int) -> dict:
        """The sums as JSON, for the meta of a checkpoint at ``step``: each metric's dtype
        and value (a float32 or bfloat16 value is exact as a Python float)."""
        saved = {}
        for name, value in jax.device_get(self.sums).items():
            value = np.asarray(value)
            exact = value.astype(np.float64) if jnp.issubdtype(value.dtype, jnp.floating) else value
            saved[name] = {"dtype": value.dtype.name, "value": exact.tolist()}
        return {"step": step, "count": self.count, "sums": saved}


@jax.jit
def _accumulate(sums, first_bad, metrics, step):
    """Running sums of the step metrics, and per metric the first step (1-based) at which it
    was NaN or infinite (0: never), kept on device so the loop never waits for the host."""
    step = jnp.asarray(step, jnp.int32)
    if sums is None:
        sums = jax.tree.map(jnp.zeros_like, metrics)
        first_bad = jax.tree.map(lambda _: jnp.zeros((), jnp.int32), metrics)
    bad = jax.tree.map(lambda m: ~jnp.all(jnp.isfinite(m)), metrics)
    first_bad = jax.tree.map(lambda f, b: jnp.where((f == 0) & b, step, f), first_bad, bad)
    return jax.tree.map(jnp.add, sums, metrics), first_bad


@dataclasses.dataclass(frozen=True, eq=False)
class _EpochRun:
    """What one call of :func:`run_epochs` trains with, and where it reports: the epoch's
    steps (:meth:`train`) and the epoch's end (:meth:`end`). ``meta`` is the checkpoint
    meta the loop adds to; ``stop`` the SIGINT/SIGTERM requests of the run."""

    step_fn: Callable
    constants: tuple
    iterator: Any
    mesh: Any
    checkpoints: RunCheckpoints
    epochs: int
    on_epoch_end: Optional[Callable]
    meta: dict
    stop: Requests
    bar: tqdm
    log: Any

    def train(self, state, step: int, epoch: int, sums: _EpochSums, start: float):
        """Runs the steps of ``epoch`` from ``step`` on, adding their metrics to ``sums``;
        returns ``(state, step)`` at its end, every metric finite. A stop asked during a step
        that does not end the epoch checkpoints the state there with ``sums`` and raises (one
        during the last step waits for the epoch's record, :meth:`end`)."""
        spe = self.iterator.steps_per_epoch
        for batch in parallel.shard_batches(self.iterator.epoch(epoch, step % spe), self.mesh):
            state, metrics = self.step_fn(state, batch, *self.constants)
            step += 1
            sums.add(metrics, step)
            self.bar.update()
            if step % tensorboard.STEP_EVERY == 0 or step == 1:  # and the very first
                self.log.scalars(step, jax.device_get(metrics), prefix="step/")
            if self.stop and step % spe:
                sums.check_finite()
                self.meta["seconds"] += time.perf_counter() - start
                partial = {**self.meta, _PARTIAL: sums.saved(step)}
                self.checkpoints.save(state, partial, force=True)
                self.stop.raise_if_asked(f"at epoch {epoch + 1} step {step}")
        sums.check_finite()
        return state, step

    def end(self, state, step: int, epoch: int, sums: _EpochSums, start: float) -> bool:
        """Records the finished ``epoch`` (its mean metrics, through ``on_epoch_end``) in the
        history, the TensorBoard log and the progress bar, and checkpoints it (always after
        the last epoch, a stop or an early end); raises a stop asked meanwhile. Returns
        whether the record asked to end training early."""
        record = {"epoch": epoch + 1, "step": step, **sums.means()}
        if self.on_epoch_end is not None:
            record = self.on_epoch_end(state, record)
        stop_early = bool(record.pop("stop", False))
        self.meta["history"].append(record)
        shown = {k: v for k, v in record.items() if k not in ("epoch", "step")}
        self.log.scalars(step, shown, prefix="epoch/")
        self.meta["seconds"] += time.perf_counter() - start
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
        if stop_early:
            self.meta["stopped_at_epoch"] = epoch + 1
        last = epoch == self.epochs - 1
        self.checkpoints.save(state, self.meta, force=last or stop_early or bool(self.stop))
        self.stop.raise_if_asked(f"at epoch {epoch + 1} step {step}")
        return stop_early
