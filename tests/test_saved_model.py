"""Every folder that holds a model loads as one: save/load round trips, train workdirs,
one-line errors, and training that starts from a saved model (``init_from``)."""

import chex
import jax
import pytest

from configs import train_config
from mmc_jax import InputError, models, training


def _config(**changes):
    return train_config(
        **{
            "width": 0.25,
            "num_train": 128,
            "num_test": 40,
            "batch_size": 64,
            "epochs": 1,
            "eval_batch_size": 40,
            **changes,
        }
    )


def test_save_and_load_round_trip(tmp_path):
    config = _config()
    model = models.create("cnn4", 10, width=0.25)
    variables = models.init(model, jax.random.key(3), (32, 32, 3))
    training.save_model(tmp_path / "m", config, variables, 10, (32, 32, 3))
    assert training.has_model(tmp_path / "m")
    module, loaded, stored = training.load_model(tmp_path / "m")
    chex.assert_trees_all_equal(loaded, variables)
    assert stored.to_dict() == config.to_dict()
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    chex.assert_trees_all_close(
        module.apply(loaded, x, train=False), model.apply(variables, x, train=False)
    )


def test_train_workdir_loads_and_bad_folders_are_clear_errors(trained, tmp_path):
    module, variables, config = training.load_model(trained / "c")
    restored = training.restore_trained(trained / "c")
    chex.assert_trees_all_equal(variables, restored[1])
    assert config.data.cue_proportion == 1.0 and type(module).__name__ == "SmallCNN"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no model"):
        training.load_model(tmp_path / "empty")
    with pytest.raises(InputError, match="different architectures .*width 0.25 vs 0.5"):
        training.check_compatible(config, _config(width=0.5))
    with pytest.raises(InputError, match="different data .*data.name 'shapes10' vs 'cifar10'"):
        training.check_compatible(config, _config(dataset="cifar10"))


def test_init_from_starts_training_from_the_saved_model(trained, tmp_path):
    config = _config(init_from=str(trained / "nc"))
    model = training.create_model(config, 10)
    state = training.create_state(config, model, (32, 32, 3), 2)
    started = training.init_from(state, config, config.model.init_from)
    chex.assert_trees_all_equal(started.variables, training.load_model(trained / "nc")[1])
    chex.assert_trees_all_equal(started.opt_state, state.opt_state)  # fresh momentum
    with pytest.raises(InputError, match="different architectures"):
        training.init_from(state, _config(width=0.5), config.model.init_from)
