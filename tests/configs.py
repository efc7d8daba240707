"""Small configs for the tests: the experiment configs with a few fields changed."""

from experiments.configs import demo
from mmc_jax.training.config import FLAT_FIELDS


def train_config(**fields):
    """The demo training config with ``fields`` set; a field is named by its dotted place
    (``optim.epochs``) or by its short name (``epochs``, ``width``: see ``FLAT_FIELDS``)."""
    config = demo.get_config()
    for name, value in fields.items():
        section, _, field = FLAT_FIELDS.get(name, name).rpartition(".")
        (config[section] if section else config)[field] = value
    return config


def tiny_train_config(**fields):
    """A quarter-width cnn4 for one epoch on 256 training and 60 test images of shapes10."""
    return train_config(
        **{
            "width": 0.25,
            "num_train": 256,
            "num_test": 60,
            "batch_size": 64,
            "epochs": 1,
            "eval_batch_size": 60,
            **fields,
        }
    )
