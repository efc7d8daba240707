"""Shared test setup: a persistent XLA compilation cache, a private dataset cache, and two
tiny trained models for the connectivity entry point."""

import os

import jax
import pytest

from mmc_jax import runtime

runtime.tune_host_allocator()

# Compiled programs are reused across test runs (CI sets JAX_COMPILATION_CACHE_DIR), every
# one of them, here and in the entry points the tests start, which compile the same programs
# again and again (reruns, kills and resumptions): the environment passes both settings on,
# and the folder stays the same although the tests give the datasets a private cache.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ["JAX_COMPILATION_CACHE_DIR"] = runtime.enable_compilation_cache()


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keeps generated and decoded datasets out of the user's cache."""
    os.environ["MMC_JAX_CACHE"] = str(tmp_path_factory.mktemp("mmc_jax_cache"))
    yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Workdirs ``nc`` (θ_NC) and ``c`` (θ_C) of two tiny ``experiments.train`` runs."""
    from configs import tiny_train_config
    from mmc_jax import training

    root = tmp_path_factory.mktemp("models")
    for name, p in (("nc", 0.0), ("c", 1.0)):
        training.train_and_evaluate(
            tiny_train_config(cue_proportion=p), str(root / name), progress=False
        )
    return root


@pytest.fixture(scope="session")
def third_trained(tmp_path_factory):
    """The workdir of a third tiny ``experiments.train`` run (cue on half of each class,
    another seed), for analyses through three models."""
    from configs import tiny_train_config
    from mmc_jax import training

    folder = tmp_path_factory.mktemp("third") / "half"
    training.train_and_evaluate(
        tiny_train_config(cue_proportion=0.5, seed=1), str(folder), progress=False
    )
    return folder


@pytest.fixture(scope="session")
def three_tiny_models():
    """A quarter-width cnn4, three random initialisations ``{"a", "b", "c"}`` of it, and
    small shapes10 train (120) and test (60) sets, for the model-comparison tests."""
    from mmc_jax import data, models

    model = models.create("cnn4", 10, width=0.25)
    variables = {
        name: models.init(model, jax.random.key(seed), (32, 32, 3))
        for name, seed in (("a", 0), ("b", 1), ("c", 2))
    }
    train = data.load("shapes10", "train", num_examples=120)
    test = data.load("shapes10", "test", num_examples=60)
    return model, variables, train, test


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests first: with two workers, one started last would make the
    suite wait for it alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
