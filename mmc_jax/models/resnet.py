"""CIFAR ResNet-18: 3×3 stem without max-pool, BasicBlocks [2, 2, 2, 2] of widths
64/128/256/512, 1×1 conv + BN shortcuts where the shape changes, GAP, linear."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmc_jax.models import layers


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers with a residual connection."""

    channels: int
    strides: int = 1
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool):
        conv = functools.partial(layers.conv3x3, dtype=self.dtype, impl=self.conv_impl)
        y = conv(self.channels, self.strides, name="conv1")(x)
        y = nn.relu(layers.batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(self.channels, 1, name="conv2")(y)
        y = layers.batch_norm(train, self.dtype, name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.channels:
            x = layers.conv1x1(
                self.channels, self.strides, self.dtype, self.conv_impl, name="shortcut_conv"
            )(x)
            x = layers.batch_norm(train, self.dtype, name="shortcut_bn")(x)
        return nn.relu(x + y)


class ResNet(layers.ImageClassifier):
    """CIFAR-style ResNet.

    Attributes:
      num_classes: outputs of the classifier.
      stage_sizes: BasicBlocks per stage ([2, 2, 2, 2] for ResNet-18).
      stage_widths: channels per stage before the width multiplier.
      width: multiplier of every channel count.
      dtype: computation dtype (parameters stay float32).
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    stage_widths: Sequence[int] = (64, 128, 256, 512)

    def features(self, x, train: bool):
        """Pooled features after the stem and the stages."""
        x = self.conv_bn_relu(x, self.stage_widths[0], 1, train, "stem_conv", "stem_bn")
        for stage, (size, channels) in enumerate(zip(self.stage_sizes, self.stage_widths)):
            for block in range(size):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    layers.scaled(channels, self.width),
                    strides,
                    self.dtype,
                    self.conv_impl,
                    name=f"stage{stage}_block{block}",
                )(x, train)
        return layers.global_average_pool(x)
