"""A wide pre-activation ResNet with BatchNorm or GroupNorm (GroupNorm: a permutation of
its groups times one within them, as ``permute.derive_spec`` derives it).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from mmc_jax.models import layers


class WideResNet(layers.ImageClassifier):
    """A wide pre-activation ResNet: a 3×3 stem, then per stage ``blocks`` residual blocks
    [norm → ReLU → conv] × 2 (a 1×1 projection where the shape changes), a final norm,
    global average pooling and a linear classifier. ``norm``: ``"batch"`` or ``"group"``
    (GroupNorm with ``groups`` groups)."""

    stages: Sequence[int] = (32, 64, 128)
    blocks: int = 1
    norm: str = "batch"
    groups: int = 8

    def _norm(self, train: bool, name: str):
        if self.norm == "group":
            return nn.GroupNorm(num_groups=self.groups, dtype=self.dtype, name=name)
        return layers.batch_norm(train, self.dtype, name=name)

    def features(self, x, train: bool):
        """Pooled features after the final norm and ReLU."""

        def conv(c, s, name):
            return layers.conv3x3(c, s, self.dtype, self.conv_impl, name=name)

        x = conv(layers.scaled(self.stages[0], self.width), 1, "stem")(x)
        for s, channels in enumerate(self.stages):
            channels = layers.scaled(channels, self.width)
            for b in range(self.blocks):
                stride = 2 if s > 0 and b == 0 else 1
                name = f"stage{s}_block{b}"
                y = nn.relu(self._norm(train, f"{name}_norm1")(x))
                shortcut = x
                if stride != 1 or x.shape[-1] != channels:
                    shortcut = layers.conv1x1(
                        channels, stride, self.dtype, self.conv_impl, name=f"{name}_project"
                    )(y)
                y = conv(channels, stride, f"{name}_conv1")(y)
                y = nn.relu(self._norm(train, f"{name}_norm2")(y))
                x = shortcut + conv(channels, 1, f"{name}_conv2")(y)
        x = nn.relu(self._norm(train, "final_norm")(x))
        return layers.global_average_pool(x)
