"""The config idiom: experiment configs in sections, mapped onto typed library configs in
one place and checked there with one set of bounds; old flat fields answered with their new
place."""

import dataclasses
import importlib

import pytest

from experiments import cli, comparison, connectivity, methods, sections
from experiments.configs import demo
from mmc_jax import InputError, finetune, training
from mmc_jax.connectivity import curve
from mmc_jax.training.config import FLAT_FIELDS


def _flat(config: training.TrainConfig) -> dict:
    """The flat form runs stored before the configs had sections."""
    nested = config.to_dict()
    inverse = {new: old for old, new in FLAT_FIELDS.items()}
    out = {}
    for name, value in nested.items():
        if isinstance(value, dict):
            out.update({inverse[f"{name}.{k}"]: v for k, v in value.items()})
        else:
            out[name] = value
    return out


def test_the_demo_config_file_holds_the_typed_defaults():
    assert training.TrainConfig.of(demo.get_config()) == training.TrainConfig()


def test_flat_stored_configs_load_into_sections():
    config = training.TrainConfig().changed(
        seed=3, data={"cue_proportion": 0.5}, model={"width": 0.25}, optim={"epochs": 2}
    )
    flat = _flat(config)
    assert "cue_proportion" in flat and "data" not in flat
    assert training.TrainConfig.of(flat) == config
    assert training.TrainConfig.of(config.to_dict()) == config


def test_changed_replaces_single_fields_of_a_section():
    config = training.TrainConfig().changed(optim={"epochs": 3})
    assert config.optim.epochs == 3
    assert dataclasses.replace(config.optim, epochs=12) == training.OptimConfig()


@pytest.mark.parametrize(
    "values,message",
    [
        ({"optim": {"epoch": 3}}, "unknown optim config field.*epoch"),
        ({"data": {"cue_proportion": 1.5}}, r"cue proportion must be in \[0, 1\]"),
        ({"optim": {"learning_rate": 0}}, "optim.learning_rate must be > 0"),
        ({"model": {"name": "vgg19"}}, "unknown model 'vgg19'"),
        ({"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
        ({"bogus": 1}, "unknown training config field.*bogus"),
    ],
)
def test_bad_values_are_named_by_their_section(values, message):
    with pytest.raises(InputError, match=message):
        training.TrainConfig.of(values)


def test_one_set_of_bounds_for_momentum():
    """momentum in [0, 1) wherever a config or the optimizer takes it."""
    checks = [
        lambda m: training.OptimConfig(momentum=m),
        lambda m: finetune.FinetuneConfig.of(optim={"momentum": m}),
        lambda m: curve.CurveConfig.of(optim={"momentum": m}),
        lambda m: training.sgd(0.1, momentum=m),
    ]
    for check in checks:
        check(0.0)
        check(0.9)
        for bad in (1.0, -0.1):
            with pytest.raises(InputError, match=r"momentum must be in \[0, 1\)"):
                check(bad)


@pytest.mark.parametrize(
    "name,arg", [("demo", ""), ("paper", "cifar10,vgg13,0.9"), ("paper", "dominoes,resnet18,0.0")]
)
def test_training_config_files_map_onto_the_typed_config(name, arg):
    module = importlib.import_module(f"experiments.configs.{name}")
    config = module.get_config(arg) if arg else module.get_config()
    typed = training.TrainConfig.of(config)
    assert typed.to_dict() == config.to_dict()


@pytest.mark.parametrize("name", ["cbft", "fig5", "ablations", "cbft_paths", "cbft_paper"])
def test_cbft_config_files_map_onto_the_typed_configs(name):
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    training.TrainConfig.of(config.cue_model)
    tuned = methods.method_configs(config, seed=2)
    expected = {
        "naive_ft_small": config.baselines.small_learning_rate,
        "naive_ft_medium": config.optim.learning_rate,
        "naive_ft_large": config.baselines.large_learning_rate,
        "cbft": config.optim.learning_rate,
    }
    for method, lr in expected.items():
        assert (tuned[method].optim.learning_rate, tuned[method].seed) == (lr, 2)
        assert tuned[method].optim.epochs == config.optim.epochs
    llrt = tuned["llrt"].llrt  # LLRT's own SGD, batch size and momentum from optim
    assert llrt.learning_rate == config.finetune.llrt.learning_rate
    assert llrt.epochs == config.finetune.llrt.epochs
    assert (llrt.batch_size, llrt.momentum) == (config.optim.batch_size, config.optim.momentum)
    assert tuned["cbft_no_barrier"].barrier_weight == 0.0
    comparison.check_path(config.path)


@pytest.mark.parametrize("name", ["connectivity", "similarity", "layerwise", "plane"])
def test_comparison_config_files_share_the_path_section(name):
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    assert set(config.path) == set(
        importlib.import_module("experiments.configs.evaluation").path_config()
    )
    comparison.check_path(config.path)
    if "permutation" in config:
        comparison.check_permutation(config.permutation)
    if name == "connectivity":
        assert connectivity.check_sections(config).curve == curve.CurveConfig()


@pytest.mark.parametrize(
    "config,old,new",
    [
        ("demo", "cue_proportion", ["data.cue_proportion"]),
        ("demo", "epochs", ["optim.epochs"]),
        ("demo", "dataset", ["data.name"]),
        ("demo", "data_seed", ["data.seed"]),
        ("demo", "width", ["model.width"]),
        ("cbft", "n_clean", ["data.n_clean"]),
        ("cbft", "cue_model.cue_proportion", ["cue_model.data.cue_proportion"]),
        ("cbft", "eval_batch_size", ["path.batch_size"]),
        ("cbft", "path_points", ["path.num_points"]),
        ("cbft", "llrt_epochs", ["finetune.llrt.epochs"]),
        ("connectivity", "curve_epochs", ["curve.optim.epochs"]),
        ("connectivity", "permutation", ["permutation.method"]),
        ("connectivity", "bn", ["path.bn"]),
        ("demo", "nonsense", []),
    ],
)
def test_old_flat_fields_are_found_in_the_sections(config, old, new):
    loaded = importlib.import_module(f"experiments.configs.{config}").get_config()
    assert cli.new_places(old, loaded) == new


def test_the_path_section_is_typed_once_with_its_defaults_spelled_out():
    """``path``: names from a comma-separated string, 0 meaning "the default" turned into the
    evaluator's None in one place, integers and choices checked by the section itself."""
    path = sections.PathConfig.of(
        {"conditions": "nocue, cue,nocue", "bn_batches": 0, "chunk_size": 0, "num_eval": 30}
    )
    assert path.conditions == ("nocue", "cue")
    kwargs = path.evaluator_kwargs(bn_set=None, seed=3)
    assert (kwargs["bn_batches"], kwargs["chunk_size"], kwargs["memory_budget"]) == (None,) * 3
    assert kwargs["bn_shuffle_seed"] is None
    shuffled = path.changed(bn_shuffle=True, bn_batches=4, memory_budget_gib=0.5)
    kwargs = shuffled.evaluator_kwargs(bn_set=None, seed=3)
    assert (kwargs["bn_shuffle_seed"], kwargs["bn_batches"], kwargs["memory_budget"]) == (
        3,
        4,
        2**29,
    )
    for bad, message in [
        ({"num_points": 1}, r"path.num_points must be >= 2"),
        ({"num_points": 2.5}, r"path.num_points must be an integer"),
        ({"bn": "reset"}, r"unknown BN policy 'reset'"),
        ({"conditions": ""}, r"at least one condition"),
        ({"conditions": "clean"}, r"clean"),
        ({"bogus": 1}, r"unknown path config field\(s\) bogus"),
    ]:
        with pytest.raises(InputError, match=message):
            sections.PathConfig.of(bad)


def test_the_permutation_section_says_which_batches_activation_matching_uses():
    assert sections.PermutationConfig().batches(500) == (10, 500, False)
    assert sections.PermutationConfig(method="paper").batches(500) == (91, 128, True)
    given = sections.PermutationConfig(match_batches=3, match_batch_size=64)
    assert given.batches(500) == (3, 64, False)
    with pytest.raises(InputError, match="unknown permutation method 'magic'"):
        sections.PermutationConfig.of({"method": "magic"})
