"""Flax NNX models through the library: the bridge's ``init``/``apply`` against NNX's own
calls, ``accepts_nnx``, checkpoints, and train → cbft → connectivity from the command line."""

import inspect
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import programs
import pytest
from flax import nnx, traverse_util

from configs import train_config
from mmc_jax import InputError, data, finetune, metrics, models, permute, training
from mmc_jax.models import nnx_bridge

EXAMPLE = "examples.my_nnx_model:make_model"
#: This module as a model name's module part (the entry points import it by that name).
HERE = "tests.test_nnx"


class Block(nnx.Module):
    """Conv → BatchNorm → ReLU."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.norm(self.conv(x)))


class TinyNet(nnx.Module):
    """Two blocks in an ``nnx.List`` (integer keys), average pooling, optional Dropout, a
    linear head; returns its features with ``return_features=True``."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs, dropout: float = 0.0):
        self.blocks = nnx.List([Block(3, 4, rngs=rngs), Block(4, 6, rngs=rngs)])
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(6, num_classes, rngs=rngs)

    def __call__(self, x, return_features: bool = False):
        for block in self.blocks:
            x = block(x)
        features = self.drop(x.mean(axis=(1, 2)))
        logits = self.head(features)
        return (logits, features) if return_features else logits


def make_tiny(num_classes, *, rngs):
    return TinyNet(num_classes, rngs=rngs)


def not_a_module(num_classes, *, rngs):
    return num_classes


def _images(n=4, size=8, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def test_bridge_equals_the_module_in_eval_and_train_mode():
    module = TinyNet(3, rngs=nnx.Rngs(0))
    apply_fn, variables = nnx_bridge.from_module(module)
    x = _images()
    # Pure dicts with string keys: what flatten_dict(sep="/") and orbax read.
    assert set(variables) == {"params", "batch_stats"}
    flat = traverse_util.flatten_dict(variables, sep="/")
    assert "params/blocks/0/conv/kernel" in flat and "batch_stats/blocks/1/norm/var" in flat
    # The factory's model draws the same variables from the same key (compiled by
    # models.init: equal up to the last bit of a float).
    model = nnx_bridge.NNXModel(make_tiny, (3,))
    chex.assert_trees_all_equal(model.init(jax.random.key(0)), variables)
    built = models.init(model, jax.random.key(0), (8, 8, 3))
    chex.assert_trees_all_close(built, variables, atol=1e-6)
    module.eval()
    chex.assert_trees_all_close(apply_fn(variables, x, train=False), module(x), atol=1e-6)
    logits, features = apply_fn(variables, x, return_features=True)
    assert features.shape == (4, 6)
    # Train mode: batch statistics, and the running averages updated as NNX's own call does.
    jitted = jax.jit(lambda v, x: apply_fn(v, x, train=True, mutable=["batch_stats"]))
    out, updates = jitted(variables, x)
    module.train()
    expected = module(x)
    chex.assert_trees_all_close(out, expected, atol=1e-5)
    assert set(updates) == {"batch_stats"}
    own = nnx_bridge.from_module(module)[1]["batch_stats"]
    chex.assert_trees_all_close(updates["batch_stats"], own, atol=1e-6)
    assert not np.allclose(own["blocks"]["0"]["norm"]["mean"], 0.0)
    # Back to a module, which holds the updated statistics.
    back = nnx_bridge.to_module(apply_fn, {**variables, **updates})
    back.eval()
    module.eval()
    chex.assert_trees_all_close(back(x), module(x), atol=1e-6)


def test_apply_follows_linens_conventions():
    model = nnx_bridge.NNXModel(make_tiny, (3,))
    variables = model.init(jax.random.key(0))
    x = _images()
    # Equal models, equal (hashable) apply functions: one compilation for both.
    assert model.apply == nnx_bridge.NNXModel(make_tiny, (3,)).apply
    assert hash(model.apply) == hash(nnx_bridge.NNXModel(make_tiny, (3,)).apply)
    assert models.create(EXAMPLE, 10) == models.create(EXAMPLE, 10)
    assert isinstance(model(variables, x, mutable=[]), tuple)  # mutable=[]: (out, {})
    _, everything = model.apply(variables, x, mutable=True)
    assert set(everything) == {"params", "batch_stats"}
    with pytest.raises(InputError, match="batch_stats is not mutable"):
        model.apply(variables, x, train=True)
    # Gradients and vmap over the variables.
    grads = jax.grad(lambda p: model.apply({**variables, "params": p}, x).sum())(
        variables["params"]
    )
    chex.assert_trees_all_equal_shapes(grads, variables["params"])
    stacked = jax.tree.map(lambda v: jnp.stack([v, 2 * v]), variables)
    assert jax.vmap(lambda v: model.apply(v, x))(stacked).shape == (2, 4, 3)
    with pytest.raises(InputError, match="missing params/head/bias"):
        model.apply({**variables, "params": {**variables["params"], "head": {}}}, x)


def test_dropout_is_off_in_eval_mode_and_needs_a_key_in_train_mode():
    module = TinyNet(3, rngs=nnx.Rngs(0), dropout=0.5)
    apply_fn, variables = nnx_bridge.from_module(module)
    x = _images()
    module.eval()
    chex.assert_trees_all_close(apply_fn(variables, x), module(x), atol=1e-6)
    with pytest.raises(InputError, match="from its stream 'default' at drop/rngs"):
        apply_fn(variables, x, train=True, mutable=["batch_stats"])
    with pytest.raises(InputError, match="without a key"):  # another stream's key
        apply_fn(variables, x, train=True, mutable=True, rngs={"dropout": jax.random.key(1)})

    def train(seed):
        key = jax.random.key(seed)
        return apply_fn(variables, x, train=True, mutable=["batch_stats"], rngs=key)

    first, again, other = train(1), train(1), train(2)
    chex.assert_trees_all_equal(first, again)
    by_tag = apply_fn(
        variables, x, train=True, mutable=["batch_stats"], rngs={"default": jax.random.key(1)}
    )
    chex.assert_trees_all_equal(by_tag, first)
    assert not np.allclose(first[0], other[0])
    # An nnx.Module class is a factory too; its keyword arguments stay its own.
    assert nnx_bridge.NNXModel(TinyNet, (3,)).init(jax.random.key(0))["batch_stats"]


class TrainArgument(nnx.Module):
    """A module that takes the mode as a ``__call__`` argument instead of its attributes."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(3, 2, rngs=rngs)
        self.norm = nnx.BatchNorm(2, use_running_average=True, rngs=rngs)

    def __call__(self, x, train: bool = False):
        return self.norm(self.dense(x.mean(axis=(1, 2))), use_running_average=not train)


def test_a_train_argument_of_call_gets_the_mode():
    apply_fn, variables = nnx_bridge.from_module(TrainArgument(rngs=nnx.Rngs(0)))
    x = _images()
    _, updates = apply_fn(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(updates["batch_stats"]["norm"]["mean"], 0.0)
    _, same = apply_fn(variables, x, train=False, mutable=["batch_stats"])
    chex.assert_trees_all_equal(same["batch_stats"], variables["batch_stats"])


def test_models_create_and_init_an_nnx_factory():
    model = models.create(EXAMPLE, 10)
    assert isinstance(model, nnx_bridge.NNXModel)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    assert set(variables["params"]["classifier"]["dense"]) == {"kernel", "bias"}
    logits, features = model.apply(variables, jnp.zeros((2, 32, 32, 3)), return_features=True)
    assert logits.shape == (2, 10) and features.shape == (2, 64)
    # Permutations derived from the traced pass are named after the module's attributes.
    spec = permute.derive_spec(model.apply, variables, jnp.zeros((1, 32, 32, 3)), train=False)
    assert {"P_conv1", "P_conv2", "P_hidden"} <= set(spec.sizes)
    with pytest.raises(InputError, match="returned int, not a Flax NNX module"):
        models.create(f"{HERE}:not_a_module", 10)
    with pytest.raises(InputError, match="width applies to the library's presets"):
        models.create(EXAMPLE, 10, width=2.0)


def test_library_functions_accept_an_nnx_module():
    module = TinyNet(10, rngs=nnx.Rngs(0))
    apply_fn, variables = nnx_bridge.from_module(module)
    test = data.load("shapes10", "test", num_examples=40)
    key = jax.random.key(3)
    got = metrics.evaluate(module, test, key, batch_size=20)
    assert got == metrics.evaluate(apply_fn, variables, test, key, batch_size=20)
    assert set(got) == set(data.CONDITIONS)
    np.testing.assert_array_equal(
        finetune.features_of(module, test.images[:8], test.cue),
        finetune.features_of(apply_fn, variables, test.images[:8], test.cue),
    )
    # Documented, and the signature kept (functools.wraps).
    for fn in (metrics.evaluate, finetune.naive_finetune, finetune.cbft, finetune.llrt):
        assert "``nnx.Module``" in fn.__doc__
        assert list(inspect.signature(fn).parameters)[:2] == ["apply_fn", "variables"]

    @nnx_bridge.accepts_nnx(also=("anchor",))
    def takes(apply_fn, variables, anchor, *, scale=1):
        return apply_fn, variables, anchor

    other = TinyNet(10, rngs=nnx.Rngs(1))
    got_apply, got_variables, anchor = takes(module, other)
    assert got_apply == apply_fn
    chex.assert_trees_all_equal(got_variables, variables)
    chex.assert_trees_all_equal(anchor, nnx_bridge.from_module(other)[1])
    assert takes(apply_fn, variables, {"params": 1}) == (apply_fn, variables, {"params": 1})


def test_checkpoints_and_model_folders_round_trip(tmp_path):
    model = models.create(f"{HERE}:make_tiny", 10)
    variables = models.init(model, jax.random.key(0), (8, 8, 3))
    key = jax.random.PRNGKey(1)
    state = training.TrainState.create(model.apply, variables, optax.sgd(0.1), key)
    state = state.replace(step=jnp.int32(5))
    with training.RunCheckpoints(tmp_path / "run", {"model": "tiny"}) as checkpoints:
        assert checkpoints.save(state, {"epoch": 1}, force=True)
    fresh = training.TrainState.create(
        model.apply, models.init(model, jax.random.key(9), (8, 8, 3)), optax.sgd(0.1), key
    )
    with training.RunCheckpoints(tmp_path / "run", {"model": "tiny"}) as checkpoints:
        restored, meta = checkpoints.restore(fresh)
        only = checkpoints.restore_variables(jax.eval_shape(lambda: variables))
    assert int(restored.step) == 5 and meta == {"epoch": 1}
    chex.assert_trees_all_equal(restored.variables, variables)
    chex.assert_trees_all_equal(only, variables)
    # A model folder: load_model rebuilds the NNX model from the stored config.
    config = train_config(**{"model.name": f"{HERE}:make_tiny"})
    training.save_model(tmp_path / "folder", config, variables, 10, (8, 8, 3))
    loaded, loaded_variables, loaded_config = training.load_model(tmp_path / "folder")
    assert loaded == model and loaded_config.model.name == f"{HERE}:make_tiny"
    chex.assert_trees_all_equal(loaded_variables, variables)
    x = _images()
    chex.assert_trees_all_close(loaded.apply(loaded_variables, x), model.apply(variables, x))


@pytest.mark.slow
def test_nnx_model_in_train_cbft_and_connectivity(tmp_path):
    tiny = programs.OWN_MODEL_TRAIN
    result = programs.completed(
        "train", f"--config.model.name={EXAMPLE}", *tiny, f"--workdir={tmp_path / 'nc'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((tmp_path / "nc" / "results.json").read_text())
    assert trained["model"] == EXAMPLE and set(trained["test"]) == set(data.CONDITIONS)
    assert all(0 <= m["acc"] <= 1 and math.isfinite(m["loss"]) for m in trained["test"].values())
    cbft = programs.own_model_cbft(("llrt", "cbft"))
    result = programs.completed(
        "cbft", f"--config.cue_model.model.name={EXAMPLE}", *cbft, f"--workdir={tmp_path / 'cbft'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "cbft" / "results.json").read_text())
    assert out["model"] == EXAMPLE and set(out["methods"]) == {"cue_model", "llrt", "cbft"}
    for method in out["methods"].values():
        assert set(method["test"]) == set(data.CONDITIONS)
    table = (tmp_path / "cbft" / "results.md").read_text()
    assert all(f"| {name}" in table for name in ("llrt", "cbft"))
    # θ_NC to the CBFT model, b aligned to a by weight matching on the derived spec.
    result = programs.completed(
        "connectivity",
        f"--model_a={tmp_path / 'nc'}",
        f"--model_b={tmp_path / 'cbft' / 'seed_0' / 'cbft'}",
        "--path=permuted_linear",
        *programs.OWN_MODEL_PATH,
        "--config.path.num_eval=100",
        f"--workdir={tmp_path / 'line'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads((tmp_path / "line" / "results.json").read_text())
    assert line["path"] == "permuted_linear" and line["permutation"] == "weight"
    assert set(line["conditions"]) == set(data.CONDITIONS)
    for condition in line["conditions"].values():
        assert len(condition["acc"]) == 3
        assert all(math.isfinite(v) and v >= -1e-6 for v in condition["barrier"].values())
