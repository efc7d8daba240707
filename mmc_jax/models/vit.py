"""A tiny Vision Transformer (multi-head attention, no BatchNorm): the attention heads and
the residual stream are what ``permute.derive_spec`` has to find.
"""

from __future__ import annotations

import flax.linen as nn

from mmc_jax.models import layers


class ViT(layers.ImageClassifier):
    """Patch embedding (a ``patch``×``patch`` convolution), learned position embeddings,
    ``depth`` pre-norm blocks of multi-head self-attention and a GELU MLP, a final norm, mean
    pooling over tokens and a linear classifier.

    ``norm``: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm without a scale, whose gain the
    next layer's weights carry): then the residual stream has every rotation as a symmetry,
    not only permutations (``permute.rotate``)."""

    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    patch: int = 4
    norm: str = "layer"

    def _norm(self, name: str):
        if self.norm == "rms":
            return nn.RMSNorm(use_scale=False, dtype=self.dtype, name=name)
        return nn.LayerNorm(dtype=self.dtype, name=name)

    def features(self, x, train: bool):
        """The final norm's output, averaged over tokens."""
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
            y = self._norm(f"block{i}_ln1")(x)
            x = x + nn.MultiHeadDotProductAttention(
                self.heads, dtype=self.dtype, name=f"block{i}_attn"
            )(y)
            y = self._norm(f"block{i}_ln2")(x)
            y = nn.gelu(nn.Dense(dim * self.mlp_ratio, dtype=self.dtype, name=f"block{i}_fc1")(y))
            x = x + nn.Dense(dim, dtype=self.dtype, name=f"block{i}_fc2")(y)
        return self._norm("final_ln")(x).mean(axis=1)
