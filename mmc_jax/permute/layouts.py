"""Hand-written permutation layouts of the library's own models (VGG, SmallCNN, ResNet):
the names :func:`spec_for` gives the permutations :func:`mmc_jax.permute.derive_spec` traces,
and the activations the paper code's matching compares, by layer name.

- VGG and SmallCNN are chains: permutation ``P_i`` acts on the output channels of ``conv{i}``
  (kernel axis 3), on every leaf of ``bn{i}`` (axis 0), and on the input channels of the next
  reader: ``conv{i+1}`` (kernel axis 2) or the classifier (``classifier/dense`` kernel axis 0).
- ResNet adds its identity shortcuts to the residual stream, so everything that writes to the
  stream between two 1×1 shortcut projections shares one permutation: ``P_stage{s}`` covers
  the stem (for stage 0), ``shortcut_conv``/``shortcut_bn`` of the block that starts stage
  ``s``, and ``conv2``/``bn2`` of every block of the stage; each block's inner channels
  (``conv1``, ``bn1``, read by ``conv2``) get their own ``P_stage{s}_block{b}``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmc_jax.models import VGG, ResNet, SmallCNN
from mmc_jax.permute.derive import derive_spec
from mmc_jax.permute.sites import as_apply
from mmc_jax.permute.spec import PermutationSpec, flatten, validate
from mmc_jax.runtime.errors import InputError


@dataclasses.dataclass
class _Group:
    """One permutation's place in a model, as :func:`spec_for` and activation matching see it.

    Attributes:
      perm: the permutation's name.
      producers: ``"/"``-joined module paths writing the channels; the last axis of every
        leaf of these modules (conv kernel ``[H, W, I, O]``, BatchNorm vectors) is permuted.
      consumers: module paths reading the channels; axis -2 of their ``kernel`` (conv input
        channels, dense input features) is permuted.
      sites: the activations the permutation acts on, in forward order, as (module path,
        whether a ReLU follows the module's output) pairs.
    """

    perm: str
    producers: list[str]
    consumers: list[str] = dataclasses.field(default_factory=list)
    sites: list[tuple[tuple[str, ...], bool]] = dataclasses.field(default_factory=list)


_CONV = re.compile(r"conv(\d+)")
_BLOCK = re.compile(r"stage(\d+)_block(\d+)")
_STREAM = re.compile(r"P_stage\d+")


def _chain_groups(params: Mapping[str, Any]) -> list[_Group]:
    """Groups of a conv → BN → ReLU chain (VGG, SmallCNN): one permutation per conv."""
    indices = sorted(int(m.group(1)) for name in params if (m := _CONV.fullmatch(name)))
    groups = [
        _Group(f"P_{i}", [f"conv{i}", f"bn{i}"], sites=[((f"bn{i}",), True)]) for i in indices
    ]
    for group, reader in zip(groups, [f"conv{i}" for i in indices[1:]] + ["classifier/dense"]):
        group.consumers.append(reader)
    return groups


def _resnet_groups(params: Mapping[str, Any]) -> list[_Group]:
    """Groups of a ResNet: one per residual stream segment and one per block's inner layer.

    Blocks are walked in forward order; a block with a ``shortcut_conv`` projects the stream
    and so starts a new stream permutation, a block without one adds to the current stream.
    """
    blocks = sorted(
        (int(m.group(1)), int(m.group(2)), name) for name in params if (m := _BLOCK.fullmatch(name))
    )
    stream = _Group("P_stage0", ["stem_conv", "stem_bn"], sites=[(("stem_bn",), True)])
    groups = [stream]
    for stage, _, name in blocks:
        stream.consumers.append(f"{name}/conv1")
        groups.append(
            _Group(
                f"P_{name}",
                [f"{name}/conv1", f"{name}/bn1"],
                [f"{name}/conv2"],
                [((name, "bn1"), True)],
            )
        )
        if "shortcut_conv" in params[name]:
            stream.consumers.append(f"{name}/shortcut_conv")
            stream = _Group(f"P_stage{stage}", [f"{name}/shortcut_conv", f"{name}/shortcut_bn"])
            groups.append(stream)
        stream.producers += [f"{name}/conv2", f"{name}/bn2"]
        stream.sites.append(((name,), False))
    stream.consumers.append("classifier/dense")
    return groups


def _groups(model: nn.Module, variables: Mapping[str, Any]) -> list[_Group]:
    """The permutation groups of one of the library's models, in forward order of their sites."""
    if isinstance(model, (VGG, SmallCNN)):
        return _chain_groups(variables["params"])
    if isinstance(model, ResNet):
        return _resnet_groups(variables["params"])
    raise InputError(
        f"no permutation spec for model type {type(model).__name__}; supported: "
        "VGG, SmallCNN, ResNet"
    )


def spec_for(
    model: nn.Module, variables: Mapping[str, Any], image_shape: tuple[int, int, int] | None = None
) -> PermutationSpec:
    """The permutation spec of a library model, with the names of its hand-written layout.

    The spec is :func:`mmc_jax.permute.derive_spec`'s; this only names its permutations as the
    module docstring describes (``P_3``, ``P_stage1``, ``P_stage1_block0``), which the paper's
    activation matching and the tests refer to.

    Args:
      model: a VGG, SmallCNN or ResNet module (``models.create``).
      variables: its ``{"params", "batch_stats"}``; every leaf gets an entry.
      image_shape: the input's (height, width, channels) for the trace; by default 32×32 with
        the channels the first convolution reads.

    Returns:
      The spec, already checked against ``variables`` with :func:`validate`.

    Raises:
      InputError: unsupported model type, or variables that do not fit the model's layout.
    """
    groups = _groups(model, variables)
    if image_shape is None:
        leaves = flatten(variables)
        first = leaves.get("params/conv0/kernel", leaves.get("params/stem_conv/kernel"))
        image_shape = (32, 32, int(np.shape(first)[2]) if first is not None else 3)
    derived = derive_spec(as_apply(model), variables, jnp.zeros((1, *image_shape)))
    writer_to_name = {f"params/{g.producers[0]}/kernel": g.perm for g in groups}
    renamed = {}
    for name, entries in derived.perm_to_axes.items():
        writers = [
            writer_to_name[path] for path, axis in entries if path in writer_to_name and axis == 3
        ]
        if not writers or len(set(writers)) != 1:
            raise InputError(
                f"the traced model does not match the {type(model).__name__} layout at {name}"
            )
        renamed[name] = writers[0]
    if sorted(renamed.values()) != sorted(g.perm for g in groups):
        raise InputError(f"the traced model does not match the {type(model).__name__} layout")
    spec = PermutationSpec(
        {renamed[n]: e for n, e in derived.perm_to_axes.items()},
        {p: tuple(renamed.get(n) for n in axes) for p, axes in derived.axes_to_perm.items()},
        {renamed[n]: s for n, s in derived.sizes.items()},
    )
    validate(spec, variables)
    return spec
