"""The paper code's activation matching: recovers permutations, preserves the function, and
behaves as the code does (each batch re-solves on the aligned model, so the last one decides)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, models, permute
from mmc_jax.permute import layouts

PRESETS = ["cnn4", "resnet18_small"]
IMAGE_SHAPE = (16, 16, 3)


@functools.lru_cache(maxsize=None)
def _model(name):
    """The preset with XLA convolutions (short compilation), and its jitted forward pass in
    train mode (returning the new statistics) and eval mode."""
    model = models.create(name, 5, width=0.25 if name == "cnn4" else None, conv_impl="xla")
    return (
        model,
        jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"])),
        jax.jit(functools.partial(model.apply, train=False)),
    )


@functools.lru_cache(maxsize=None)
def _variables(name, seed):
    """He-initialised variables drawn with numpy (compiling ``model.init`` takes longer than
    the tests), whose BatchNorm statistics are those of one batch of images, as a trained
    net has: with arbitrary statistics some ReLUs are dead in eval mode, and dead channels
    cannot be told apart by their activations."""
    model, train_forward, _ = _model(name)
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE))
    )
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        key, shape = path[-1].key, shape.shape
        std = np.sqrt(2 / np.prod(shape[:-1])) if key == "kernel" else 0.1
        return (std * rng.standard_normal(shape) + (key in ("scale", "var"))).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    _, state = train_forward(variables, _images(100 + seed, n=32))
    # Running statistics after one step are 0.9 * old + 0.1 * batch (momentum 0.9).
    stats = jax.tree.map(
        lambda new, old: (new - 0.9 * old) / 0.1, state["batch_stats"], variables["batch_stats"]
    )
    return {**variables, "batch_stats": stats}


@functools.lru_cache(maxsize=None)
def _spec(name):
    return permute.spec_for(_model(name)[0], _variables(name, 0))


def _images(seed, n=16):
    return np.random.default_rng(seed).standard_normal((n, *IMAGE_SHAPE), np.float32)


def _random_perm(spec, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.permutation(size) for name, size in spec.sizes.items()}


@pytest.mark.parametrize("name", PRESETS)
def test_recovers_a_permutation_and_keeps_the_function(name):
    model, _, forward = _model(name)
    spec, a = _spec(name), _variables(name, 0)
    b = permute.apply(spec, _random_perm(spec, 1), a)
    perm = permute.paper_activation_matching(spec, model, a, b, [_images(2), _images(3)])
    assert all(p.dtype == jnp.int32 for p in perm.values())
    aligned = permute.apply(spec, perm, b)
    chex.assert_trees_all_equal(aligned, a)
    x = _images(4)
    chex.assert_trees_all_close(forward(aligned, x), forward(b, x), atol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_the_last_batch_decides_between_unrelated_models(name):
    model, _, forward = _model(name)
    spec, a, b = _spec(name), _variables(name, 0), _variables(name, 1)
    x1, x2 = _images(5), _images(6)
    both = permute.paper_activation_matching(spec, model, a, b, [x1, x2])
    chex.assert_trees_all_equal(both, permute.paper_activation_matching(spec, model, a, b, [x2]))
    # Unrelated models: the second batch's solve changes the first batch's assignments, and
    # the equality above needs it composed onto them.
    first = permute.paper_activation_matching(spec, model, a, b, [x1])
    assert any(not np.array_equal(first[k], both[k]) for k in spec.sizes)
    # Composition: solving batch 2 on b aligned by batch 1, then applying that, is one apply.
    aligned_1 = permute.apply(spec, first, b)
    second = permute.paper_activation_matching(spec, model, a, aligned_1, [x2])
    chex.assert_trees_all_equal(
        permute.apply(spec, both, b), permute.apply(spec, second, aligned_1)
    )
    x = _images(7)
    chex.assert_trees_all_close(forward(permute.apply(spec, both, b), x), forward(b, x), atol=1e-5)


def test_resnet_stream_is_matched_where_it_starts():
    model, variables = _model("resnet18_small")[0], _variables("resnet18_small", 0)
    groups = layouts.paper_groups(layouts.layout_groups(model, variables))
    sites = {g.perm: g.sites for g in groups}
    assert sites["P_stage0"] == [(("stem_bn",), True)]
    assert sites["P_stage2"] == [(("stage2_block0", "shortcut_bn"), True)]
    assert sites["P_stage1_block1"] == [(("stage1_block1", "bn1"), True)]
    chain, variables = _model("cnn4")[0], _variables("cnn4", 0)
    chain_groups = layouts.layout_groups(chain, variables)
    assert layouts.paper_groups(chain_groups) == chain_groups


def test_bad_batches():
    model, spec, a = _model("cnn4")[0], _spec("cnn4"), _variables("cnn4", 0)
    with pytest.raises(InputError, match="at least one batch"):
        permute.paper_activation_matching(spec, model, a, a, [])
    with pytest.raises(InputError, match="re-iterable"):
        permute.paper_activation_matching(spec, model, a, a, iter([_images(8)]))
