"""Checkpoints of the paper's PyTorch code as mmc_jax variables, and back.

The paper's ``models.py`` names its VGG-13 parameters ``layers.<i>.conv1.weight`` and
``layers.<i>.bn1.{weight,bias,running_mean,running_var}``, its ResNet-18 ones ``conv1``,
``bn1``, ``layer<s>.<b>.{conv1,bn1,conv2,bn2,shortcut_conv,shortcut_bn}``, and both heads
``linear``. :func:`variables_from_torch` maps such a ``state_dict`` onto the variables of
``models.create("vgg13" | "resnet18", num_classes)``: convolution kernels go from OIHW to
HWIO, linear weights are transposed, BatchNorm's ``weight``/``bias`` become ``scale``/``bias``
and its running statistics ``mean``/``var`` (``num_batches_tracked`` is dropped). The result
computes the same logits as the PyTorch model in eval mode, on NHWC instead of NCHW images.

PyTorch is needed only by :func:`load_torch_checkpoint` (``pip install torch``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import jax
import numpy as np
from flax import traverse_util

from mmc_jax import models
from mmc_jax.runtime.errors import InputError

#: Model presets whose PyTorch names are known.
ARCHITECTURES = ("vgg13", "resnet18")

_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def torch_name(architecture: str, collection: str, path: tuple[str, ...]) -> str:
    """The paper code's ``state_dict`` key of one mmc_jax variable.

    Args:
      architecture: one of :data:`ARCHITECTURES`.
      collection: ``"params"`` or ``"batch_stats"``.
      path: the variable's path in its collection, e.g. ``("conv3", "kernel")``.
    """
    *modules, leaf = path
    if modules == ["classifier", "dense"]:
        return f"linear.{'weight' if leaf == 'kernel' else 'bias'}"
    suffix = "weight" if leaf == "kernel" else _BN[leaf]
    if architecture == "vgg13":
        kind, index = re.fullmatch(r"(conv|bn)(\d+)", modules[0]).groups()
        return f"layers.{index}.{kind}1.{suffix}"
    if modules[0] in ("stem_conv", "stem_bn"):
        return f"{'conv1' if modules[0] == 'stem_conv' else 'bn1'}.{suffix}"
    stage, block = re.fullmatch(r"stage(\d+)_block(\d+)", modules[0]).groups()
    return f"layer{int(stage) + 1}.{block}.{modules[1]}.{suffix}"


def _to_jax(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:  # conv: OIHW → HWIO
        return array.transpose(2, 3, 1, 0)
    if leaf == "kernel":  # linear: [out, in] → [in, out]
        return array.T
    return array


def _to_torch(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if leaf == "kernel":
        return array.T
    return array


def _template(architecture: str, num_classes: int) -> dict:
    """Shapes of the mmc_jax variables, without computing them."""
    model = models.create(architecture, num_classes)
    return jax.eval_shape(lambda: models.init(model, jax.random.key(0), (32, 32, 3)))


def variables_from_torch(
    state_dict: Mapping[str, Any], architecture: str, num_classes: Optional[int] = None
) -> dict:
    """mmc_jax variables (``{"params", "batch_stats"}``) from a paper-code ``state_dict``.

    Args:
      state_dict: parameter and buffer names to tensors or arrays (a ``module.`` prefix,
        left by ``DataParallel``, is removed).
      architecture: ``"vgg13"`` or ``"resnet18"``.
      num_classes: classifier outputs (default: read off ``linear.weight``).

    Raises:
      InputError: unknown architecture, or names or shapes that do not match it.
    """
    if architecture not in ARCHITECTURES:
        raise InputError(
            f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}"
        )
    arrays = {k.removeprefix("module."): np.asarray(_numpy(v)) for k, v in state_dict.items()}
    if "linear.weight" not in arrays:
        raise InputError(f"not a {architecture} state_dict of the paper's code: no 'linear.weight'")
    num_classes = num_classes or arrays["linear.weight"].shape[0]
    out, used = {}, set()
    for collection, tree in _template(architecture, num_classes).items():
        flat = {}
        for path, spec in traverse_util.flatten_dict(tree).items():
            name = torch_name(architecture, collection, path)
            if name not in arrays:
                raise InputError(
                    f"state_dict has no {name!r} (needed for {collection}/"
                    f"{'/'.join(path)} of {architecture})"
                )
            value = _to_jax(path[-1], arrays[name]).astype(np.float32)
            if value.shape != spec.shape:
                raise InputError(
                    f"{name!r} has shape {arrays[name].shape}, which does not fit "
                    f"{architecture} ({collection}/{'/'.join(path)}: {spec.shape})"
                )
            flat[path] = value
            used.add(name)
        out[collection] = traverse_util.unflatten_dict(flat)
    extra = sorted(k for k in arrays if k not in used and not k.endswith("num_batches_tracked"))
    if extra:
        raise InputError(
            f"state_dict entries unknown to {architecture}: {', '.join(extra[:5])}"
            + (" ..." if len(extra) > 5 else "")
        )
    return out


def variables_to_torch(variables: Mapping, architecture: str) -> dict[str, np.ndarray]:
    """The paper code's ``state_dict`` (as NumPy arrays) of mmc_jax variables; the inverse of
    :func:`variables_from_torch` (``num_batches_tracked`` is not produced)."""
    if architecture not in ARCHITECTURES:
        raise InputError(
            f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}"
        )
    out = {}
    for collection in ("params", "batch_stats"):
        for path, value in traverse_util.flatten_dict(dict(variables[collection])).items():
            out[torch_name(architecture, collection, path)] = _to_torch(path[-1], np.asarray(value))
    return out


def load_torch_checkpoint(path, architecture: str, num_classes: Optional[int] = None) -> dict:
    """mmc_jax variables from a ``torch.save``-d checkpoint of the paper's code: a
    ``state_dict``, or a dict holding one under ``"state_dict"``/``"model"``/``"net"``.
    Needs PyTorch."""
    try:
        import torch
    except ImportError:
        raise InputError("loading PyTorch checkpoints needs torch (pip install torch)") from None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "net"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    return variables_from_torch(checkpoint, architecture, num_classes)


def _numpy(value):
    """A torch tensor or array-like as a NumPy array (torch itself is not imported)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


__all__ = [
    "ARCHITECTURES",
    "load_torch_checkpoint",
    "torch_name",
    "variables_from_torch",
    "variables_to_torch",
]
