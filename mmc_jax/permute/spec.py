"""A permutation symmetry as data: which permutation acts on which axis of which leaf of a
variables tree, its validation against variables, and its application.

Leaf paths are ``"/"``-joined keys of the *full* variables dict (``"params/conv0/kernel"``,
``"batch_stats/bn0/mean"``), so BatchNorm statistics are permuted along with the parameters.
With the symmetry as data, :func:`apply`, :func:`validate` and the matching algorithms are
generic: they never look at the model, and a spec can be checked against any variables tree,
saved, or edited by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmc_jax.runtime import one_shot_jit
from mmc_jax.runtime.errors import InputError


@dataclasses.dataclass(frozen=True)
class Blocks:
    """An axis whose permutations are built from several smaller ones.

    ``kind="factors"``: the axis is ``sizes`` row-major (a reshape to ``sizes`` gives its
    sub-axes) and permutation ``perms[k]`` acts on sub-axis ``k``: a Kronecker product, as
    GroupNorm allows (a permutation of the groups times one within every group).
    ``kind="segments"``: the axis is consecutive blocks of ``sizes`` (a concatenation) and
    ``perms[k]`` permutes block ``k``: a direct sum. ``None`` leaves a part unpermuted.

    A part may itself be a :class:`Blocks` (a fused q/k/v projection: three segments, each
    heads × head dimensions), and one permutation may act on several segments of equal
    size (a gated MLP's two halves, multiplied unit by unit): ``P ⊕ P``.
    """

    kind: str
    sizes: tuple[int, ...]
    perms: tuple[str | None, ...]


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which leaf of a variables tree.

    Attributes:
      perm_to_axes: permutation name → the ``(leaf path, axis)`` pairs it permutes.
      axes_to_perm: leaf path → per axis, the name of the permutation acting there, a
        :class:`Blocks` when several act on parts of it, or None. Every leaf of the
        variables has an entry, also leaves no permutation touches.
      sizes: permutation name → its length (the number of channels it permutes).
      unsupported: ops of the traced model that fixed axes of weights (:func:`derive_spec`),
        so the symmetry there is not used; empty for hand-made specs.
      stacked: leaf path → number of layers stacked on its axis 0 (the weights of a scanned
        layer, ``nn.scan``): the spec names each layer ``<path>[<k>]`` as a leaf of its own
        (:func:`leaves_of`), so every layer has permutations of its own.
      streams: the permutations of residual streams (units that residual additions join),
        which :mod:`mmc_jax.permute.orthogonal` may rotate where the model allows.
    """

    perm_to_axes: dict[str, tuple[tuple[str, int], ...]]
    axes_to_perm: dict[str, tuple[str | Blocks | None, ...]]
    sizes: dict[str, int]
    unsupported: tuple[str, ...] = ()
    stacked: Mapping[str, int] = dataclasses.field(default_factory=dict)
    streams: tuple[str, ...] = ()


def leaf_path(keys: tuple) -> str:
    """The leaf path of a pytree key path (from ``jax.tree_util.tree_flatten_with_path``):
    its keys joined by ``"/"``, as the spec names leaves."""
    return jax.tree_util.keystr(keys, simple=True, separator="/")


def flatten(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Leaf path → leaf of a nested (frozen) dict of arrays, in the order of
    ``jax.tree_util.tree_flatten`` (keys sorted at every level), which sums over leaves
    follow."""
    flat = traverse_util.flatten_dict(variables, sep="/")
    return dict(sorted(flat.items(), key=lambda item: item[0].split("/")))


def leaves_of(spec: PermutationSpec, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Leaf path → leaf as the spec names leaves: :func:`flatten`, with every stacked leaf
    (``spec.stacked``) replaced by its layers ``<path>[<k>]``."""
    leaves = flatten(variables)
    for path in sorted(spec.stacked, key=len):  # a layer of a layer after its stack
        if path not in leaves:
            continue
        x, count = leaves.pop(path), spec.stacked[path]
        if np.ndim(x) == 0 or np.shape(x)[0] != count:
            raise InputError(
                f"{path} has shape {np.shape(x)}, the spec stacks {count} layers on its axis 0"
            )
        leaves.update({f"{path}[{k}]": x[k] for k in range(count)})
    return leaves


def validate(spec: PermutationSpec, variables: Mapping[str, Any]) -> None:
    """Checks that ``spec`` describes ``variables`` exactly, so that :func:`apply` is total.

    Raises:
      InputError: naming the first offending leaf path, when a leaf has no entry, an entry has
        no leaf, an entry's length differs from the leaf's ndim, an axis is out of range, an
        axis's size differs from its permutation's size, or the two views of the spec
        (``perm_to_axes`` and ``axes_to_perm``) disagree.
    """
    leaves = leaves_of(spec, variables)
    if missing := sorted(leaves.keys() - spec.axes_to_perm.keys()):
        raise InputError(f"leaves without an entry in the permutation spec: {', '.join(missing)}")
    if extra := sorted(spec.axes_to_perm.keys() - leaves.keys()):
        raise InputError(f"spec entries naming no leaf of the variables: {', '.join(extra)}")
    _check_leaf_entries(spec, leaves)
    if spec.perm_to_axes.keys() != spec.sizes.keys():
        raise InputError(
            f"permutations {sorted(spec.perm_to_axes)} and sizes "
            f"{sorted(spec.sizes)} name different permutations"
        )
    _check_perm_axes(spec, leaves)


def _check_leaf_entries(spec: PermutationSpec, leaves: Mapping[str, Any]) -> None:
    """:func:`validate`'s view from the leaves: each entry of ``axes_to_perm`` fits its leaf,
    and the permutations it names list the axis."""
    for path, perms in spec.axes_to_perm.items():
        shape = np.shape(leaves[path])
        if len(perms) != len(shape):
            raise InputError(f"spec entry {path} has {len(perms)} axes, the leaf has shape {shape}")
        for axis, entry in enumerate(perms):
            if isinstance(entry, Blocks):
                _check_blocks(entry, path, axis, shape[axis])
            for name in perms_of(entry):
                if (path, axis) not in spec.perm_to_axes.get(name, ()):
                    raise InputError(
                        f"axis {axis} of {path} is given to permutation {name}, "
                        "which does not list it"
                    )


def _check_perm_axes(spec: PermutationSpec, leaves: Mapping[str, Any]) -> None:
    """:func:`validate`'s view from the permutations: each ``(leaf path, axis)`` of
    ``perm_to_axes`` exists, is given to the permutation, and has its size."""
    for name, entries in spec.perm_to_axes.items():
        for path, axis in entries:
            if path not in leaves:
                raise InputError(
                    f"permutation {name} acts on {path}, which is no leaf of the variables"
                )
            shape = np.shape(leaves[path])
            if not 0 <= axis < len(shape):
                raise InputError(
                    f"permutation {name} acts on axis {axis} of {path}, out of "
                    f"range for shape {shape}"
                )
            entry = spec.axes_to_perm[path][axis]
            if name not in perms_of(entry):
                raise InputError(
                    f"permutation {name} lists axis {axis} of {path}, whose entry "
                    f"gives it to {entry}"
                )
            if _part_size(entry, name, shape[axis]) != spec.sizes[name]:
                raise InputError(
                    f"permutation {name} of size {spec.sizes[name]} acts on axis "
                    f"{axis} of {path}, of size {shape[axis]}"
                )


def perms_of(entry) -> tuple[str, ...]:
    """The names of the permutations acting on an axis whose spec entry is ``entry`` (a name,
    a :class:`Blocks` or None), each once, in order."""
    if entry is None:
        return ()
    if isinstance(entry, Blocks):
        names = (n for p in entry.perms for n in perms_of(p))
        return tuple(dict.fromkeys(names))
    return (entry,)


#: One step into an axis made of parts: ``(kind, sizes, k)``, part ``k`` (see :class:`Blocks`).
Step = tuple[str, tuple[int, ...], int]


def part_paths(entry, name: str) -> list[tuple[Step, ...]]:
    """Where permutation ``name`` acts on an axis whose entry is ``entry``: the steps from the
    axis to each part it permutes (``[()]``: the whole axis), in order."""
    if not isinstance(entry, Blocks):
        return [()] if entry == name else []
    return [
        ((entry.kind, entry.sizes, k), *inner)
        for k, part in enumerate(entry.perms)
        for inner in part_paths(part, name)
    ]


def _part_size(entry, name: str, axis_size: int) -> int:
    """The length of the part of an axis that permutation ``name`` acts on."""
    steps = part_paths(entry, name)[0]
    return steps[-1][1][steps[-1][2]] if steps else axis_size


def _check_blocks(blocks: Blocks, path: str, axis: int, axis_size: int) -> None:
    total = math.prod(blocks.sizes) if blocks.kind == "factors" else sum(blocks.sizes)
    if blocks.kind not in ("factors", "segments") or len(blocks.sizes) != len(blocks.perms):
        raise InputError(f"axis {axis} of {path}: malformed {blocks}")
    if total != axis_size:
        raise InputError(
            f"axis {axis} of {path} has size {axis_size}, its {blocks.kind} "
            f"{blocks.sizes} make {total}"
        )
    for part, n in zip(blocks.perms, blocks.sizes):
        if isinstance(part, Blocks):
            _check_blocks(part, path, axis, n)
    for name in perms_of(blocks):
        if len({steps[-1][1][steps[-1][2]] for steps in part_paths(blocks, name)}) > 1:
            raise InputError(
                f"axis {axis} of {path}: permutation {name} acts on parts of two sizes"
            )


def axis_index(entry, perm: Mapping[str, Any], skip: str | None = None, xp=np):
    """The gather index that permutes one axis: channel ``i`` of the result is channel
    ``index[i]``; permutation ``skip`` (and absent parts) count as the identity."""
    if not isinstance(entry, Blocks):
        return perm[entry]
    parts = [
        axis_index(p, perm, skip, xp)
        if isinstance(p, Blocks)
        else perm[p]
        if p is not None and p != skip
        else xp.arange(n)
        for p, n in zip(entry.perms, entry.sizes)
    ]
    if entry.kind == "segments":
        offsets = np.cumsum((0, *entry.sizes[:-1]))
        return xp.concatenate([part + offset for part, offset in zip(parts, offsets)])
    index = parts[0]
    for part, n in zip(parts[1:], entry.sizes[1:]):
        index = (index[:, None] * n + part[None, :]).reshape(-1)
    return index


def permute_leaf(x, perms: tuple, perm: Mapping[str, Any], skip: str | None = None, xp=np):
    """``x`` with every permuted axis gathered: ``perms`` is the leaf's entry in
    ``axes_to_perm``, ``perm`` the permutations by name; permutation ``skip`` is left out
    (the identity). ``xp``: ``numpy`` for host arrays, ``jax.numpy`` inside a program."""
    for axis, entry in enumerate(perms):
        if entry is None or entry == skip:
            continue
        x = x.take(axis_index(entry, perm, skip, xp), axis=axis)
    return x


def select_part(x, axis: int, kind: str | None, sizes: tuple[int, ...], k: int):
    """``(x, axis)`` narrowed to part ``k`` of axis ``axis`` when the axis is made of parts
    (``kind`` and ``sizes`` as in :class:`Blocks`; ``None``: the whole axis): a reshape into
    factors, then that factor's axis, or a slice of that segment. Works on numpy and jax
    arrays (weights here, traced activations in :mod:`mmc_jax.permute.sites`)."""
    if kind == "factors":
        return x.reshape(*x.shape[:axis], *sizes, *x.shape[axis + 1 :]), axis + k
    if kind == "segments":
        start = sum(sizes[:k])
        return x.take(np.arange(start, start + sizes[k]), axis=axis), axis
    return x, axis


def select_path(x, axis: int, steps: tuple[Step, ...]):
    """``(x, axis)`` narrowed along ``steps`` (:func:`part_paths`) by :func:`select_part`."""
    for kind, sizes, k in steps:
        x, axis = select_part(x, axis, kind, sizes, k)
    return x, axis


def part_view(x, entry, name: str, axis: int):
    """``x`` as a ``[n, -1]`` matrix whose rows are the ``n`` units that permutation ``name``
    orders on axis ``axis`` (for a :class:`Blocks` axis, its parts of the axis side by side)."""
    views = []
    for steps in part_paths(entry, name):
        y, at = select_path(x, axis, steps)
        views.append(np.moveaxis(y, at, 0).reshape(y.shape[at], -1))
    return np.concatenate(views, axis=1) if len(views) > 1 else views[0]


def apply(
    spec: PermutationSpec, perm: Mapping[str, jax.Array], variables: Mapping[str, Any]
) -> Any:
    """Permutes every leaf axis of ``variables`` that ``spec`` assigns to a permutation.

    Args:
      spec: the model's permutation spec.
      perm: permutation name → integer array; channel ``i`` of the result is channel
        ``perm[name][i]`` of ``variables``. Every permutation of the spec is needed.
      variables: the variables tree (``params`` and ``batch_stats``).

    Returns:
      A tree of the same structure with permuted jax arrays: the same function as
      ``variables`` when ``perm`` holds permutations.
    """
    validate(spec, variables)
    for name, size in spec.sizes.items():
        if name not in perm:
            raise InputError(f"no permutation given for {name}")
        if np.shape(perm[name]) != (size,):
            raise InputError(
                f"permutation {name} must have shape ({size},), got {np.shape(perm[name])}"
            )
    keys_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    layout = tuple(_leaf_layout(spec, leaf_path(keys)) for keys, _ in keys_and_leaves)
    leaves = _permute_leaves(
        layout, [x for _, x in keys_and_leaves], {name: perm[name] for name in spec.sizes}
    )
    return jax.tree_util.tree_unflatten(treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _Layers:
    """How to permute a stacked leaf: each layer's own entry (or :class:`_Layers` again)."""

    layers: tuple


def _leaf_layout(spec: PermutationSpec, path: str):
    """The spec's entry of a leaf, or :class:`_Layers` for a stacked one."""
    if path in spec.stacked:
        return _Layers(tuple(_leaf_layout(spec, f"{path}[{k}]") for k in range(spec.stacked[path])))
    return spec.axes_to_perm[path]


def _permute_layout(x, layout, perm):
    if isinstance(layout, _Layers):
        return jnp.stack(
            [_permute_layout(x[k], item, perm) for k, item in enumerate(layout.layers)]
        )
    return permute_leaf(x, layout, perm, xp=jnp)


@functools.partial(one_shot_jit, static_argnums=0)
def _permute_leaves(layout: tuple, leaves: list, perm: dict[str, jax.Array]) -> list:
    """:func:`permute_leaf` over all leaves as one compiled program (one per model layout,
    instead of one small gather program per leaf shape when run eagerly)."""
    return [_permute_layout(x, item, perm) for x, item in zip(leaves, layout)]
