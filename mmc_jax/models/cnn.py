"""A small conv net for fast CPU demos: 3×3 conv–BN–ReLU layers, 2×2 max-pool after all
but the last, GAP, linear (16/32/64/128 channels: ~99k parameters)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmc_jax.models import layers


class SmallCNN(nn.Module):
    """Conv–BN–ReLU(–max-pool) stack with global average pooling and one linear layer.

    ``return_features=True`` also returns the pooled penultimate features ``[N, C]``.
    """

    num_classes: int
    channels: Sequence[int] = (16, 32, 64, 128)
    width: float = 1.0
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        x = x.astype(self.dtype)
        for i, channels in enumerate(self.channels):
            x = layers.conv3x3(layers.scaled(channels, self.width), 1, self.dtype,
                               self.conv_impl, name=f"conv{i}")(x)
            x = nn.relu(layers.batch_norm(train, self.dtype, name=f"bn{i}")(x))
            if i < len(self.channels) - 1:
                x = layers.max_pool_2x2(x)
        return layers.finish(layers.global_average_pool(x), self.num_classes, return_features,
                             self.dtype)
