"""A small conv net for fast CPU demos: 3×3 conv–BN–ReLU layers, 2×2 max-pool after all
but the last, GAP, linear (16/32/64/128 channels: ~99k parameters)."""

from __future__ import annotations

from typing import Sequence

from mmc_jax.models import layers


class SmallCNN(layers.ImageClassifier):
    """Conv–BN–ReLU(–max-pool) stack with global average pooling and one linear layer."""

    channels: Sequence[int] = (16, 32, 64, 128)

    def features(self, x, train: bool):
        """Pooled features after the last conv–BN–ReLU."""
        for i, channels in enumerate(self.channels):
            x = self.conv_bn_relu(x, channels, 1, train, f"conv{i}", f"bn{i}")
            if i < len(self.channels) - 1:
                x = layers.max_pool_2x2(x)
        return layers.global_average_pool(x)
