"""A model of the user's own, named ``module:factory``, in every entry point."""

import json

import jax
import programs
import pytest

from mmc_jax import InputError, data, models

EXAMPLE = "examples.my_model:make_model"


def test_bad_model_names_are_one_line_errors():
    with pytest.raises(InputError, match="cannot import 'no_such_package.models'"):
        models.create("no_such_package.models:make", 10)
    with pytest.raises(InputError, match="has no callable 'NOT_CALLABLE'"):
        models.create("tests.user_models:NOT_CALLABLE", 10)
    with pytest.raises(InputError, match="width applies to the library's presets"):
        models.create(EXAMPLE, 10, width=2.0)


def test_models_without_features_are_refused_by_the_methods_that_need_them():
    from experiments import methods

    model = models.create("tests.user_models:no_features", 10)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    train = data.load("shapes10", "test", num_examples=4)
    methods.check_model_contract(model.apply, variables, train, ("naive_ft_small",))
    with pytest.raises(InputError, match="cbft, llrt need the model's penultimate features"):
        methods.check_model_contract(model.apply, variables, train, ("cbft", "llrt"))


@pytest.mark.slow
def test_user_model_in_train_connectivity_and_cbft(tmp_path):
    tiny = programs.OWN_MODEL_TRAIN
    result = programs.completed(
        "train", f"--config.model.name={EXAMPLE}", *tiny, f"--workdir={tmp_path / 'nc'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cbft = programs.own_model_cbft(("lpft", "cbft"))
    result = programs.completed(
        "cbft", f"--config.cue_model.model.name={EXAMPLE}", *cbft, f"--workdir={tmp_path / 'cbft'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "cbft" / "results.json").read_text())
    assert out["model"] == EXAMPLE and set(out["methods"]) == {"cue_model", "lpft", "cbft"}
    # θ_NC (experiments.train) to the CBFT model, aligned by activation matching on a derived
    # permutation spec.
    result = programs.completed(
        "connectivity",
        f"--model_a={tmp_path / 'nc'}",
        f"--model_b={tmp_path / 'cbft' / 'seed_0' / 'cbft'}",
        "--path=permuted_linear",
        "--config.permutation.method=activation",
        "--config.permutation.permute_residual=False",
        *programs.OWN_MODEL_PATH,
        "--config.path.num_eval=100",
        f"--workdir={tmp_path / 'line'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads((tmp_path / "line" / "results.json").read_text())
    assert line["permutation"] == "activation" and not line["permute_residual"]
    assert len(line["conditions"]["cue"]["acc"]) == 3
    # A model without penultimate features is refused before any training.
    result = programs.completed(
        "cbft",
        "--config.cue_model.model.name=tests.user_models:no_features",
        *cbft,
        f"--workdir={tmp_path / 'refused'}",
    )
    assert result.returncode == 2 and "penultimate features" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "refused" / "seed_0").exists()
