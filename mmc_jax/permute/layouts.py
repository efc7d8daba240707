"""Hand-written permutation layouts of the library's own models (VGG, SmallCNN, ResNet): the
groups :func:`spec_for` checks the derived spec against, and the activations the paper code's
matching compares, by layer name. Permutations are named as everywhere else, after the module
writing their units (:func:`mmc_jax.permute.derive_spec`); the layouts' own labels below
(``P_i``, ``P_stage{s}``) only tell the groups apart here.

A layout is recognised by the module names of the ``params`` tree (:func:`layout_groups`),
so any Linen module whose variables are named like these models gets it; :func:`spec_for`
then checks it against the traced model.

- VGG and SmallCNN are chains (top-level modules ``conv{i}`` and ``bn{i}`` for i = 0 … n-1,
  and ``classifier``): permutation ``P_i`` (``P_conv{i}`` in specs) acts on the output
  channels of ``conv{i}`` (kernel axis 3), on every leaf of ``bn{i}`` (axis 0), and on the
  input channels of the next reader: ``conv{i+1}`` (kernel axis 2) or the classifier
  (``classifier/dense`` kernel axis 0).
- ResNet (``stem_conv``, ``stem_bn``, blocks ``stage{s}_block{b}`` of ``conv1``, ``bn1``,
  ``conv2``, ``bn2`` and maybe ``shortcut_conv`` and ``shortcut_bn``, and ``classifier``)
  adds its identity shortcuts to the residual stream, so everything that writes to the
  stream between two 1×1 shortcut projections shares one permutation: ``P_stage{s}``
  (``P_stem_conv`` for stage 0, ``P_stage{s}_block0/conv2`` after, in specs) covers
  the stem (for stage 0), ``shortcut_conv``/``shortcut_bn`` of the block that starts stage
  ``s``, and ``conv2``/``bn2`` of every block of the stage; each block's inner channels
  (``conv1``, ``bn1``, read by ``conv2``) get their own ``P_stage{s}_block{b}``
  (``P_stage{s}_block{b}/conv1``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmc_jax.permute.derive import derive_spec
from mmc_jax.permute.sites import as_apply
from mmc_jax.permute.spec import PermutationSpec, flatten, validate
from mmc_jax.runtime.errors import InputError


@dataclasses.dataclass
class Group:
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
#: The modules of a ResNet block, without and with a shortcut projection.
_BLOCK_MODULES = (
    {"conv1", "bn1", "conv2", "bn2"},
    {"conv1", "bn1", "conv2", "bn2", "shortcut_conv", "shortcut_bn"},
)


def _chain_groups(params: Mapping[str, Any]) -> list[Group] | None:
    """Groups of a conv → BN → ReLU chain (VGG, SmallCNN): one permutation per conv; None
    unless the top-level modules are ``conv{i}`` and ``bn{i}`` for i = 0 … n-1 (n ≥ 1) and
    ``classifier``."""
    indices = sorted(int(m.group(1)) for name in params if (m := _CONV.fullmatch(name)))
    names = {f"{kind}{i}" for kind in ("conv", "bn") for i in range(len(indices))}
    if not indices or set(params) != names | {"classifier"}:
        return None
    groups = [Group(f"P_{i}", [f"conv{i}", f"bn{i}"], sites=[((f"bn{i}",), True)]) for i in indices]
    for group, reader in zip(groups, [f"conv{i}" for i in indices[1:]] + ["classifier/dense"]):
        group.consumers.append(reader)
    return groups


def _resnet_groups(params: Mapping[str, Any]) -> list[Group] | None:
    """Groups of a ResNet: one per residual stream segment and one per block's inner layer;
    None unless the top-level modules are ``stem_conv``, ``stem_bn``, ``classifier`` and
    blocks ``stage{s}_block{b}`` (each with the modules of a BasicBlock).

    Blocks are walked in forward order; a block with a ``shortcut_conv`` projects the stream
    and so starts a new stream permutation, a block without one adds to the current stream.
    """
    blocks = sorted(
        (int(m.group(1)), int(m.group(2)), name) for name in params if (m := _BLOCK.fullmatch(name))
    )
    if set(params) != {"stem_conv", "stem_bn", "classifier"} | {name for *_, name in blocks}:
        return None
    if any(
        not isinstance(params[name], Mapping) or set(params[name]) not in _BLOCK_MODULES
        for *_, name in blocks
    ):
        return None
    stream = Group("P_stage0", ["stem_conv", "stem_bn"], sites=[(("stem_bn",), True)])
    groups = [stream]
    for stage, _, name in blocks:
        stream.consumers.append(f"{name}/conv1")
        groups.append(
            Group(
                f"P_{name}",
                [f"{name}/conv1", f"{name}/bn1"],
                [f"{name}/conv2"],
                [((name, "bn1"), True)],
            )
        )
        if "shortcut_conv" in params[name]:
            stream.consumers.append(f"{name}/shortcut_conv")
            stream = Group(f"P_stage{stage}", [f"{name}/shortcut_conv", f"{name}/shortcut_bn"])
            groups.append(stream)
        stream.producers += [f"{name}/conv2", f"{name}/bn2"]
        stream.sites.append(((name,), False))
    stream.consumers.append("classifier/dense")
    return groups


def _match_layout(variables: Mapping[str, Any]) -> list[Group] | None:
    """The groups of the layout that the variables' module names have, or None."""
    params = variables.get("params") if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping):
        return None
    return _chain_groups(params) or _resnet_groups(params)


def has_layout(model: Any, variables: Mapping[str, Any]) -> bool:
    """Whether ``model`` is a Linen module whose ``variables`` have one of the hand-written
    layouts (the library's VGG, SmallCNN and ResNet do): :func:`spec_for` and
    :func:`mmc_jax.permute.paper_activation_matching` accept it."""
    return isinstance(model, nn.Module) and _match_layout(variables) is not None


def layout_groups(model: Any, variables: Mapping[str, Any]) -> list[Group]:
    """The permutation groups of a model with a hand-written layout (:func:`has_layout`), in
    forward order of their sites.

    Raises:
      InputError: a model without one.
    """
    groups = _match_layout(variables) if isinstance(model, nn.Module) else None
    if groups is None:
        raise InputError(
            f"no permutation spec for model type {type(model).__name__}; supported: "
            "VGG, SmallCNN, ResNet"
        )
    return groups


def paper_groups(groups: list[Group]) -> list[Group]:
    """``groups`` with the activations the paper's code matches on.

    Chains keep theirs. A ResNet stream permutation is matched on its first writer alone,
    ``relu`` of the BatchNorm that follows it (a stream group's second producer): the stem's
    ``stem_bn`` for stage 0, the ``shortcut_bn`` of the block that starts the stage (the
    shortcut projection before the residual add) for later stages, instead of the outputs of
    the stage's blocks.
    """
    return [
        dataclasses.replace(g, sites=[(tuple(g.producers[1].split("/")), True)])
        if _STREAM.fullmatch(g.perm)
        else g
        for g in groups
    ]


def spec_names(spec: PermutationSpec, groups: list[Group]) -> dict[str, str]:
    """Each layout group's permutation in ``spec``: the one on its first producer's output
    channels (kernel axis 3), by the group's layout label.

    Raises:
      InputError: a group whose writer the spec does not permute, or two groups one
        permutation.
    """
    names = {}
    for g in groups:
        entry = spec.axes_to_perm.get(f"params/{g.producers[0]}/kernel", (None,) * 4)[3]
        if not isinstance(entry, str) or entry in names.values():
            raise InputError(f"the spec does not permute {g.perm}'s writer {g.producers[0]}")
        names[g.perm] = entry
    return names


def spec_for(
    model: nn.Module, variables: Mapping[str, Any], image_shape: tuple[int, int, int] | None = None
) -> PermutationSpec:
    """The permutation spec of a library model: :func:`mmc_jax.permute.derive_spec`'s, with
    its names (``P_<module writing the units>``: ``P_conv3``, ``P_stem_conv``,
    ``P_stage1_block0/conv1``), checked to be the model's hand-written layout, one derived
    permutation per layout group (:func:`spec_names`).

    Args:
      model: a VGG, SmallCNN or ResNet module (``models.create``), or any Linen module
        whose variables have one of their layouts (:func:`has_layout`).
      variables: its ``{"params", "batch_stats"}``; every leaf gets an entry.
      image_shape: the input's (height, width, channels) for the trace; by default 32×32 with
        the channels the first convolution reads.

    Returns:
      The spec, already checked against ``variables`` with :func:`validate`.

    Raises:
      InputError: a model without a hand-written layout, or one whose trace does not fit
        the layout its variables' names give.
    """
    groups = layout_groups(model, variables)
    if image_shape is None:
        leaves = flatten(variables)
        first = leaves.get("params/conv0/kernel", leaves.get("params/stem_conv/kernel"))
        image_shape = (32, 32, int(np.shape(first)[2]) if first is not None else 3)
    spec = derive_spec(as_apply(model), variables, jnp.zeros((1, *image_shape)))
    if sorted(spec_names(spec, groups).values()) != sorted(spec.sizes):
        raise InputError(f"the traced model does not match the {type(model).__name__} layout")
    validate(spec, variables)
    return spec
