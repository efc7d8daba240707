"""Models: shapes for any input size, parameter counts, conv implementations agree."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, models
from mmc_jax.models import layers


def _param_count(name):
    model = models.create(name, 10)
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
    return sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


def test_full_width_parameter_counts_match_pytorch():
    # torch: sum(p.numel() for p in model.parameters()) of the paper code's CIFAR models.
    assert _param_count("vgg13") == 9_413_066
    assert _param_count("resnet18") == 11_173_962


@pytest.mark.parametrize("name", ["vgg13_small", "resnet18_small", "cnn4"])
@pytest.mark.parametrize("hw", [(32, 32), (64, 32), (28, 28)])
def test_output_and_feature_shapes(name, hw):
    model = models.create(name, 7)
    variables = models.init(model, jax.random.key(0), (*hw, 3))
    assert set(variables) == {"params", "batch_stats"}
    x = jax.random.normal(jax.random.key(1), (2, *hw, 3))
    logits, features = model.apply(variables, x, train=False, return_features=True)
    chex.assert_shape(logits, (2, 7))
    assert features.ndim == 2 and features.shape[0] == 2
    # The classifier acts on exactly these features.
    dense = variables["params"]["classifier"]["dense"]
    chex.assert_trees_all_close(logits, features @ dense["kernel"] + dense["bias"], atol=1e-5)
    (train_logits, updates) = model.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_shape(train_logits, (2, 7))
    chex.assert_trees_all_equal_structs(updates["batch_stats"], variables["batch_stats"])


@pytest.mark.parametrize("impl", [layers.im2col_conv, layers.hybrid_conv])
@pytest.mark.parametrize("kernel,strides", [(3, 1), (3, 2), (1, 1), (1, 2)])
def test_cpu_convs_equal_xla_conv_and_its_gradients(impl, kernel, strides):
    x = jax.random.normal(jax.random.key(0), (3, 10, 8, 5))
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, 5, 6))
    expected = jax.lax.conv_general_dilated(
        x,
        k,
        (strides, strides),
        [(kernel // 2,) * 2] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    got = impl(x, k, strides, kernel // 2)
    chex.assert_trees_all_close(got, expected, atol=1e-4, rtol=1e-4)

    def grads(conv):
        return jax.grad(lambda x, k: (conv(x, k) ** 2).sum(), argnums=(0, 1))(x, k)

    chex.assert_trees_all_close(
        grads(lambda x, k: impl(x, k, strides, kernel // 2)),
        grads(
            lambda x, k: jax.lax.conv_general_dilated(
                x,
                k,
                (strides, strides),
                [(kernel // 2,) * 2] * 2,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        ),
        atol=1e-3,
        rtol=1e-4,
    )


def test_auto_conv_is_im2col_for_outputs_of_16_pixels_or_fewer_on_cpu():
    """The documented CPU rule (benchmarks/conv_layers.py): XLA's convolution, except one
    im2col matmul where the output has at most 4×4 pixels."""
    if jax.default_backend() != "cpu":
        assert layers.resolve_conv_impl("auto", 4) == "xla"
        return
    assert layers.resolve_conv_impl("auto", 16) == "im2col"
    assert layers.resolve_conv_impl("auto", 4) == "im2col"
    assert layers.resolve_conv_impl("auto", 64) == "xla"
    assert layers.resolve_conv_impl("auto", 1024) == "xla"
    assert layers.resolve_conv_impl("hybrid", 4) == "hybrid"
    with pytest.raises(ValueError, match="unknown conv implementation"):
        layers.resolve_conv_impl("winograd")


@pytest.mark.parametrize("name", ["vgg13_small", "resnet18_small"])
def test_conv_implementations_share_parameters_and_outputs(name):
    a = models.create(name, 10, conv_impl="xla")
    variables = models.init(a, jax.random.key(0), (32, 32, 3))
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    for impl in ("im2col", "hybrid", "auto"):
        b = models.create(name, 10, conv_impl=impl)
        chex.assert_trees_all_equal_shapes(
            variables, models.init(b, jax.random.key(0), (32, 32, 3))
        )
        chex.assert_trees_all_close(a.apply(variables, x), b.apply(variables, x), atol=1e-4)


def test_max_pool_2x2_matches_flax():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    chex.assert_trees_all_equal(layers.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_bfloat16_compute_keeps_float32_parameters():
    model = models.create("cnn4", 10, dtype="bfloat16")
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = model.apply(variables, jnp.ones((2, 32, 32, 3)))
    assert logits.dtype == jnp.float32
    full = models.create("cnn4", 10).apply(variables, jnp.ones((2, 32, 32, 3)))
    chex.assert_trees_all_close(logits, full, atol=0.1)


def test_pytorch_style_initialisation_bounds():
    variables = models.init(models.create("cnn4", 10), jax.random.key(0), (32, 32, 3))
    kernel = variables["params"]["conv1"]["kernel"]  # fan_in = 3 * 3 * 16
    bound = 1 / np.sqrt(3 * 3 * 16)
    assert float(jnp.abs(kernel).max()) <= bound and float(jnp.abs(kernel).max()) > 0.9 * bound


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": "vgg19"}, "unknown model 'vgg19'"),
        ({"name": "cnn4", "dtype": "float16"}, "unknown dtype 'float16'"),
        ({"name": "cnn4", "width": -1.0}, "width must be positive"),
        ({"name": "cnn4", "conv_impl": "fft"}, "unknown conv_impl 'fft'"),
    ],
)
def test_create_rejects_bad_input(kwargs, message):
    with pytest.raises(InputError, match=message):
        models.create(num_classes=10, **kwargs)
