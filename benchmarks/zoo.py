"""Models of current architectures written outside the library, one per pattern that the
derived permutation specs cover beyond plain layers: a depthwise convolution (ConvNeXt), a
grouped convolution (ResNeXt), a fused q/k/v projection split into heads, a gated MLP, a
token embedding, layers stacked with ``nn.scan``, and a Flax NNX model.
``MODELS[name](quick)`` gives the module and an example input."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from mmc_jax.models import nnx_bridge


class ConvNeXt(nn.Module):
    """Patchify stem, ConvNeXt blocks (depthwise 7×7, LayerNorm, 4× inverted MLP)."""

    dim: int = 96
    depth: int = 3

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.LayerNorm(name="stem_norm")(nn.Conv(self.dim, (4, 4), (4, 4), name="stem")(x))
        for i in range(self.depth):
            h = nn.Conv(self.dim, (7, 7), feature_group_count=self.dim, name=f"block{i}_dw")(x)
            h = nn.gelu(nn.Dense(4 * self.dim, name=f"block{i}_up")(nn.LayerNorm()(h)))
            x = x + nn.Dense(self.dim, name=f"block{i}_down")(h)
        return nn.Dense(10, name="head")(nn.LayerNorm(name="final_norm")(x.mean((1, 2))))


class ResNeXt(nn.Module):
    """Bottleneck blocks whose 3×3 convolution runs in ``groups`` feature groups."""

    width: int = 128
    groups: int = 8

    @nn.compact
    def __call__(self, x, train=False):
        norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        x = nn.relu(norm()(nn.Conv(64, (3, 3), name="stem")(x)))
        for i in range(2):
            h = nn.relu(norm()(nn.Conv(self.width, (1, 1), name=f"block{i}_reduce")(x)))
            h = nn.Conv(self.width, (3, 3), feature_group_count=self.groups, name=f"block{i}_g")(h)
            h = nn.relu(norm()(h))
            x = nn.relu(x + norm()(nn.Conv(64, (1, 1), name=f"block{i}_expand")(h)))
        return nn.Dense(10, name="head")(x.mean((1, 2)))


class FusedViT(nn.Module):
    """Pre-LN transformer blocks whose q, k and v come from one projection (``jnp.split``),
    each reshaped into heads."""

    dim: int = 128
    heads: int = 4
    depth: int = 2

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(self.dim, (4, 4), (4, 4), name="patchify")(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        split = lambda t: t.reshape(*t.shape[:2], self.heads, -1)  # noqa: E731
        for i in range(self.depth):
            qkv = nn.Dense(3 * self.dim, name=f"block{i}_qkv")(nn.LayerNorm()(x))
            q, k, v = jnp.split(qkv, 3, axis=-1)
            att = nn.dot_product_attention(split(q), split(k), split(v))
            x = x + nn.Dense(self.dim, name=f"block{i}_proj")(att.reshape(x.shape))
            h = nn.gelu(nn.Dense(2 * self.dim, name=f"block{i}_up")(nn.LayerNorm()(x)))
            x = x + nn.Dense(self.dim, name=f"block{i}_down")(h)
        return nn.Dense(10, name="head")(nn.LayerNorm()(x).mean(1))


class GatedMLP(nn.Module):
    """Residual SwiGLU blocks: one projection sliced into value and gate halves."""

    dim: int = 256
    hidden: int = 512

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(self.dim, name="embed")(x.reshape(x.shape[0], -1))
        for i in range(2):
            h = nn.Dense(2 * self.hidden, name=f"block{i}_gate_up")(nn.LayerNorm()(x))
            h = h[..., : self.hidden] * nn.silu(h[..., self.hidden :])
            x = x + nn.Dense(self.dim, name=f"block{i}_down")(h)
        return nn.Dense(10, name="head")(x)


class TokenClassifier(nn.Module):
    """Token embedding, two dense layers, mean over the sequence."""

    vocab: int = 1000
    dim: int = 128

    @nn.compact
    def __call__(self, tokens, train=False):
        h = nn.Embed(self.vocab, self.dim, name="embed")(tokens)
        h = nn.relu(nn.Dense(2 * self.dim, name="fc")(nn.LayerNorm()(h)))
        return nn.Dense(10, name="head")(nn.Dense(self.dim, name="out")(h).mean(1))


class _Block(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x, _=None):
        h = nn.gelu(nn.Dense(4 * self.dim, name="up")(nn.LayerNorm(name="norm")(x)))
        return x + nn.Dense(self.dim, name="down")(h), None


class ScannedMLP(nn.Module):
    """Residual MLP blocks stacked with ``nn.scan`` (weights on a leading layer axis)."""

    dim: int = 128
    depth: int = 4

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(self.dim, name="embed")(x.reshape(x.shape[0], -1))
        scanned = nn.scan(
            _Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth
        )
        x, _ = scanned(self.dim, name="blocks")(x, None)
        return nn.Dense(10, name="head")(x)


class NNXResidualCNN(nnx.Module):
    """A Flax NNX model: conv stem, BatchNorm, residual blocks of two convolutions in an
    ``nnx.List``."""

    def __init__(self, num_classes: int, width: int = 64, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, width, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(width, rngs=rngs)
        conv = lambda: nnx.Conv(width, width, (3, 3), rngs=rngs)  # noqa: E731
        self.blocks = nnx.List([nnx.List([conv(), conv()]) for _ in range(2)])
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.norm(self.stem(x)))
        for inner, outer in self.blocks:
            x = x + outer(nnx.relu(inner(x)))
        return self.head(x.mean((1, 2)))


def _images():
    return jnp.zeros((2, 32, 32, 3))


#: name → ``quick → (module, example input)``.
MODELS = {
    "convnext": lambda quick: (ConvNeXt(dim=32 if quick else 96), _images()),
    "resnext": lambda quick: (ResNeXt(width=32 if quick else 128), _images()),
    "fused_vit": lambda quick: (FusedViT(dim=32 if quick else 128), _images()),
    "gated_mlp": lambda quick: (
        GatedMLP(dim=64 if quick else 256, hidden=128 if quick else 512),
        _images(),
    ),
    "tokens": lambda quick: (
        TokenClassifier(dim=32 if quick else 128),
        jax.random.randint(jax.random.key(0), (2, 16), 0, 1000),
    ),
    "scanned_mlp": lambda quick: (ScannedMLP(dim=32 if quick else 128), _images()),
    "nnx_cnn": lambda quick: (
        nnx_bridge.NNXModel(NNXResidualCNN, (10, 16 if quick else 64)),
        _images(),
    ),
}
