"""Fine-tuning a cue-reliant model θ_C: naive fine-tuning, last-layer retraining (LLRT),
linear probing then fine-tuning (LPFT), and connectivity-based fine-tuning (CBFT).

Data follow the paper's code: ``n_clean`` clean training samples and ``n_cue`` cued ones,
both drawn with replacement (seeded here; the whole clean set, without replacement, when
``n_clean`` is its size); each CBFT iteration pairs one clean batch with one cued batch, so an
epoch is ``ceil(n_clean / batch_size)`` iterations (fewer when the cued set is smaller); naive
fine-tuning iterates the clean set alone.

CBFT comes in two modes:

* ``"code"`` (default, parity with the paper's code): two optimizer steps per iteration
  sharing one momentum buffer — the barrier step, then cross-entropy (+ invariance after
  ``warmup_epochs``) — with the code's schedule (constant for ``warmup_epochs + 1`` epochs,
  then the cosine it would have reached);
* ``"paper"``: one optimizer step on the summed objective CE + barrier + λ·invariance.

The spurious-correlation field's baselines share this skeleton (:mod:`.groups`):
:func:`dfr_finetune` (:mod:`.dfr`), :func:`jtt_finetune` (:mod:`.jtt`) and
:func:`group_dro_finetune` (:mod:`.group_dro`).

Every method trains resumably through ``training.run_epochs`` in its own folder.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax import data, metrics
from mmc_jax.finetune import dfr as dfr_lib
from mmc_jax.finetune import group_dro as group_dro_lib
from mmc_jax.finetune import groups, objectives
from mmc_jax.finetune import jtt as jtt_lib
from mmc_jax.finetune.features import features_of
from mmc_jax.models import layers
from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.runtime.configs import Config, field
from mmc_jax.runtime.errors import InputError
from mmc_jax.training.checkpoint import RunCheckpoints
from mmc_jax.training.config import OptimConfig
from mmc_jax.training.loop import run_epochs
from mmc_jax.training.state import TrainState
from mmc_jax.training.steps import supervised_step

CBFT_MODES = ("code", "paper")
#: When CBFT's CE step lets the cued batch's pass update BatchNorm's running statistics.
CUED_STATISTICS = ("after_warmup", "with_invariance")


#: The paper code's fine-tuning SGD: 20 epochs, batch 256, lr 0.01, cosine per iteration.
FINETUNE_OPTIM = OptimConfig(
    epochs=20, batch_size=256, learning_rate=0.01, momentum=0.9, weight_decay=1e-4
)
#: The paper code's LLRT: 200 epochs, lr 30, no weight decay (batch and momentum as above).
LLRT_OPTIM = FINETUNE_OPTIM.changed(epochs=200, learning_rate=30.0, weight_decay=0.0)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Config):
    """Hyperparameters of one fine-tuning run (defaults: the paper's code).

    Attributes:
      optim: the run's SGD (naive FT, LPFT's fine-tuning and CBFT; cosine per iteration).
      llrt: last-layer retraining's SGD (its learning rate, epochs and weight decay).
      seed: data draws, batch order and random t.
      cbft_mode: ``"code"`` or ``"paper"``.
      barrier_target: the loss the line to θ_C should reach (1.0).
      barrier_weight: weight of the barrier term (1.0); 0 drops it (the paper's Table 3
        ablation "without L_B": in ``"code"`` mode the barrier step is skipped, leaving one
        optimizer step per iteration).
      t_dist: distribution of t (``"clipped_normal"``: the code; ``"truncated_normal"``).
      invariance_weight: λ (1.0).
      normalize_means: L2-normalized class means in the invariance loss (the code).
      warmup_epochs: epochs without the invariance term (1, the code).
      cued_statistics: when the cued batch's train-mode pass of the CE step updates the
        BatchNorm running statistics: ``"after_warmup"`` (the code: every iteration after
        warm-up, also with λ = 0, so ``cbft_no_invariance``'s test-time statistics mix cued
        batches in) or ``"with_invariance"`` (only while the invariance term counts).
      jtt_id_epochs, jtt_upweight: JTT's identification epochs (0: θ_C itself, the ERM model
        JTT's first stage trains) and λ_up (:mod:`.jtt`).
      dro_step_size, dro_adjustment: Group DRO's η and generalization adjustment C
        (:mod:`.group_dro`).
      dfr_c, dfr_subsets: DFR's inverse L1 strength and balanced draws (:mod:`.dfr`).
    """

    kind: ClassVar[str] = "fine-tuning"

    optim: OptimConfig = FINETUNE_OPTIM
    llrt: OptimConfig = LLRT_OPTIM
    seed: int = field(0, bounds="non_negative")
    cbft_mode: str = field("code", choices=CBFT_MODES, label="CBFT mode")
    barrier_target: float = field(1.0, bounds="positive")
    barrier_weight: float = field(1.0, bounds="non_negative")
    t_dist: str = field("clipped_normal", choices=objectives.T_DISTRIBUTIONS)
    invariance_weight: float = field(1.0, bounds="non_negative")
    normalize_means: bool = True
    warmup_epochs: int = field(1, bounds="non_negative")
    cued_statistics: str = field("after_warmup", choices=CUED_STATISTICS)
    jtt_id_epochs: int = field(0, bounds="non_negative")
    jtt_upweight: int = field(20, bounds="count")
    dro_step_size: float = field(0.01, bounds="positive")
    dro_adjustment: float = field(0.0, bounds="non_negative")
    dfr_c: float = field(1.0, bounds="positive")
    dfr_subsets: int = field(10, bounds="count")


def draw_subsets(train: data.Dataset, n_clean: int, n_cue: int, seed: int):
    """Indices of the clean and the cued fine-tuning sets, drawn with replacement as the
    paper's code draws them; ``n_clean`` equal to the training set's size is the whole set,
    each image once (in a seeded order), as the code's full clean set."""
    if not 1 <= n_clean <= len(train):
        raise InputError(f"n_clean must be in [1, {len(train)}], got {n_clean}")
    if n_cue < 1:
        raise InputError(f"n_cue must be >= 1, got {n_cue}")
    rng = np.random.default_rng([seed, 17])
    if n_clean == len(train):
        clean = rng.permutation(len(train))
    else:
        clean = rng.integers(0, len(train), n_clean)
    return clean, rng.integers(0, len(train), n_cue)


@dataclasses.dataclass(frozen=True)
class PairedIterator:
    """One clean batch zipped with one cued batch per iteration; epochs end with the clean
    set, like the paper code's ``zip`` of two loaders."""

    clean: data.EpochIterator
    cued: data.EpochIterator

    @property
    def steps_per_epoch(self) -> int:
        """Iterations per epoch."""
        return min(self.clean.steps_per_epoch, self.cued.steps_per_epoch)

    def epoch(self, epoch: int, start_step: int = 0):
        """Batches ``{"images", "labels", "cue_images", "cue_labels"}`` (and ``"cue_flags"``
        when D_C is partly cued) from ``start_step``."""
        for clean, cued in zip(
            self.clean.epoch(epoch, start_step), self.cued.epoch(epoch, start_step)
        ):
            batch = {
                "images": clean["images"],
                "labels": clean["labels"],
                "cue_images": cued["images"],
                "cue_labels": cued["labels"],
            }
            if "cue" in cued:
                batch["cue_flags"] = cued["cue"]
            yield batch


def paired_iterator(
    train: data.Dataset,
    clean_index,
    cue_index,
    batch_size: int,
    seed: int,
    cue_proportion: float = 1.0,
):
    """The :class:`PairedIterator` over the drawn subsets (the last partial batch kept);
    the cued set carries the cue on ``cue_proportion`` of each class (``groups.cued_flags``)."""
    clean = data.EpochIterator(
        {"images": train.images[clean_index], "labels": train.labels[clean_index]},
        batch_size=batch_size,
        seed=seed,
        drop_remainder=False,
    )
    cued = {"images": train.images[cue_index], "labels": train.labels[cue_index]}
    if data.check_proportion(cue_proportion) < 1.0:
        cued["cue"] = groups.cued_flags(train, cue_index, cue_proportion)
    cued = data.EpochIterator(cued, batch_size=batch_size, seed=seed + 1, drop_remainder=False)
    return PairedIterator(clean, cued)


def paired_batches(cue, batch: Mapping[str, jax.Array]):
    """The model inputs of one iteration: the clean batch (cue removed by
    ``data.clean_inputs``; an all-zero top for dominoes) and the cued batch (every image
    carries its label's cue, or those flagged by ``"cue_flags"``)."""
    clean = objectives.Batch(data.clean_inputs(cue, batch["images"]), batch["labels"])
    cued = {"images": batch["cue_images"], "labels": batch["cue_labels"]}
    if "cue_flags" in batch:
        cued["cue"] = batch["cue_flags"]
        cued_x = metrics.cued_inputs(cue, cued)
    else:
        cued_x = cue.add(data.normalize(cued["images"]), cued["labels"])
    return clean, objectives.Batch(cued_x, batch["cue_labels"])


def naive_step(state: TrainState, batch, cue):
    """One SGD step on cross-entropy of the clean batch (cue removed by
    ``data.clean_inputs``)."""
    return supervised_step(state, data.clean_inputs(cue, batch["images"]), batch["labels"])


def cbft_step(
    state: TrainState, batch, epoch_index, anchor, cue, config: FinetuneConfig, num_classes: int
):
    """One CBFT iteration (``state.step`` advances by one in both modes)."""
    clean, cued = paired_batches(cue, batch)
    step = state.step
    key, step_key = jax.random.split(state.key)
    ctx = objectives.Context(state.batch_stats, clean=clean, cued=cued, anchor=anchor, key=step_key)
    barrier = objectives.barrier_loss(state.apply_fn, config.barrier_target, config.t_dist)
    warm = epoch_index >= config.warmup_epochs
    lam = jnp.where(warm, config.invariance_weight, 0.0)
    cued_pass = warm if config.cued_statistics == "after_warmup" else lam != 0
    main = objectives.cross_entropy_invariance_loss(
        state.apply_fn, num_classes, lam, config.normalize_means, cued_pass
    )
    use_barrier = config.barrier_weight > 0
    losses = {}
    if config.cbft_mode == "paper":
        terms = {"barrier": (barrier, config.barrier_weight)} if use_barrier else {}
        total = objectives.weighted_sum(**terms, main=main)
        (_, aux), grads = jax.value_and_grad(total, has_aux=True)(state.params, ctx)
        state = state.apply_gradients(grads, aux["batch_stats"])
        losses = {
            **{k: v for k, v in aux["losses"].items() if k != "main"},
            **aux["terms"]["main"]["losses"],
        }
    else:
        if use_barrier:
            weighted = objectives.weighted_sum(barrier=(barrier, config.barrier_weight))
            (_, b_aux), grads = jax.value_and_grad(weighted, has_aux=True)(state.params, ctx)
            state = state.apply_gradients(grads, b_aux["batch_stats"])
            ctx = ctx._replace(batch_stats=state.batch_stats)
            losses["barrier"] = b_aux["losses"]["barrier"]
        (_, aux), grads = jax.value_and_grad(main, has_aux=True)(state.params, ctx)
        state = state.apply_gradients(grads, aux["batch_stats"])
        losses.update(aux["losses"])
    # Two optimizer updates in "code" mode still count as one iteration.
    return state.replace(step=step + 1, key=key), losses


def _state(apply_fn, variables, lr, config: FinetuneConfig, seed_offset=0):
    """A train state on a *copy* of ``variables`` (the steps donate their state's buffers)."""
    variables = jax.tree.map(jnp.copy, dict(variables))
    tx = config.optim.sgd(lr)
    return TrainState.create(apply_fn, variables, tx, jax.random.PRNGKey(config.seed + seed_offset))


@accepts_nnx
def naive_finetune(
    apply_fn,
    variables,
    iterator: PairedIterator | data.EpochIterator,
    cue,
    config: FinetuneConfig,
    workdir,
    *,
    progress: bool = True,
):
    """Naive fine-tuning: cross-entropy on the clean set, cosine schedule per iteration. It
    uses no cued batch, so an epoch is the clean set's alone (``iterator.clean``), as the
    code iterates its clean loader alone.

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    iterator = iterator.clean if isinstance(iterator, PairedIterator) else iterator
    spe = iterator.steps_per_epoch
    state = _state(apply_fn, variables, config.optim.learning_rates(spe), config)
    step = functools.partial(naive_step, cue=cue)
    state, history = _train("naive_ft", config, state, step, iterator, workdir, progress)
    return state.variables, history


@accepts_nnx(also=("anchor",))
def cbft(
    apply_fn,
    variables,
    anchor: Mapping,
    iterator: PairedIterator,
    cue,
    num_classes: int,
    config: FinetuneConfig,
    workdir,
    *,
    progress: bool = True,
):
    """Connectivity-based fine-tuning from ``variables`` (θ_C) away from ``anchor`` (θ_C).

    An ``nnx.Module`` may stand for ``(apply_fn, variables)``, and one of its architecture
    for ``anchor`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    spe = iterator.steps_per_epoch
    if config.cbft_mode == "code":
        # Two optimizer updates per iteration (one without the barrier step); the code's
        # scheduler starts stepping after the warm-up epoch and the next one, and is stepped
        # once per iteration.
        offset = (config.warmup_epochs + 1) * spe
        schedule = config.optim.learning_rates(spe, hold_steps=offset)
        updates = 2 if config.barrier_weight > 0 else 1
        lr = lambda count: schedule(count // updates)  # noqa: E731
    else:
        lr = config.optim.learning_rates(spe)
    state = _state(apply_fn, variables, lr, config, seed_offset=1)

    def step(state, batch, anchor_params):
        epoch_index = state.step // spe
        return cbft_step(state, batch, epoch_index, anchor_params, cue, config, num_classes)

    state, history = _train(
        "cbft", config, state, step, iterator, workdir, progress, constants=(anchor["params"],)
    )
    return state.variables, history


@accepts_nnx
def llrt(
    apply_fn,
    variables,
    train: data.Dataset,
    clean_index,
    num_classes: int,
    config: FinetuneConfig,
    workdir,
    *,
    head: tuple[str, ...] = ("classifier", "dense"),
    progress: bool = True,
):
    """Last-layer retraining: a fresh linear head on frozen features of the clean set
    (eval-mode BatchNorm), trained with ``config.llrt`` (the code: SGD lr 30, momentum 0.9,
    no weight decay, cosine, 200 epochs).

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    features = features_of(apply_fn, variables, np.asarray(train.images[clean_index]), train.cue)
    labels = np.asarray(train.labels[clean_index])
    iterator = data.EpochIterator(
        {"features": features, "labels": labels},
        batch_size=config.llrt.batch_size,
        seed=config.seed,
        drop_remainder=False,
    )
    spe = iterator.steps_per_epoch
    fan_in = features.shape[1]
    k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed + 2))
    head_params = {
        "kernel": layers.torch_default_init(k1, (fan_in, num_classes)),
        "bias": layers.torch_bias_init(fan_in)(k2, (num_classes,)),
    }
    tx = config.llrt.optimizer(spe)
    state = TrainState.create(
        _linear_apply, {"params": head_params}, tx, jax.random.PRNGKey(config.seed)
    )

    def step(state, batch):
        return supervised_step(state, batch["features"], batch["labels"])

    state, history = _train("llrt", config, state, step, iterator, workdir, progress)
    return _with_head(variables, head, state.params), history


def _linear_apply(variables, x, mutable=False, **kwargs):
    """The linear head as a flax ``apply``: with ``mutable``, also the (empty) updated
    collections."""
    del kwargs
    logits = x @ variables["params"]["kernel"] + variables["params"]["bias"]
    return (logits, {}) if mutable else logits


def _with_head(variables, head: tuple[str, ...], head_params) -> dict:
    """``variables`` with the parameters at ``params/<head...>`` replaced."""
    params = dict(variables["params"])
    node = params
    for name in head[:-1]:
        node[name] = dict(node[name])
        node = node[name]
    node[head[-1]] = dict(head_params)
    return {**variables, "params": params}


#: Each method's name in its progress bar, and the config section with its number of epochs.
_RUNS = {
    "naive_ft": ("naive FT", "optim"),
    "cbft": ("CBFT", "optim"),
    "llrt": ("LLRT", "llrt"),
    "jtt_identify": ("JTT, identification", "optim"),
    "jtt": ("JTT", "optim"),
    "group_dro": ("Group DRO", "optim"),
}


@accepts_nnx
def dfr_finetune(
    apply_fn,
    variables,
    train: data.Dataset,
    clean_index,
    cue_index,
    num_classes: int,
    config: FinetuneConfig,
    *,
    head: tuple[str, ...] = ("classifier", "dense"),
    cue_proportion: float = 1.0,
):
    """Deep Feature Reweighting (:mod:`.dfr`): θ_C with its head retrained on group-balanced
    features; returns ``(variables, {"balanced_samples"})``. ``cue_proportion``: the cued
    set's (``groups.cued_flags``); its samples without the cue join the clean groups.

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    arrays = groups.mixed_arrays(train, clean_index, cue_index, cue_proportion)
    flags, labels = arrays["cue"], arrays["labels"]
    found = features_of(apply_fn, variables, arrays["images"], train.cue, labels=labels, cued=flags)
    kernel, bias, size = dfr_lib.head(
        found[~flags],
        labels[~flags],
        found[flags],
        labels[flags],
        num_classes,
        config.dfr_c,
        config.dfr_subsets,
        config.seed,
    )
    new = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
    return _with_head(variables, head, new), {"balanced_samples": size}


@accepts_nnx
def jtt_finetune(
    apply_fn,
    variables,
    train: data.Dataset,
    clean_index,
    cue_index,
    config: FinetuneConfig,
    workdir,
    *,
    progress: bool = True,
    cue_proportion: float = 1.0,
):
    """Just Train Twice (:mod:`.jtt`): the identification run in ``workdir/identification``,
    then θ_C fine-tuned with its errors upsampled; returns ``(variables, {"errors",
    "clean_errors", "history"})`` (how many of the fine-tuning samples it upweighted, and
    how many of those are clean). ``cue_proportion``: the cued set's (``groups.cued_flags``).

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    upweight = jtt_lib.check_upweight(config.jtt_upweight)
    arrays = groups.mixed_arrays(train, clean_index, cue_index, cue_proportion)
    n_clean, batch = len(clean_index), config.optim.batch_size
    step = jtt_lib.make_step(train.cue)
    identified = variables
    if config.jtt_id_epochs:
        first = config.changed(optim={"epochs": config.jtt_id_epochs})
        iterator = groups.budgeted_iterator(arrays, n_clean, batch, config.seed)
        lr = first.optim.learning_rates(iterator.steps_per_epoch)
        state = _state(apply_fn, variables, lr, first, seed_offset=3)
        identify = pathlib.Path(workdir) / "identification"
        identified = _train("jtt_identify", first, state, step, iterator, identify, progress)[
            0
        ].variables
    wrong = jtt_lib.errors(apply_fn, identified, arrays, train.cue)
    upsampled = jtt_lib.upsampled(arrays, wrong, upweight)
    iterator = groups.budgeted_iterator(upsampled, n_clean, batch, config.seed + 1)
    lr = config.optim.learning_rates(iterator.steps_per_epoch)
    state = _state(apply_fn, variables, lr, config, seed_offset=4)
    state, history = _train("jtt", config, state, step, iterator, workdir, progress)
    clean_errors = int((~arrays["cue"][wrong]).sum())
    return state.variables, {"errors": len(wrong), "clean_errors": clean_errors, "history": history}


@accepts_nnx
def group_dro_finetune(
    apply_fn,
    variables,
    train: data.Dataset,
    clean_index,
    cue_index,
    config: FinetuneConfig,
    workdir,
    *,
    progress: bool = True,
    cue_proportion: float = 1.0,
):
    """Group DRO (:mod:`.group_dro`) from θ_C over the (class, cue) groups; returns
    ``(variables, {"group_weights", "history"})``. ``cue_proportion``: the cued set's
    (``groups.cued_flags``).

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    arrays = groups.mixed_arrays(train, clean_index, cue_index, cue_proportion)
    counts = groups.group_counts(arrays, train.num_classes)
    iterator = groups.budgeted_iterator(
        arrays, len(clean_index), config.optim.batch_size, config.seed
    )
    lr = config.optim.learning_rates(iterator.steps_per_epoch)
    copied = jax.tree.map(jnp.copy, dict(variables))
    state = group_dro_lib.GroupDROState.create(
        apply_fn,
        copied,
        config.optim.sgd(lr),
        jax.random.PRNGKey(config.seed + 5),
        num_groups=len(counts),
    )
    step = group_dro_lib.make_step(train.cue, config.dro_step_size, config.dro_adjustment)
    state, history = _train(
        "group_dro",
        config,
        state,
        step,
        iterator,
        workdir,
        progress,
        constants=(jnp.asarray(counts),),
    )
    weights = np.asarray(jax.device_get(state.group_weights)).round(4).tolist()
    return state.variables, {"group_weights": weights, "history": history}


def _train(
    method: str, config: FinetuneConfig, state, step, iterator, workdir, progress, constants=()
):
    """``step`` compiled (donating its state) and run, resumably, for the method's epochs in
    ``workdir`` (``constants``: see ``training.run_epochs``); returns the final state and the
    per-epoch history."""
    desc, epochs = _RUNS[method]
    with RunCheckpoints(workdir, _settings(method, config)) as ckpt:
        state, meta = run_epochs(
            state,
            jax.jit(step, donate_argnums=0),
            iterator,
            ckpt,
            getattr(config, epochs).epochs,
            progress=progress,
            desc=desc,
            constants=constants,
        )
    return state, meta["history"]


#: Fields added after runs were first stored: a run's stored settings hold them only when
#: they differ from their defaults, so that runs stored before they existed resume.
LATER_FIELDS = (
    "cued_statistics",
    "jtt_id_epochs",
    "jtt_upweight",
    "dro_step_size",
    "dro_adjustment",
    "dfr_c",
    "dfr_subsets",
)


def _settings(method: str, config: FinetuneConfig) -> dict[str, Any]:
    """What a method's run stores as its config (and compares on resume)."""
    defaults = FinetuneConfig()
    values = dataclasses.asdict(config)
    for name in LATER_FIELDS:
        if values[name] == getattr(defaults, name):
            del values[name]
    return {"method": method, **values}
