"""Flax Linen models of the paper, and small presets for fast CPU runs.

Every model is called as ``module.apply(variables, x, train, return_features=False)`` on NHWC
float images of any height and width; it returns float32 logits, or ``(logits, features)``
with the pooled penultimate features when ``return_features=True``. Variables hold
``params`` and ``batch_stats`` (empty for ``mlp`` and ``vit_tiny``); train mode needs
``mutable=["batch_stats"]``.

>>> model = models.create("vgg13", num_classes=10)
>>> variables = models.init(model, jax.random.key(0), (32, 32, 3))

A Flax NNX model of the user's (``"pkg.mod:factory"`` with a factory taking
``(num_classes, *, rngs)``) comes back as an :class:`~mmc_jax.models.nnx_bridge.NNXModel`, which
has the same ``init`` and ``apply``.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmc_jax.models import layers, nnx_bridge
from mmc_jax.models.cnn import SmallCNN
from mmc_jax.models.mlp import MLP
from mmc_jax.models.nnx_bridge import NNXModel
from mmc_jax.models.resnet import ResNet
from mmc_jax.models.vgg import VGG, VGG13_BLOCKS
from mmc_jax.models.vit import ViT
from mmc_jax.models.wrn import WideResNet
from mmc_jax.runtime import one_shot_jit
from mmc_jax.runtime.errors import InputError

#: name -> constructor taking (num_classes, width=..., dtype=...).
PRESETS: dict[str, Callable[..., nn.Module]] = {
    "vgg13": functools.partial(VGG, blocks=VGG13_BLOCKS),
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2)),
    "vgg13_small": functools.partial(VGG, blocks=VGG13_BLOCKS, width=0.125),
    "resnet18_small": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), width=0.125),
    "cnn4": SmallCNN,
    # Beyond the paper: permutation specs from permute.derive_spec.
    "mlp": MLP,
    "vit_tiny": ViT,
    "vit_tiny_rms": functools.partial(ViT, norm="rms"),
    "wrn": WideResNet,
    "wrn_gn": functools.partial(WideResNet, norm="group"),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_name(name: str) -> str:
    """Returns ``name`` if it names a preset or an importable ``"module:factory"``, else
    raises InputError."""
    if name in PRESETS:
        return name
    if isinstance(name, str) and ":" in name:
        factory(name)
        return name
    raise InputError(
        f"unknown model {name!r}; choose from {', '.join(PRESETS)}, or give "
        "'my_package.my_module:make_model'"
    )


def factory(name: str) -> Callable[..., Any]:
    """The callable a ``"module:attribute"`` model name points to (imported)."""
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any import failure of the user's module
        raise InputError(
            f"model {name!r}: cannot import {module_name!r} ({type(err).__name__}: {err})"
        ) from None
    make = getattr(module, attribute, None)
    if not callable(make):
        raise InputError(f"model {name!r}: {module_name} has no callable {attribute!r}")
    return make


def create(
    name: str,
    num_classes: int,
    *,
    width: float | None = None,
    dtype: str | Any = "float32",
    conv_impl: str = "auto",
) -> nn.Module | NNXModel:
    """Builds a model by name.

    Args:
      name: ``"vgg13"``, ``"resnet18"`` (the paper's CIFAR variants), a small preset:
        ``"vgg13_small"``, ``"resnet18_small"`` (1/8 width), ``"cnn4"`` (4 conv layers);
        beyond the paper, ``"mlp"`` (LayerNorm), ``"vit_tiny"`` (attention; ``"vit_tiny_rms"``
        with RMSNorm, whose stream rotations are symmetries too), ``"wrn"`` and ``"wrn_gn"``
        (wide pre-activation ResNet, BatchNorm or GroupNorm); or
        your own model as ``"my_package.my_module:make_model"``, a callable taking
        ``num_classes`` and returning a Linen module called as ``module(x, train=...)``, or
        taking ``(num_classes, *, rngs)`` and returning a Flax NNX module called as
        ``module(x)`` (``width``, ``dtype`` and ``conv_impl`` apply to the presets only).
      num_classes: classifier outputs.
      width: channel multiplier (overrides the preset's).
      dtype: computation dtype, ``"float32"`` or ``"bfloat16"``; parameters stay float32.
      conv_impl: ``"auto"`` (XLA convolutions on GPU/TPU; on CPU, per layer, im2col
        matmuls for outputs of 4×4 pixels or fewer, XLA convolutions for the rest), ``"xla"``,
        ``"im2col"`` or ``"hybrid"`` (XLA convolutions forward, im2col gradients backward);
        the parameters are the same either way.

    Returns:
      A Flax Linen module, or for an NNX factory an
      :class:`~mmc_jax.models.nnx_bridge.NNXModel` (its structure built, and so checked, at
      once).
    """
    if num_classes < 1:
        raise InputError(f"num_classes must be positive, got {num_classes}")
    if check_name(name) not in PRESETS:
        if width is not None:
            raise InputError(f"width applies to the library's presets, not to {name!r}")
        make = factory(name)
        if nnx_bridge.takes_rngs(make):
            model = NNXModel(make, (num_classes,))
            _ = model.layout  # built now: a wrong factory fails here, with a one-line error
            return model
        module = make(num_classes)
        if not isinstance(module, nn.Module):
            raise InputError(
                f"model {name!r} returned {type(module).__name__}, not a Flax Linen module "
                "(nor an NNX one: an NNX factory takes (num_classes, *, rngs))"
            )
        return module
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if conv_impl not in layers.CONV_IMPLS:
        raise InputError(
            f"unknown conv_impl {conv_impl!r}; choose from {', '.join(layers.CONV_IMPLS)}"
        )
    kwargs = {"dtype": dtype, "conv_impl": conv_impl}
    if width is not None:
        if width <= 0:
            raise InputError(f"width must be positive, got {width}")
        kwargs["width"] = width
    return PRESETS[name](num_classes, **kwargs)


def init(model: nn.Module | NNXModel, key: jax.Array, image_shape: tuple[int, int, int]) -> dict:
    """Initial ``{"params", "batch_stats"}`` of ``model`` (a Linen module or an
    :class:`~mmc_jax.models.nnx_bridge.NNXModel`) for images of ``image_shape`` (compiled as
    a one-shot program, :func:`mmc_jax.runtime.one_shot_jit`)."""
    variables = one_shot_jit(functools.partial(model.init, train=False))(
        key, jnp.zeros((1, *image_shape), jnp.float32)
    )
    return dict(variables)


def num_params(variables: dict) -> int:
    """Number of trainable parameters (``params`` only)."""
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


__all__ = [
    "DTYPES",
    "MLP",
    "NNXModel",
    "PRESETS",
    "ResNet",
    "SmallCNN",
    "VGG",
    "ViT",
    "WideResNet",
    "check_name",
    "create",
    "factory",
    "init",
    "nnx_bridge",
    "num_params",
]
