"""What a training config builds: its data, its model and a fresh train state.

Every kind of training (:mod:`mmc_jax.training.loop`, the calibration's trials, fine-tuning)
and every reader of a trained model (:mod:`mmc_jax.training.saved_model`) builds them the same
way from the typed config.
"""

from __future__ import annotations

import jax
import numpy as np

from mmc_jax import data, models
from mmc_jax.runtime.errors import InputError
from mmc_jax.training.config import DataConfig, ModelConfig, TrainConfig
from mmc_jax.training.state import TrainState


def load_data(config):
    """Train and test splits named by a training config or its data section
    (``num_train`` / ``num_test`` > 0 keep the first samples only)."""
    config = config if isinstance(config, DataConfig) else TrainConfig.of(config).data
    options = {"data_dir": config.data_dir} if config.data_dir else {}
    if config.name == "dominoes":
        options.update(top=config.dominoes_top, bottom=config.dominoes_bottom)
    train = data.load(config.name, "train", seed=config.seed, **options)
    test = data.load(config.name, "test", seed=config.seed, **options)
    if config.num_train:
        if config.num_train > len(train):
            raise InputError(
                f"num_train {config.num_train} exceeds the {len(train)} training samples"
            )
        train = train.take(np.arange(config.num_train))
    if config.num_test:
        test = test.take(np.arange(min(config.num_test, len(test))))
    return train, test


def create_model(config, num_classes: int):
    """The model named by a training config or its model section."""
    config = config if isinstance(config, ModelConfig) else TrainConfig.of(config).model
    return models.create(config.name, num_classes, width=config.width or None, dtype=config.dtype)


def create_state(config, model, image_shape, steps_per_epoch: int) -> TrainState:
    """A fresh train state: initial variables and PyTorch-style SGD with the schedule."""
    config = TrainConfig.of(config)
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = models.init(model, init_key, image_shape)
    return TrainState.create(
        model.apply, variables, config.optim.optimizer(steps_per_epoch), state_key
    )
