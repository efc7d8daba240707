"""Permutation specs: function-preserving, validated, and recovered by the matching methods."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, models, permute

PRESETS = ["cnn4", "vgg13_small", "resnet18_small"]
IMAGE_SHAPE = (16, 16, 3)


@functools.lru_cache(maxsize=None)
def _setup(name):
    """Model, variables with random BN parameters and statistics, and the model's spec."""
    model = models.create(name, 5)
    variables = models.init(model, jax.random.key(0), IMAGE_SHAPE)
    params = jax.tree.map(lambda x, k: x + 0.1 * jax.random.normal(k, x.shape),
                          variables["params"], _keys(1, variables["params"]))
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x, k: (jax.random.uniform(k, x.shape, minval=0.5, maxval=2.0)
                            if path[-1].key == "var" else 0.3 * jax.random.normal(k, x.shape)),
        variables["batch_stats"], _keys(2, variables["batch_stats"]))
    variables = {"params": params, "batch_stats": stats}
    return model, variables, permute.spec_for(model, variables)


def _keys(seed, tree):
    """One PRNG key per leaf of ``tree``, in a tree of the same structure."""
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(jax.random.key(seed), len(leaves))))


def _random_perm(spec, seed):
    keys = jax.random.split(jax.random.key(seed), len(spec.sizes))
    return {name: jax.random.permutation(k, size)
            for k, (name, size) in zip(keys, sorted(spec.sizes.items()))}


def _images(seed, n=16):
    return jax.random.normal(jax.random.key(seed), (n, *IMAGE_SHAPE))


@pytest.mark.parametrize("name", PRESETS)
def test_apply_preserves_function_in_eval_and_train_mode(name):
    model, variables, spec = _setup(name)
    permuted = permute.apply(spec, _random_perm(spec, 3), variables)
    x = _images(4, n=8)
    chex.assert_trees_all_close(model.apply(permuted, x, train=False),
                                model.apply(variables, x, train=False), atol=1e-4)
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    permuted_logits, permuted_state = model.apply(permuted, x, train=True,
                                                  mutable=["batch_stats"])
    chex.assert_trees_all_close(permuted_logits, logits, atol=1e-4)
    # The updated running statistics are the permuted updated statistics.
    expected = permute.apply(spec, _random_perm(spec, 3), {**variables, **state})
    chex.assert_trees_all_close(permuted_state["batch_stats"], expected["batch_stats"],
                                atol=1e-5)


def test_vgg_spec_layout():
    _, _, spec = _setup("vgg13_small")
    assert spec.axes_to_perm["params/conv1/kernel"] == (None, None, "P_0", "P_1")
    assert spec.axes_to_perm["batch_stats/bn9/var"] == ("P_9",)
    assert spec.axes_to_perm["params/classifier/dense/kernel"] == ("P_9", None)
    assert spec.axes_to_perm["params/classifier/dense/bias"] == (None,)
    assert spec.sizes["P_0"] == 8 and len(spec.sizes) == 10


def test_resnet_spec_shares_stream_permutations():
    _, _, spec = _setup("resnet18_small")
    assert sorted(spec.sizes) == sorted(
        [f"P_stage{s}" for s in range(4)] + [f"P_stage{s}_block{b}" for s in range(4)
                                            for b in range(2)])
    assert spec.axes_to_perm["params/stem_conv/kernel"][3] == "P_stage0"
    assert spec.axes_to_perm["params/stage0_block1/conv2/kernel"] == (
        None, None, "P_stage0_block1", "P_stage0")
    assert spec.axes_to_perm["params/stage1_block0/shortcut_conv/kernel"] == (
        None, None, "P_stage0", "P_stage1")
    assert spec.axes_to_perm["batch_stats/stage1_block1/bn2/mean"] == ("P_stage1",)
    assert spec.axes_to_perm["params/stage1_block1/conv1/kernel"][2] == "P_stage1"
    assert spec.axes_to_perm["params/classifier/dense/kernel"] == ("P_stage3", None)


def test_spec_for_rejects_unsupported_models():
    model = nn.Dense(3)
    with pytest.raises(InputError, match="Dense"):
        permute.spec_for(model, model.init(jax.random.key(0), jnp.zeros((1, 2))))


def _replace_entry(spec, path, new_axes):
    """``spec`` with leaf ``path``'s axes given by ``new_axes`` in both views."""
    perm_to_axes = {name: tuple(e for e in entries if e[0] != path)
                    for name, entries in spec.perm_to_axes.items()}
    for axis, name in enumerate(new_axes):
        if name is not None:
            perm_to_axes[name] += ((path, axis),)
    return dataclasses.replace(spec, perm_to_axes=perm_to_axes,
                               axes_to_perm={**spec.axes_to_perm, path: tuple(new_axes)})


def test_validate_names_the_bad_leaf():
    _, variables, spec = _setup("vgg13_small")
    permute.validate(spec, variables)
    leaf = "params/conv3/kernel"
    # Wrong axis: P_3 (16 channels) moved to the 3×3 spatial axis.
    with pytest.raises(InputError, match=leaf):
        permute.validate(_replace_entry(spec, leaf, ("P_3", None, "P_2", None)), variables)
    # Wrong size: P_2 (16 channels) on the output axis of conv4 (32 channels).
    with pytest.raises(InputError, match="params/conv4/kernel"):
        permute.validate(_replace_entry(spec, "params/conv4/kernel",
                                        (None, None, "P_3", "P_2")), variables)
    # An entry whose length is not the leaf's ndim.
    with pytest.raises(InputError, match="batch_stats/bn0/mean"):
        permute.validate(_replace_entry(spec, "batch_stats/bn0/mean", (None, "P_0")), variables)
    # Missing leaf entry, and an entry without a leaf.
    missing = dict(spec.axes_to_perm)
    del missing["params/bn2/bias"]
    with pytest.raises(InputError, match="params/bn2/bias"):
        permute.validate(dataclasses.replace(spec, axes_to_perm=missing), variables)
    stats = {k: v for k, v in variables["batch_stats"].items() if k != "bn5"}
    with pytest.raises(InputError, match="batch_stats/bn5/"):
        permute.validate(spec, {**variables, "batch_stats": stats})
    # An axis listed under a permutation but out of range of the leaf.
    bad = dict(spec.perm_to_axes)
    bad["P_1"] += (("params/bn1/scale", 1),)
    with pytest.raises(InputError, match="params/bn1/scale"):
        permute.validate(dataclasses.replace(spec, perm_to_axes=bad), variables)


def test_apply_composes_with_the_inverse():
    _, variables, spec = _setup("resnet18_small")
    perm = _random_perm(spec, 5)
    inverse = {name: jnp.argsort(p) for name, p in perm.items()}
    roundtrip = permute.apply(spec, inverse, permute.apply(spec, perm, variables))
    chex.assert_trees_all_equal(roundtrip, variables)
    with pytest.raises(InputError, match="P_stage2"):
        permute.apply(spec, {k: v for k, v in perm.items() if k != "P_stage2"}, variables)


@pytest.mark.parametrize("name", PRESETS)
def test_weight_matching_recovers_a_permutation(name):
    _, a, spec = _setup(name)
    b = permute.apply(spec, _random_perm(spec, 6), a)
    perm = permute.weight_matching(spec, a, b, jax.random.key(7))
    chex.assert_trees_all_equal(permute.apply(spec, perm, b), a)


@pytest.mark.parametrize("method", [permute.activation_matching,
                                    permute.greedy_activation_matching])
@pytest.mark.parametrize("name", ["cnn4", "resnet18_small"])
def test_activation_matching_recovers_a_permutation(name, method):
    model, a, spec = _setup(name)
    b = permute.apply(spec, _random_perm(spec, 8), a)
    perm = method(spec, model, a, b, [_images(9), _images(10)])
    chex.assert_trees_all_equal(permute.apply(spec, perm, b), a)


def test_greedy_activation_matching_rejects_iterators():
    model, a, spec = _setup("cnn4")
    with pytest.raises(InputError, match="re-iterable"):
        permute.greedy_activation_matching(spec, model, a, a, iter([_images(9)]))
    with pytest.raises(InputError, match="at least one batch"):
        permute.activation_matching(spec, model, a, a, [])
