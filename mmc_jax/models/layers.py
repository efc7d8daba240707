"""Layers shared by the models, initialised like their PyTorch counterparts.

PyTorch's default ``kaiming_uniform_(a=sqrt(5))`` draws weights from U(±1/sqrt(fan_in)) and
``nn.Linear`` biases likewise; matching it keeps training dynamics (and the paper's learning
rates) comparable to the paper's code.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

#: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default weight initialisation.
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default bias initialisation."""
    bound = 1.0 / jnp.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


CONV_IMPLS = ("auto", "xla", "im2col", "hybrid")


def resolve_conv_impl(impl: str, out_pixels: int | None = None) -> str:
    """The implementation of one convolution.

    ``"auto"`` is plain XLA on GPU/TPU; on CPU it is ``"im2col"`` for small outputs
    (≤ 4×4 pixels) and XLA's convolution for the rest.

    XLA's CPU convolution runs on one thread (a layer pinned to one core takes as long as on
    two), at close to one core's peak for layers of 16+ channels at 8×8 and up, but it is
    pathological at small spatial size (a 2×2, 512-channel layer: 1.1 s forward for 128
    images against 13 ms as one im2col matmul, which XLA spreads over every core). Per
    layer, for forward, input and kernel gradients: ``benchmarks/conv_layers.py``.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; choose from {CONV_IMPLS}")
    if impl != "auto":
        return impl
    if jax.default_backend() != "cpu":
        return "xla"
    return "im2col" if out_pixels is not None and out_pixels <= 16 else "xla"


def im2col_conv(x, kernel, strides: int, padding: int):
    """``lax.conv`` (NHWC, HWIO) as shifted slices concatenated along channels, then one
    matmul. Equal to the convolution up to float rounding."""
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (h + 2 * padding - kh) // strides + 1
    wo = (w + 2 * padding - kw) // strides + 1
    patches = [
        x[:, i : i + strides * (ho - 1) + 1 : strides, j : j + strides * (wo - 1) + 1 : strides]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = patches[0] if len(patches) == 1 else jnp.concatenate(patches, axis=-1)
    return jnp.dot(patches.reshape(-1, kh * kw * c), kernel.reshape(kh * kw * c, f)).reshape(
        n, ho, wo, f
    )


def xla_conv(x, kernel, strides: int, padding: int):
    """``lax.conv_general_dilated`` in NHWC/HWIO with symmetric padding."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (strides, strides),
        [(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def hybrid_conv(x, kernel, strides: int, padding: int):
    """XLA's convolution forward, the im2col formulation's gradients backward."""
    return xla_conv(x, kernel, strides, padding)


def _hybrid_fwd(x, kernel, strides, padding):
    return xla_conv(x, kernel, strides, padding), (x, kernel)


def _hybrid_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    _, vjp = jax.vjp(lambda x, k: im2col_conv(x, k, strides, padding), x, kernel)
    return vjp(g)


hybrid_conv.defvjp(_hybrid_fwd, _hybrid_bwd)


class Conv(nn.Module):
    """Bias-free square convolution with symmetric padding (PyTorch's ``padding=k // 2``).

    Its parameter is ``kernel`` ``[k, k, C_in, C_out]``, exactly as in ``nn.Conv``, so the
    implementation (``impl``) can change without touching checkpoints.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    impl: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param(
            "kernel", torch_default_init, (k, k, x.shape[-1], self.features), jnp.float32
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        out_pixels = (-(-x.shape[-3] // self.strides)) * (-(-x.shape[-2] // self.strides))
        impl = resolve_conv_impl(self.impl, out_pixels)
        if impl == "im2col":
            return im2col_conv(x, kernel, self.strides, k // 2)
        if impl == "hybrid":
            return hybrid_conv(x, kernel, self.strides, k // 2)
        return xla_conv(x, kernel, self.strides, k // 2)


def conv3x3(
    features: int, strides: int = 1, dtype: Any = jnp.float32, impl: str = "auto", name=None
) -> Conv:
    """Bias-free 3×3 convolution with PyTorch's symmetric padding of 1 (also at stride 2)."""
    return Conv(features, 3, strides, impl, dtype, name=name)


def conv1x1(
    features: int, strides: int = 1, dtype: Any = jnp.float32, impl: str = "auto", name=None
) -> Conv:
    """Bias-free 1×1 convolution (ResNet shortcuts)."""
    return Conv(features, 1, strides, impl, dtype, name=name)


def max_pool_2x2(x):
    """2×2 max-pool with stride 2 as a reshape and a max (its gradient is much cheaper on
    CPU than ``select_and_scatter``); odd trailing rows/columns are dropped, like PyTorch."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def batch_norm(train: bool, dtype: Any = jnp.float32, name=None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults: momentum 0.1 (Flax 0.9), eps 1e-5, affine."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
    )


class Classifier(nn.Module):
    """The final linear layer, initialised like ``torch.nn.Linear``."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features):
        return nn.Dense(
            self.num_classes,
            kernel_init=torch_default_init,
            bias_init=torch_bias_init(features.shape[-1]),
            dtype=self.dtype,
            name="dense",
        )(features)


def global_average_pool(x):
    """Mean over the spatial axes of NHWC activations."""
    return jnp.mean(x, axis=(1, 2))


def scaled(width: int, multiplier: float) -> int:
    """Channel count ``width × multiplier``, at least 1."""
    return max(1, int(round(width * multiplier)))


def finish(features, num_classes: int, return_features: bool, dtype):
    """Logits from pooled features, in float32 (and the features when asked for)."""
    logits = Classifier(num_classes, dtype=dtype, name="classifier")(features)
    logits = logits.astype(jnp.float32)
    return (logits, features.astype(jnp.float32)) if return_features else logits


class ImageClassifier(nn.Module):
    """What every preset shares: its fields (classes, width multiplier, computation dtype,
    convolution implementation) and the frame of the forward pass — inputs cast to ``dtype``,
    the subclass's :meth:`features`, then :func:`finish`. ``return_features=True`` also
    returns the pooled penultimate features ``[N, C]``.
    """

    num_classes: int
    width: float = 1.0
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        features = self.features(x.astype(self.dtype), train)
        return finish(features, self.num_classes, return_features, self.dtype)

    def features(self, x, train: bool):
        """Pooled penultimate features ``[N, C]`` of inputs already cast to ``dtype``."""
        raise NotImplementedError

    def conv_bn_relu(
        self, x, channels: int, stride: int, train: bool, conv_name: str, bn_name: str
    ):
        """3×3 conv (``channels`` before the width multiplier) → BatchNorm → ReLU."""
        x = conv3x3(
            scaled(channels, self.width), stride, self.dtype, self.conv_impl, name=conv_name
        )(x)
        return nn.relu(batch_norm(train, self.dtype, name=bn_name)(x))
