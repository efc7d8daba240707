"""The typed training config: what data, which model, how to optimise, in three sections.

Experiment configs (``experiments/configs/demo.py``) are ``ml_collections`` ConfigDicts with
the same nested sections (``config.data``, ``config.model``, ``config.optim``);
:meth:`TrainConfig.of` turns one into this frozen, validated form (a
:class:`mmc_jax.runtime.configs.Config`, as every config of the library), and every training
function takes it. A run stores :meth:`TrainConfig.to_dict` as ``config.json``;
runs stored before the sections existed (flat fields) still load (:data:`FLAT_FIELDS`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Union

import optax

from mmc_jax import models
from mmc_jax.data import cues
from mmc_jax.runtime.configs import Config, field
from mmc_jax.training import optim

#: ``data.cue_proportion`` value asking the entry points to calibrate it
#: (:mod:`mmc_jax.training.calibration`).
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Which data, and how much of each class carries the cue.

    Attributes:
      name: ``shapes10`` (embedded), ``cifar10``, ``cifar100``, ``fashion_mnist``,
        ``dominoes`` or ``npz:<path>`` (see :func:`mmc_jax.data.load`).
      data_dir: TFDS data folder for the real datasets (``""``: TFDS's default).
      dominoes_top, dominoes_bottom: the two halves of ``dominoes``.
      seed: seed of the procedural dataset.
      num_train, num_test: > 0 keeps the first samples of each split only.
      cue_proportion: fraction of each class carrying the cue (0: θ_NC), or ``"auto"``.
    """

    prefix: ClassVar[str] = "data."

    name: str = "shapes10"
    data_dir: str = ""
    dominoes_top: str = "fashion_mnist"
    dominoes_bottom: str = "cifar10"
    seed: int = field(0, bounds="non_negative")
    num_train: int = field(0, bounds="non_negative")
    num_test: int = field(0, bounds="non_negative")
    cue_proportion: Union[float, str] = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.cue_proportion != AUTO:
            cues.check_proportion(self.cue_proportion)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Which model: a preset name (or ``"module:factory"``), its width and compute dtype.

    Attributes:
      name: a preset of :data:`mmc_jax.models.PRESETS` or an importable factory.
      width: channel multiplier (0: the preset's).
      dtype: ``"float32"`` or ``"bfloat16"`` (compute; parameters stay float32).
      init_from: a model folder to start from instead of a fresh initialisation (the paper
        code's ``--use_pretrained``).
    """

    prefix: ClassVar[str] = "model."

    name: str = "cnn4"
    width: float = field(0.0, bounds="non_negative")
    dtype: str = field("float32", choices=models.DTYPES)
    init_from: str = ""

    def __post_init__(self):
        models.check_name(self.name)
        super().__post_init__()


@dataclasses.dataclass(frozen=True)
class OptimConfig(Config):
    """SGD as PyTorch applies it (coupled weight decay) and its learning-rate schedule: the
    one optimisation config of every kind of training (θ_C, fine-tuning, the quadratic
    curve's control point).

    Attributes:
      epochs, batch_size: of the run.
      learning_rate, momentum, weight_decay: SGD's.
      schedule: ``constant`` | ``step`` (×``step_factor`` every ``step_every_epochs``) |
        ``cosine``.
      grad_clip_norm: > 0 clips gradients to this global norm.
    """

    prefix: ClassVar[str] = "optim."

    epochs: int = field(12, bounds="count")
    batch_size: int = field(128, bounds="count")
    learning_rate: float = field(0.05, bounds="positive")
    momentum: float = field(0.9, bounds="momentum")
    weight_decay: float = field(5e-3, bounds="non_negative")
    schedule: str = field("cosine", choices=optim.SCHEDULES)
    step_every_epochs: int = field(40, bounds="count")
    step_factor: float = field(0.1, bounds="positive")
    grad_clip_norm: float = field(0.0, bounds="non_negative")

    def learning_rates(self, steps_per_epoch: int, hold_steps: int = 0) -> optax.Schedule:
        """This schedule, for runs of ``steps_per_epoch`` steps an epoch (see
        :func:`mmc_jax.training.optim.schedule` for ``hold_steps``)."""
        return optim.schedule(
            self.schedule,
            self.learning_rate,
            self.epochs * steps_per_epoch,
            steps_per_epoch,
            self.step_every_epochs,
            self.step_factor,
            hold_steps,
        )

    def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
        """SGD with this schedule, for runs of ``steps_per_epoch`` steps an epoch."""
        return self.sgd(self.learning_rates(steps_per_epoch))

    def sgd(self, learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
        """This SGD (momentum, weight decay, clipping) at another ``learning_rate`` or
        schedule (CBFT's code mode steps its schedule once per iteration, not per update)."""
        return optim.sgd(learning_rate, self.momentum, self.weight_decay, self.grad_clip_norm)


#: Where each field of the flat configs stored before the sections existed now lives.
FLAT_FIELDS = {
    "dataset": "data.name",
    "data_dir": "data.data_dir",
    "dominoes_top": "data.dominoes_top",
    "dominoes_bottom": "data.dominoes_bottom",
    "data_seed": "data.seed",
    "num_train": "data.num_train",
    "num_test": "data.num_test",
    "cue_proportion": "data.cue_proportion",
    "model": "model.name",
    "width": "model.width",
    "dtype": "model.dtype",
    "init_from": "model.init_from",
    **{f.name: f"optim.{f.name}" for f in dataclasses.fields(OptimConfig)},
}


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Everything a training run is: data, model, optimisation, seed and bookkeeping.

    Attributes:
      data, model, optim: the sections.
      seed: initialisation, batch order and the run's PRNG key.
      eval_batch_size: evaluation batch size.
      eval_every_epochs: clean test accuracy every this many epochs (and after the last).
      checkpoints_to_keep: checkpoints a run keeps.
    """

    kind: ClassVar[str] = "training"

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    seed: int = field(0, bounds="non_negative")
    eval_batch_size: int = field(500, bounds="count")
    eval_every_epochs: int = field(1, bounds="count")
    checkpoints_to_keep: int = field(3, bounds="count")

    @classmethod
    def upgraded(cls, values: dict) -> dict:
        """A config stored flat, before the sections existed, in sections
        (:data:`FLAT_FIELDS`); a nested one as it is."""
        if any(k in FLAT_FIELDS and not isinstance(v, Mapping) for k, v in values.items()):
            return _nest(values)
        return values


def _nest(flat: Mapping[str, Any]) -> dict:
    """A flat stored config in sections (:data:`FLAT_FIELDS`)."""
    nested: dict = {}
    for name, value in flat.items():
        section, _, field = FLAT_FIELDS.get(name, name).rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[field] = value
    return nested
