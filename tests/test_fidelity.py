"""Fidelity to the paper's code, third round: the from-scratch baseline's batches and recipe,
counterfactual draws per path point, and one θ_NC for every seed."""

import json

import pytest

from experiments import methods
from experiments.configs import cbft as cbft_config
from mmc_jax import data, training


@pytest.fixture(scope="module")
def shapes():
    train = data.load("shapes10", "train", num_examples=100)
    test = data.load("shapes10", "test", num_examples=50)
    return train, test


def _config(**baselines):
    config = cbft_config.get_config()
    config.cue_model.model.width = 0.25
    config.cue_model.optim.batch_size = 32
    config.cue_model.eval_batch_size = 50
    config.data.n_clean = 100
    config.optim.epochs = 2
    config.optim.batch_size = 64
    config.optim.learning_rate = 0.02
    config.baselines.scratch_epochs = 3
    config.baselines.update(baselines)
    return config, training.TrainConfig.of(config.cue_model)


def test_training_can_keep_each_epochs_last_smaller_batch(shapes, tmp_path):
    train, test = shapes
    _, cue_config = _config()
    config = cue_config.changed(data={"cue_proportion": 0.0}, optim={"epochs": 2})
    kept = training.train_and_evaluate(
        config,
        str(tmp_path / "kept"),
        datasets=(train, test),
        keep_last_batch=True,
        progress=False,
    )
    dropped = training.train_and_evaluate(
        config, str(tmp_path / "dropped"), datasets=(train, test), progress=False
    )
    assert [r["step"] for r in kept["history"]] == [4, 8]  # 32 + 32 + 32 + 4 samples
    assert [r["step"] for r in dropped["history"]] == [3, 6]


@pytest.mark.parametrize("recipe", methods.SCRATCH_RECIPES)
def test_scratch_sees_every_clean_sample_with_either_recipe(shapes, tmp_path, recipe):
    train, test = shapes
    config, cue_config = _config(scratch_recipe=recipe)
    methods._scratch(config, cue_config, train, test, tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    if recipe == "finetune":  # the fine-tuning's SGD: config.optim
        assert stored["optim"]["epochs"] == 2 and stored["optim"]["learning_rate"] == 0.02
        assert stored["optim"]["batch_size"] == 64
        steps = 2 * 2  # 64 + 36 samples
    else:  # θ_C's SGD for scratch_epochs
        assert stored["optim"]["epochs"] == 3
        assert stored["optim"]["learning_rate"] == cue_config.optim.learning_rate
        steps = 3 * 4  # 32 + 32 + 32 + 4 samples
    checkpoints = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints[-1] == steps


@pytest.mark.parametrize("shared", [False, True])
def test_one_nocue_model_for_every_seed_when_shared(tmp_path, shared):
    """The paper's code trains one θ_NC that every seed's paths start from
    (``shared_nocue_model``); by default each seed trains its own."""
    from experiments import cbft_job

    config, _ = _config()
    config.path.targets = ("cue_model", "nocue_model")
    config.shared_nocue_model = shared
    job = cbft_job.job(config, tmp_path, (0, 1))
    nocue = sorted(u.name for u in job if u.name.endswith("nocue_model"))
    assert nocue == (["nocue_model"] if shared else ["seed_0/nocue_model", "seed_1/nocue_model"])
    for seed in (0, 1):
        for name in ("cbft", "references"):
            unit = job.units[f"seed_{seed}/{name}"]
            wanted = "nocue_model" if shared else f"seed_{seed}/nocue_model"
            assert wanted in unit.inputs
            folder = unit.kwargs["config"]["nocue_model_dir"]
            assert folder == (str(tmp_path / "nocue_model") if shared else "")
    if shared:
        assert job.units["nocue_model"].kwargs["seed"] == 0
        assert job.units["nocue_model"].folder == str(tmp_path / "nocue_model")


def test_the_cued_set_and_the_test_sets_follow_their_cue_proportions(shapes, tmp_path):
    """The paper's fine-tuning script builds D_C and its C/RC/RI test sets from
    ``--cue_proportion``: ``data.cued_proportion`` and ``path.cue_proportion`` reach them."""
    import jax

    from experiments import comparison, sections
    from mmc_jax import InputError, models

    train, test = shapes
    config, cue_config = _config()
    model = training.create_model(cue_config, train.num_classes)
    theta_c = models.init(model, jax.random.key(0), train.image_shape)
    config.data.cued_proportion = 0.0  # D_C holds no cued sample: DFR has no cued groups
    config.finetune.dfr_subsets = 1
    with pytest.raises(InputError, match="group-balanced set is empty"):
        methods.fine_tune(
            config, 0, tmp_path, "dfr", model.apply, theta_c, cue_config, (train, test)
        )
    key = jax.random.key(1)
    for p in (0.0, 0.5):
        path = sections.PathConfig.of(config.path).changed(cue_proportion=p)
        got = comparison.test_metrics(path, model.apply, theta_c, test, key)
        direct = training.evaluate(model.apply, theta_c, test, key, cue_proportion=p)
        assert got == direct
    assert (
        got["cue"]["loss"]
        != comparison.test_metrics(
            sections.PathConfig.of(config.path), model.apply, theta_c, test, key
        )["cue"]["loss"]
    )
