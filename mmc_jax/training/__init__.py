"""Training: PyTorch-equivalent SGD, pure train/eval steps, checkpoints and the loop.

>>> config = TrainConfig.of(config_dict)   # its data, model and optim sections
>>> state = create_state(config, model, (32, 32, 3), steps_per_epoch)
>>> state, metrics = jax.jit(partial(train_step, cue=cue))(state, batch)
>>> evaluate(state.apply_fn, state.variables, test_set, key)   # four conditions
"""

from mmc_jax.metrics import cross_entropy, cued_inputs, eval_step, evaluate
from mmc_jax.runtime.stopping import Interrupted
from mmc_jax.training.build import create_model, create_state, load_data
from mmc_jax.training.checkpoint import RunCheckpoints, check_config
from mmc_jax.training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from mmc_jax.training.loop import (
    AUTO,
    NonFiniteLoss,
    init_from,
    run_epochs,
    train_and_evaluate,
)
from mmc_jax.training.optim import SCHEDULES, schedule, sgd
from mmc_jax.training.saved_model import (
    check_compatible,
    has_model,
    load_model,
    model_config,
    restore_trained,
    save_model,
    trained_config,
)
from mmc_jax.training.state import TrainState
from mmc_jax.training.steps import supervised_step, train_step

__all__ = [
    "AUTO",
    "DataConfig",
    "Interrupted",
    "ModelConfig",
    "NonFiniteLoss",
    "OptimConfig",
    "RunCheckpoints",
    "SCHEDULES",
    "TrainConfig",
    "TrainState",
    "check_compatible",
    "check_config",
    "create_model",
    "create_state",
    "cross_entropy",
    "cued_inputs",
    "eval_step",
    "evaluate",
    "has_model",
    "init_from",
    "load_data",
    "load_model",
    "model_config",
    "restore_trained",
    "run_epochs",
    "save_model",
    "schedule",
    "sgd",
    "supervised_step",
    "train_and_evaluate",
    "train_step",
    "trained_config",
]
