"""The paper's "VGG-13": ten 3×3 conv–BN–ReLU blocks, stride-2 convs instead of pooling,
global average pooling and one linear layer (not the textbook VGG-13 with three FC layers)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmc_jax.models import layers

#: (channels, stride) of each conv block of the paper's VGG-13.
VGG13_BLOCKS = ((64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2),
                (512, 1), (512, 1))


class VGG(nn.Module):
    """Plain conv net: blocks of bias-free conv → BatchNorm → ReLU, GAP, linear.

    Attributes:
      num_classes: outputs of the classifier.
      blocks: (channels, stride) of each block, before the width multiplier.
      width: multiplier of every block's channels.
      dtype: computation dtype (parameters stay float32).

    Call ``module.apply(variables, x, train, return_features=True)`` to also get the pooled
    penultimate features ``[N, C]``.
    """

    num_classes: int
    blocks: Sequence[tuple[int, int]] = VGG13_BLOCKS
    width: float = 1.0
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        x = x.astype(self.dtype)
        for i, (channels, stride) in enumerate(self.blocks):
            x = layers.conv3x3(layers.scaled(channels, self.width), stride, self.dtype,
                               self.conv_impl, name=f"conv{i}")(x)
            x = layers.batch_norm(train, self.dtype, name=f"bn{i}")(x)
            x = nn.relu(x)
        return layers.finish(layers.global_average_pool(x), self.num_classes, return_features,
                             self.dtype)
