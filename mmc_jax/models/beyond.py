"""Presets beyond the paper's models, to show that everything works on any architecture:
an MLP with LayerNorm, a tiny Vision Transformer (multi-head attention, no BatchNorm) and a
wide pre-activation ResNet with BatchNorm or GroupNorm. Their permutation symmetries come
from ``permute.derive_spec`` (GroupNorm: a permutation of its groups times one within them).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from mmc_jax.models import layers


class MLP(layers.ImageClassifier):
    """Flattened image → [Dense → LayerNorm → ReLU] per hidden layer → linear classifier.

    ``conv_impl`` is accepted for a uniform ``models.create`` and unused.
    """

    hidden: Sequence[int] = (512, 256)

    def features(self, x, train: bool):
        """The last hidden layer's activations."""
        del train
        x = x.reshape(x.shape[0], -1)
        for i, features in enumerate(self.hidden):
            x = nn.Dense(layers.scaled(features, self.width), dtype=self.dtype, name=f"dense{i}")(x)
            x = nn.relu(nn.LayerNorm(dtype=self.dtype, name=f"norm{i}")(x))
        return x


class ViT(layers.ImageClassifier):
    """Patch embedding (a ``patch``×``patch`` convolution), learned position embeddings,
    ``depth`` pre-LayerNorm blocks of multi-head self-attention and a GELU MLP, a final
    LayerNorm, mean pooling over tokens and a linear classifier."""

    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    patch: int = 4

    def features(self, x, train: bool):
        """The final LayerNorm's output, averaged over tokens."""
        del train
        dim = layers.scaled(self.dim, self.width)
        x = nn.Conv(
            dim,
            (self.patch, self.patch),
            strides=(self.patch, self.patch),
            padding="VALID",
            dtype=self.dtype,
            name="patch_embed",
        )(x)
        x = x.reshape(x.shape[0], -1, dim)
        x = x + self.param("position", nn.initializers.normal(0.02), (1, x.shape[1], dim))
        for i in range(self.depth):
            y = nn.LayerNorm(dtype=self.dtype, name=f"block{i}_ln1")(x)
            x = x + nn.MultiHeadDotProductAttention(
                self.heads, dtype=self.dtype, name=f"block{i}_attn"
            )(y)
            y = nn.LayerNorm(dtype=self.dtype, name=f"block{i}_ln2")(x)
            y = nn.gelu(nn.Dense(dim * self.mlp_ratio, dtype=self.dtype, name=f"block{i}_fc1")(y))
            x = x + nn.Dense(dim, dtype=self.dtype, name=f"block{i}_fc2")(y)
        return nn.LayerNorm(dtype=self.dtype, name="final_ln")(x).mean(axis=1)


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
