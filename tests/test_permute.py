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
    """Model, random variables (BN parameters and statistics included) and the model's spec.

    XLA convolutions and numpy-drawn variables keep compilation short; the parameters are
    the same for either conv implementation.
    """
    model = models.create(name, 5, conv_impl="xla")
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE))
    )
    rng = np.random.default_rng(0)

    def draw(path, shape):
        if path[-1].key == "var":
            return rng.uniform(0.5, 2.0, shape.shape).astype(np.float32)
        scale = 1 / np.sqrt(np.prod(shape.shape[:-1])) if path[-1].key == "kernel" else 0.1
        return (scale * rng.standard_normal(shape.shape) + (path[-1].key == "scale")).astype(
            np.float32
        )

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    return model, variables, permute.spec_for(model, variables)


@functools.lru_cache(maxsize=None)
def _forward(name, train):
    """The jitted forward pass of preset ``name`` (train mode returns the new statistics)."""
    model = _setup(name)[0]
    if train:
        return jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    return jax.jit(functools.partial(model.apply, train=False))


@functools.lru_cache(maxsize=None)
def _calibrated(name):
    """``_setup(name)``'s variables with BatchNorm statistics of one batch of images, as a
    trained net has: the random statistics of ``_setup`` leave many ReLUs dead in eval mode,
    and dead channels cannot be told apart by their activations."""
    _, variables, _ = _setup(name)
    _, state = _forward(name, True)(variables, _images(11, n=8))
    # Running statistics after one step are 0.9 * old + 0.1 * batch (momentum 0.9).
    stats = jax.tree.map(
        lambda new, old: (new - 0.9 * old) / 0.1, state["batch_stats"], variables["batch_stats"]
    )
    return {**variables, "batch_stats": stats}


def _random_perm(spec, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.permutation(size) for name, size in spec.sizes.items()}


def _images(seed, n=16):
    return np.random.default_rng(seed).standard_normal((n, *IMAGE_SHAPE), np.float32)


@pytest.mark.parametrize("name", PRESETS)
def test_apply_preserves_function_in_eval_and_train_mode(name):
    _, variables, spec = _setup(name)
    perm = _random_perm(spec, 3)
    permuted = permute.apply(spec, perm, variables)
    x = _images(4, n=8)
    chex.assert_trees_all_close(
        _forward(name, False)(permuted, x), _forward(name, False)(variables, x), atol=1e-4
    )
    logits, state = _forward(name, True)(variables, x)
    permuted_logits, permuted_state = _forward(name, True)(permuted, x)
    chex.assert_trees_all_close(permuted_logits, logits, atol=1e-4)
    # The updated running statistics are the permuted updated statistics.
    expected = permute.apply(spec, perm, {**variables, **state})
    chex.assert_trees_all_close(permuted_state["batch_stats"], expected["batch_stats"], atol=1e-5)


def test_vgg_spec_layout():
    _, _, spec = _setup("vgg13_small")
    assert spec.axes_to_perm["params/conv1/kernel"] == (None, None, "P_conv0", "P_conv1")
    assert spec.axes_to_perm["batch_stats/bn9/var"] == ("P_conv9",)
    assert spec.axes_to_perm["params/classifier/dense/kernel"] == ("P_conv9", None)
    assert spec.axes_to_perm["params/classifier/dense/bias"] == (None,)
    assert spec.sizes["P_conv0"] == 8 and len(spec.sizes) == 10


def test_resnet_spec_shares_stream_permutations():
    _, _, spec = _setup("resnet18_small")
    stream = ["P_stem_conv"] + [f"P_stage{s}_block0/conv2" for s in (1, 2, 3)]
    assert sorted(spec.sizes) == sorted(
        stream + [f"P_stage{s}_block{b}/conv1" for s in range(4) for b in range(2)]
    )
    assert spec.axes_to_perm["params/stem_conv/kernel"][3] == "P_stem_conv"
    assert spec.axes_to_perm["params/stage0_block1/conv2/kernel"] == (
        None,
        None,
        "P_stage0_block1/conv1",
        "P_stem_conv",
    )
    assert spec.axes_to_perm["params/stage1_block0/shortcut_conv/kernel"] == (
        None,
        None,
        "P_stem_conv",
        "P_stage1_block0/conv2",
    )
    assert spec.axes_to_perm["batch_stats/stage1_block1/bn2/mean"] == ("P_stage1_block0/conv2",)
    assert spec.axes_to_perm["params/stage1_block1/conv1/kernel"][2] == "P_stage1_block0/conv2"
    assert spec.axes_to_perm["params/classifier/dense/kernel"] == ("P_stage3_block0/conv2", None)


def test_spec_for_rejects_unsupported_models():
    variables = {"params": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}}
    with pytest.raises(InputError, match="Dense"):
        permute.spec_for(nn.Dense(3), variables)


def _replace_entry(spec, path, new_axes):
    """``spec`` with leaf ``path``'s axes given by ``new_axes`` in both views."""
    perm_to_axes = {
        name: tuple(e for e in entries if e[0] != path)
        for name, entries in spec.perm_to_axes.items()
    }
    for axis, name in enumerate(new_axes):
        if name is not None:
            perm_to_axes[name] += ((path, axis),)
    return dataclasses.replace(
        spec, perm_to_axes=perm_to_axes, axes_to_perm={**spec.axes_to_perm, path: tuple(new_axes)}
    )


def test_validate_names_the_bad_leaf():
    _, variables, spec = _setup("vgg13_small")
    permute.validate(spec, variables)
    leaf = "params/conv3/kernel"
    # Wrong axis: P_conv3 (16 channels) moved to the 3×3 spatial axis.
    with pytest.raises(InputError, match=leaf):
        permute.validate(_replace_entry(spec, leaf, ("P_conv3", None, "P_conv2", None)), variables)
    # Wrong size: P_conv2 (16 channels) on the output axis of conv4 (32 channels).
    with pytest.raises(InputError, match="params/conv4/kernel"):
        permute.validate(
            _replace_entry(spec, "params/conv4/kernel", (None, None, "P_conv3", "P_conv2")),
            variables,
        )
    # An entry whose length is not the leaf's ndim.
    with pytest.raises(InputError, match="batch_stats/bn0/mean"):
        permute.validate(_replace_entry(spec, "batch_stats/bn0/mean", (None, "P_conv0")), variables)
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
    bad["P_conv1"] += (("params/bn1/scale", 1),)
    with pytest.raises(InputError, match="params/bn1/scale"):
        permute.validate(dataclasses.replace(spec, perm_to_axes=bad), variables)


def test_apply_composes_with_the_inverse():
    _, variables, spec = _setup("resnet18_small")
    perm = _random_perm(spec, 5)
    inverse = {name: np.argsort(p) for name, p in perm.items()}
    roundtrip = permute.apply(spec, inverse, permute.apply(spec, perm, variables))
    chex.assert_trees_all_equal(roundtrip, variables)
    with pytest.raises(InputError, match="P_stage2_block0/conv2"):
        permute.apply(
            spec, {k: v for k, v in perm.items() if k != "P_stage2_block0/conv2"}, variables
        )


@pytest.mark.parametrize("name", PRESETS)
def test_weight_matching_recovers_a_permutation(name):
    _, a, spec = _setup(name)
    b = permute.apply(spec, _random_perm(spec, 6), a)
    perm = permute.weight_matching(spec, a, b, jax.random.key(7))
    chex.assert_trees_all_equal(permute.apply(spec, perm, b), a)


@pytest.mark.parametrize(
    "method", [permute.activation_matching, permute.greedy_activation_matching]
)
@pytest.mark.parametrize("name", ["cnn4", "resnet18_small"])
def test_activation_matching_recovers_a_permutation(name, method):
    model, _, spec = _setup(name)
    a = _calibrated(name)
    b = permute.apply(spec, _random_perm(spec, 8), a)
    perm = method(spec, model, a, b, [_images(9), _images(10)])
    chex.assert_trees_all_equal(permute.apply(spec, perm, b), a)


def test_greedy_activation_matching_rejects_iterators():
    model, a, spec = _setup("cnn4")
    with pytest.raises(InputError, match="re-iterable"):
        permute.greedy_activation_matching(spec, model, a, a, iter([_images(9)]))
    with pytest.raises(InputError, match="at least one batch"):
        permute.activation_matching(spec, model, a, a, [])
