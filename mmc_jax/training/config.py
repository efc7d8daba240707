"""The typed training config: what data, which model, how to optimise, in three sections.

Experiment configs (``experiments/configs/demo.py``) are ``ml_collections`` ConfigDicts with
the same nested sections (``config.data``, ``config.model``, ``config.optim``);
:meth:`TrainConfig.of` turns one into this frozen, validated form, in one place, and every
training function takes it. A run stores :meth:`TrainConfig.to_dict` as ``config.json``;
runs stored before the sections existed (flat fields) still load (:data:`FLAT_FIELDS`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Union

import optax

from mmc_jax import models
from mmc_jax.data import cues
from mmc_jax.runtime.errors import InputError, check_bounds, check_choice
from mmc_jax.training import optim

#: ``data.cue_proportion`` value asking the entry points to calibrate it
#: (:mod:`mmc_jax.training.calibration`).
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class DataConfig:
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

    name: str = "shapes10"
    data_dir: str = ""
    dominoes_top: str = "fashion_mnist"
    dominoes_bottom: str = "cifar10"
    seed: int = 0
    num_train: int = 0
    num_test: int = 0
    cue_proportion: Union[float, str] = 0.0

    def __post_init__(self):
        check_bounds(self, "data.", non_negative=("seed", "num_train", "num_test"))
        if self.cue_proportion != AUTO:
            cues.check_proportion(self.cue_proportion)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model: a preset name (or ``"module:factory"``), its width and compute dtype.

    Attributes:
      name: a preset of :data:`mmc_jax.models.PRESETS` or an importable factory.
      width: channel multiplier (0: the preset's).
      dtype: ``"float32"`` or ``"bfloat16"`` (compute; parameters stay float32).
      init_from: a model folder to start from instead of a fresh initialisation (the paper
        code's ``--use_pretrained``).
    """

    name: str = "cnn4"
    width: float = 0.0
    dtype: str = "float32"
    init_from: str = ""

    def __post_init__(self):
        models.check_name(self.name)
        check_bounds(self, "model.", non_negative=("width",))
        check_choice("dtype", self.dtype, models.DTYPES)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """PyTorch-style SGD (coupled weight decay) and its learning-rate schedule.

    Attributes:
      epochs, batch_size: of the run.
      learning_rate, momentum, weight_decay: SGD's.
      schedule: ``constant`` | ``step`` (×``step_factor`` every ``step_every_epochs``) |
        ``cosine``.
      grad_clip_norm: > 0 clips gradients to this global norm.
    """

    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-3
    schedule: str = "cosine"
    step_every_epochs: int = 40
    step_factor: float = 0.1
    grad_clip_norm: float = 0.0

    def __post_init__(self):
        check_bounds(
            self,
            "optim.",
            count=("epochs", "batch_size", "step_every_epochs"),
            positive=("learning_rate", "step_factor"),
            momentum=("momentum",),
            non_negative=("weight_decay", "grad_clip_norm"),
        )
        check_choice("schedule", self.schedule, optim.SCHEDULES)

    def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
        """SGD with this schedule, for runs of ``steps_per_epoch`` steps an epoch."""
        lr = optim.schedule(
            self.schedule,
            self.learning_rate,
            self.epochs * steps_per_epoch,
            steps_per_epoch,
            self.step_every_epochs,
            self.step_factor,
        )
        return optim.sgd(lr, self.momentum, self.weight_decay, self.grad_clip_norm)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig}

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
class TrainConfig:
    """Everything a training run is: data, model, optimisation, seed and bookkeeping.

    Attributes:
      data, model, optim: the sections.
      seed: initialisation, batch order and the run's PRNG key.
      eval_batch_size: evaluation batch size.
      eval_every_epochs: clean test accuracy every this many epochs (and after the last).
      checkpoints_to_keep: checkpoints a run keeps.
    """

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    seed: int = 0
    eval_batch_size: int = 500
    eval_every_epochs: int = 1
    checkpoints_to_keep: int = 3

    @classmethod
    def of(cls, config: Any) -> "TrainConfig":
        """The typed config of a ConfigDict, a (nested or stored flat) dict, or itself.

        Raises:
          InputError: an unknown field, or a value out of bounds (named by its section).
        """
        if isinstance(config, cls):
            return config
        values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        if any(k in FLAT_FIELDS and not isinstance(v, Mapping) for k, v in values.items()):
            values = _nest(values)  # stored flat
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise InputError(f"unknown training config field(s) {', '.join(unknown)}")
        kwargs = dict(values)
        for name, section in SECTIONS.items():
            kwargs[name] = _section(section, name, values.get(name, {}))
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Nested plain dict (``config.json``, and a ConfigDict's ``update``)."""
        return dataclasses.asdict(self)

    def changed(self, **changes) -> "TrainConfig":
        """A copy with some fields changed; a section takes a dict of its own fields.

        >>> config.changed(seed=1, data={"cue_proportion": 0.0}, model={"init_from": ""})
        """
        for name, value in changes.items():
            if name in SECTIONS and isinstance(value, Mapping):
                changes[name] = dataclasses.replace(getattr(self, name), **value)
        return dataclasses.replace(self, **changes)

    def __post_init__(self):
        check_bounds(
            self,
            non_negative=("seed",),
            count=("eval_batch_size", "eval_every_epochs", "checkpoints_to_keep"),
        )


def _section(section, name: str, values) -> Any:
    """One section from its dict (or itself), unknown fields named."""
    if isinstance(values, section):
        return values
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    fields = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise InputError(
            f"unknown {name} config field(s) {', '.join(unknown)}; choose from "
            f"{', '.join(sorted(fields))}"
        )
    return section(**values)


def _nest(flat: Mapping[str, Any]) -> dict:
    """A flat stored config in sections (:data:`FLAT_FIELDS`)."""
    nested: dict = {}
    for name, value in flat.items():
        section, _, field = FLAT_FIELDS.get(name, name).rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[field] = value
    return nested
