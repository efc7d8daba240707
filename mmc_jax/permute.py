"""Permutation symmetries of the models, and ways to align one trained model to another.

Permuting the hidden channels of a layer, consistently on every array that writes or reads
them, leaves a network's function unchanged. Aligning two networks through these symmetries
(weight or activation matching) is what linear mode connectivity after "re-basin" needs.

The symmetry is described as data, a :class:`PermutationSpec`: each named permutation lists
the ``(leaf path, axis)`` pairs it acts on, and each leaf of the variables lists, per axis, the
permutation acting there (or None). Leaf paths are ``"/"``-joined keys of the *full* variables
dict (``"params/conv0/kernel"``, ``"batch_stats/bn0/mean"``), so BatchNorm statistics are
permuted along with the parameters. With the symmetry as data, :func:`apply`,
:func:`validate` and :func:`weight_matching` are generic: they never look at the model, and a
spec can be checked against any variables tree, saved, or edited by hand.

:func:`spec_for` derives the spec of the library's models from their module type and the
names in their variables tree, so it follows any depth, width or stage sizes:

- VGG and SmallCNN are chains: permutation ``P_i`` acts on the output channels of ``conv{i}``
  (kernel axis 3), on every leaf of ``bn{i}`` (axis 0), and on the input channels of the next
  reader: ``conv{i+1}`` (kernel axis 2) or the classifier (``classifier/dense`` kernel axis 0).
- ResNet adds its identity shortcuts to the residual stream, so everything that writes to the
  stream between two 1×1 shortcut projections shares one permutation: ``P_stage{s}`` covers
  the stem (for stage 0), ``shortcut_conv``/``shortcut_bn`` of the block that starts stage
  ``s``, and ``conv2``/``bn2`` of every block of the stage; each block's inner channels
  (``conv1``, ``bn1``, read by ``conv2``) get their own ``P_stage{s}_block{b}``.

>>> spec = spec_for(model, variables_a)
>>> perm = weight_matching(spec, variables_a, variables_b, jax.random.key(0))
>>> aligned_b = apply(spec, perm, variables_b)
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from mmc_jax.errors import InputError
from mmc_jax.models import ResNet, SmallCNN, VGG


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which leaf of a variables tree.

    Attributes:
      perm_to_axes: permutation name → the ``(leaf path, axis)`` pairs it permutes.
      axes_to_perm: leaf path → per axis, the name of the permutation acting there, or None.
        Every leaf of the variables has an entry, also leaves no permutation touches.
      sizes: permutation name → its length (the number of channels it permutes).
      unsupported: ops of the traced model that fixed axes of weights (:func:`derive_spec`),
        so the symmetry there is not used; empty for hand-made specs.
    """

    perm_to_axes: dict[str, tuple[tuple[str, int], ...]]
    axes_to_perm: dict[str, tuple[str | None, ...]]
    sizes: dict[str, int]
    unsupported: tuple[str, ...] = ()


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
    groups = [_Group(f"P_{i}", [f"conv{i}", f"bn{i}"], sites=[((f"bn{i}",), True)])
              for i in indices]
    for group, reader in zip(groups, [f"conv{i}" for i in indices[1:]] + ["classifier/dense"]):
        group.consumers.append(reader)
    return groups


def _resnet_groups(params: Mapping[str, Any]) -> list[_Group]:
    """Groups of a ResNet: one per residual stream segment and one per block's inner layer.

    Blocks are walked in forward order; a block with a ``shortcut_conv`` projects the stream
    and so starts a new stream permutation, a block without one adds to the current stream.
    """
    blocks = sorted((int(m.group(1)), int(m.group(2)), name)
                    for name in params if (m := _BLOCK.fullmatch(name)))
    stream = _Group("P_stage0", ["stem_conv", "stem_bn"], sites=[(("stem_bn",), True)])
    groups = [stream]
    for stage, _, name in blocks:
        stream.consumers.append(f"{name}/conv1")
        groups.append(_Group(f"P_{name}", [f"{name}/conv1", f"{name}/bn1"], [f"{name}/conv2"],
                             [((name, "bn1"), True)]))
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
    raise InputError(f"no permutation spec for model type {type(model).__name__}; supported: "
                     "VGG, SmallCNN, ResNet")


def _path(keys: tuple) -> str:
    """``"/"``-joined dict keys of a pytree key path."""
    return "/".join(str(k.key) for k in keys)


def _flatten(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Leaf path → leaf of a nested dict of arrays."""
    return {_path(keys): x for keys, x in jax.tree_util.tree_flatten_with_path(variables)[0]}


def _spec_from_groups(groups: list[_Group], variables: Mapping[str, Any]) -> PermutationSpec:
    """The spec of ``groups`` over every leaf of ``variables`` (unpermuted axes get None)."""
    leaves = _flatten(variables)
    axes = {path: [None] * np.ndim(x) for path, x in leaves.items()}
    perm_to_axes, sizes = {}, {}
    for group in groups:
        if group.perm in sizes:
            raise InputError(f"permutation {group.perm} would be defined twice; unsupported "
                             "model layout")
        entries = []
        for module in group.producers:
            paths = [path for path in leaves for collection in ("params", "batch_stats")
                     if path.startswith(f"{collection}/{module}/")]
            if not paths:
                raise InputError(f"the variables lack {module}, which writes {group.perm}")
            entries += [(path, np.ndim(leaves[path]) - 1) for path in paths]
        for module in group.consumers:
            path = f"params/{module}/kernel"
            if path not in leaves:
                raise InputError(f"the variables lack {path}, which reads {group.perm}")
            entries.append((path, np.ndim(leaves[path]) - 2))
        for path, axis in entries:
            axes[path][axis] = group.perm
        perm_to_axes[group.perm] = tuple(entries)
        sizes[group.perm] = int(np.shape(leaves[entries[0][0]])[entries[0][1]])
    return PermutationSpec(perm_to_axes, {path: tuple(a) for path, a in axes.items()}, sizes)


def spec_for(model: nn.Module, variables: Mapping[str, Any]) -> PermutationSpec:
    """Derives the permutation spec of a library model (see the module docstring for the rules).

    Args:
      model: a VGG, SmallCNN or ResNet module (``models.create``).
      variables: its ``{"params", "batch_stats"}``; the layer names and shapes found there
        define the spec, and every leaf gets an entry.

    Returns:
      The spec, already checked against ``variables`` with :func:`validate`.

    Raises:
      InputError: unsupported model type, or variables that do not fit the model's layout.
    """
    spec = _spec_from_groups(_groups(model, variables), variables)
    validate(spec, variables)
    return spec


def derive_spec(apply_fn, variables: Mapping[str, Any], *example_args, strict: bool = False,
                **apply_kwargs) -> PermutationSpec:
    """The permutation spec of any Flax model, from its traced forward pass (see
    :mod:`mmc_jax.permute_derive` for the rules and the supported ops).

    >>> spec = derive_spec(model.apply, variables, x, train=False)
    """
    from mmc_jax import permute_derive

    return permute_derive.derive_spec(apply_fn, variables, *example_args, strict=strict,
                                      **apply_kwargs)


def validate(spec: PermutationSpec, variables: Mapping[str, Any]) -> None:
    """Checks that ``spec`` describes ``variables`` exactly, so that :func:`apply` is total.

    Raises:
      InputError: naming the first offending leaf path, when a leaf has no entry, an entry has
        no leaf, an entry's length differs from the leaf's ndim, an axis is out of range, an
        axis's size differs from its permutation's size, or the two views of the spec
        (``perm_to_axes`` and ``axes_to_perm``) disagree.
    """
    leaves = _flatten(variables)
    if missing := sorted(leaves.keys() - spec.axes_to_perm.keys()):
        raise InputError(f"leaves without an entry in the permutation spec: {', '.join(missing)}")
    if extra := sorted(spec.axes_to_perm.keys() - leaves.keys()):
        raise InputError(f"spec entries naming no leaf of the variables: {', '.join(extra)}")
    for path, perms in spec.axes_to_perm.items():
        shape = np.shape(leaves[path])
        if len(perms) != len(shape):
            raise InputError(f"spec entry {path} has {len(perms)} axes, the leaf has shape "
                             f"{shape}")
        for axis, name in enumerate(perms):
            if name is not None and (path, axis) not in spec.perm_to_axes.get(name, ()):
                raise InputError(f"axis {axis} of {path} is given to permutation {name}, which "
                                 "does not list it")
    if spec.perm_to_axes.keys() != spec.sizes.keys():
        raise InputError(f"permutations {sorted(spec.perm_to_axes)} and sizes "
                         f"{sorted(spec.sizes)} name different permutations")
    for name, entries in spec.perm_to_axes.items():
        for path, axis in entries:
            if path not in leaves:
                raise InputError(f"permutation {name} acts on {path}, which is no leaf of the "
                                 "variables")
            shape = np.shape(leaves[path])
            if not 0 <= axis < len(shape):
                raise InputError(f"permutation {name} acts on axis {axis} of {path}, out of "
                                 f"range for shape {shape}")
            if shape[axis] != spec.sizes[name]:
                raise InputError(f"permutation {name} of size {spec.sizes[name]} acts on axis "
                                 f"{axis} of {path}, of size {shape[axis]}")
            if spec.axes_to_perm[path][axis] != name:
                raise InputError(f"permutation {name} lists axis {axis} of {path}, whose entry "
                                 f"gives it to {spec.axes_to_perm[path][axis]}")


def _permute_leaf(x, perms: tuple[str | None, ...], perm: Mapping[str, Any],
                  skip_axis: int | None = None):
    """``x`` with ``x.take(perm[p], axis)`` for every permuted axis except ``skip_axis``."""
    for axis, name in enumerate(perms):
        if name is not None and axis != skip_axis:
            x = x.take(perm[name], axis=axis)
    return x


def apply(spec: PermutationSpec, perm: Mapping[str, jax.Array],
          variables: Mapping[str, Any]) -> Any:
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
            raise InputError(f"permutation {name} must have shape ({size},), got "
                             f"{np.shape(perm[name])}")
    keys_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    layout = tuple(spec.axes_to_perm[_path(keys)] for keys, _ in keys_and_leaves)
    leaves = _permute_leaves(layout, [x for _, x in keys_and_leaves],
                             {name: perm[name] for name in spec.sizes})
    return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.partial(jax.jit, static_argnums=0)
def _permute_leaves(layout: tuple[tuple[str | None, ...], ...], leaves: list,
                    perm: dict[str, jax.Array]) -> list:
    """:func:`_permute_leaf` over all leaves as one compiled program (one per model layout,
    instead of one small gather program per leaf shape when run eagerly)."""
    return [_permute_leaf(x, axes, perm) for x, axes in zip(leaves, layout)]


def _solve(similarity: np.ndarray) -> np.ndarray:
    """The permutation maximising ``sum_i similarity[i, perm[i]]`` (rows: model a)."""
    rows, cols = scipy.optimize.linear_sum_assignment(similarity, maximize=True)
    return cols[np.argsort(rows)]


def weight_matching(spec: PermutationSpec, a: Mapping[str, Any], b: Mapping[str, Any],
                    key: jax.Array, max_iter: int = 100) -> dict[str, jax.Array]:
    """Permutation aligning the weights of ``b`` to ``a`` (Ainsworth et al., "Git Re-Basin").

    Coordinate descent from the identity: each iteration visits the permutations in a random
    order and re-solves one, the others fixed, as a linear assignment maximising
    ``sum over its (leaf, axis) of <a_leaf, b_leaf permuted>``; the similarity matrix is
    ``a_leaf`` (axis first, flattened) times ``b_leaf`` with the other permutations applied
    (likewise). It stops after an iteration without improvement, or ``max_iter`` iterations.
    Only ``params`` enter the similarity; BatchNorm statistics are not weights, but
    :func:`apply` permutes them with the returned permutation all the same.

    Args:
      spec: the models' permutation spec.
      a: the reference variables.
      b: the variables to align.
      key: PRNG key for the visiting orders.
      max_iter: most iterations over all permutations.

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.
    """
    validate(spec, a)
    validate(spec, b)
    if max_iter < 1:
        raise InputError(f"max_iter must be positive, got {max_iter}")
    leaves_a = {p: np.asarray(x, np.float64) for p, x in _flatten(a).items()
                if p.startswith("params/")}
    leaves_b = {p: np.asarray(x, np.float64) for p, x in _flatten(b).items()
                if p.startswith("params/")}
    perm = {name: np.arange(size) for name, size in spec.sizes.items()}
    # A host generator seeded by the key's bits: no device program to compile per order.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    for _ in range(max_iter):
        improved = False
        for name in rng.permutation(sorted(spec.sizes)):
            size = spec.sizes[name]
            similarity = np.zeros((size, size))
            for path, axis in spec.perm_to_axes[name]:
                if path not in leaves_a:
                    continue
                w_a = np.moveaxis(leaves_a[path], axis, 0).reshape(size, -1)
                w_b = _permute_leaf(leaves_b[path], spec.axes_to_perm[path], perm, axis)
                similarity += w_a @ np.moveaxis(w_b, axis, 0).reshape(size, -1).T
            new = _solve(similarity)
            rows = np.arange(size)
            old_value = similarity[rows, perm[name]].sum()
            if similarity[rows, new].sum() > old_value + 1e-12 * max(1.0, abs(old_value)):
                perm[name] = new
                improved = True
        if not improved:
            break
    return {name: jnp.asarray(p, jnp.int32) for name, p in perm.items()}


def _matching_groups(spec: PermutationSpec, model: nn.Module, a: Mapping[str, Any],
                     b: Mapping[str, Any]) -> list[_Group]:
    """The model's groups, after checking that they and ``spec`` describe ``a`` and ``b``."""
    validate(spec, a)
    validate(spec, b)
    groups = _groups(model, a)
    if {g.perm for g in groups} != spec.sizes.keys():
        raise InputError(f"the spec's permutations {sorted(spec.sizes)} are not those of the "
                         f"model, {sorted(g.perm for g in groups)}")
    return groups


def _moments_fn(model: nn.Module, groups: list[_Group]):
    """A compiled ``(a, b, images) → {perm: [per site (n, mean_a, mean_b, cross, ss_a, ss_b)]}``.

    For each site, ``n`` is the number of positions (batch × height × width), ``mean_*`` the
    channel means, ``cross`` ``[C, C]`` the centred cross products (a's channels in rows),
    ``ss_*`` the centred sums of squares. Only the sites' modules are captured, so memory is
    one batch's activations of those modules plus ``C × C`` per site.
    """
    modules = {path for group in groups for path, _ in group.sites}

    def capture(module: nn.Module, method: str) -> bool:
        return method == "__call__" and module.path in modules

    def activations(variables, images) -> dict[str, list[jax.Array]]:
        _, state = model.apply(variables, images, train=False, capture_intermediates=capture,
                               mutable=["intermediates"])
        out = {}
        for group in groups:
            out[group.perm] = []
            for path, relu in group.sites:
                node = state["intermediates"]
                for name in path:
                    node = node[name]
                x = node["__call__"][0].astype(jnp.float32)
                x = nn.relu(x) if relu else x
                out[group.perm].append(x.reshape(-1, x.shape[-1]))
        return out

    def moments(x_a, x_b):
        mean_a, mean_b = x_a.mean(0), x_b.mean(0)
        x_a, x_b = x_a - mean_a, x_b - mean_b
        return (x_a.shape[0], mean_a, mean_b, x_a.T @ x_b, (x_a ** 2).sum(0), (x_b ** 2).sum(0))

    @jax.jit
    def all_moments(acts_a, acts_b):
        return {name: [moments(x_a, x_b) for x_a, x_b in zip(acts_a[name], acts_b[name])]
                for name in acts_a}

    # Two programs rather than one: a's and b's forward passes share one compilation.
    forward = jax.jit(activations)
    return lambda a, b, images: all_moments(forward(a, images), forward(b, images))


def _cosine(cross: np.ndarray, ss_a: np.ndarray, ss_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of centred channels from their cross products and sums of squares;
    a constant channel has similarity 0 to every channel."""
    norms = np.sqrt(np.outer(ss_a, ss_b))
    return np.divide(cross, norms, out=np.zeros_like(cross), where=norms > 0)


def _host(moments) -> tuple:
    """Device moments as float64 numpy arrays (``n`` as a float)."""
    return tuple(np.asarray(m, np.float64) for m in moments)


def activation_matching(spec: PermutationSpec, model: nn.Module, a: Mapping[str, Any],
                        b: Mapping[str, Any], batches: Iterable[Any]) -> dict[str, jax.Array]:
    """Permutation aligning the activations of ``b`` to ``a`` (Ainsworth et al.; Entezari et al.).

    Both models run in eval mode on every batch. Each permutation is solved independently, as a
    linear assignment maximising the correlation of a's and b's channels at the activations it
    acts on, taken from ``capture_intermediates`` (module outputs):

    - VGG ``P_i``: ``relu`` of ``bn{i}``'s output; SmallCNN ``P_i`` likewise, before its
      max-pool (pooling does not mix channels).
    - ResNet ``P_stage{s}``: the output of every block of the stage (the block module's
      output, after the residual add and ReLU), plus for stage 0 ``relu`` of ``stem_bn``'s
      output, which enters the same stream; ``P_stage{s}_block{b}``: ``relu`` of the block's
      ``bn1`` output.

    The correlation is computed per batch (channels centred and normalised over
    batch × height × width), summed over the batches and over a permutation's activations.

    Args:
      spec: the models' spec, from :func:`spec_for`.
      model: the module both variables belong to.
      a: the reference variables.
      b: the variables to align.
      batches: normalised NHWC float images, one array per batch.

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.
    """
    groups = _matching_groups(spec, model, a, b)
    moments_fn = _moments_fn(model, groups)
    similarity = {name: np.zeros((size, size)) for name, size in spec.sizes.items()}
    seen = False
    for images in batches:
        seen = True
        for name, sites in moments_fn(a, b, images).items():
            for _, _, _, cross, ss_a, ss_b in map(_host, sites):
                similarity[name] += _cosine(cross, ss_a, ss_b)
    if not seen:
        raise InputError("activation matching needs at least one batch")
    return {name: jnp.asarray(_solve(s), jnp.int32) for name, s in similarity.items()}


def _merge(total: tuple | None, batch: tuple) -> tuple:
    """Pooled moments of two sets of positions (Chan et al.'s parallel update, stable in the
    mean differences)."""
    if total is None:
        return batch
    n1, mean_a1, mean_b1, cross1, ss_a1, ss_b1 = total
    n2, mean_a2, mean_b2, cross2, ss_a2, ss_b2 = batch
    n = n1 + n2
    delta_a, delta_b = mean_a2 - mean_a1, mean_b2 - mean_b1
    weight = n1 * n2 / n
    return (n, mean_a1 + delta_a * n2 / n, mean_b1 + delta_b * n2 / n,
            cross1 + cross2 + weight * np.outer(delta_a, delta_b),
            ss_a1 + ss_a2 + weight * delta_a ** 2, ss_b1 + ss_b2 + weight * delta_b ** 2)


def greedy_activation_matching(spec: PermutationSpec, model: nn.Module, a: Mapping[str, Any],
                               b: Mapping[str, Any],
                               batches: Iterable[Any]) -> dict[str, jax.Array]:
    """Layer-by-layer activation matching, the scheme of the paper's code.

    Permutations are solved in forward order of their activations (the same activations as
    :func:`activation_matching`). For each, both models run on all batches, the similarity is
    the cosine of a's and b's channels centred over the whole stream (moments pooled over all
    batches, not summed per batch), and the assignment is applied to ``b`` before the next
    permutation's activations are computed.

    Differences from :func:`activation_matching`: statistics pooled over the stream instead
    of per-batch correlations summed, and sequential solving that costs one pass over the
    batches per permutation. Because a layer's outputs depend only on its own permutation
    (earlier ones cancel between writer and reader), applying the earlier assignments leaves
    the later activations unchanged up to float rounding; the sequential order is kept for
    fidelity to the paper's procedure.

    Args:
      spec: the models' spec, from :func:`spec_for`.
      model: the module both variables belong to.
      a: the reference variables.
      b: the variables to align.
      batches: normalised NHWC float images; iterated once per permutation, so it must be
        re-iterable (a list, or an object whose ``__iter__`` restarts), not an iterator.

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.
    """
    if iter(batches) is batches:
        raise InputError("greedy activation matching iterates over the batches once per "
                         "permutation; pass a re-iterable (e.g. a list), not an iterator")
    groups = _matching_groups(spec, model, a, b)
    moments_fn = _moments_fn(model, groups)
    perm = {name: jnp.arange(size) for name, size in spec.sizes.items()}
    for group in groups:
        pooled = [None] * len(group.sites)
        aligned_b = apply(spec, perm, b)
        for images in batches:
            sites = moments_fn(a, aligned_b, images)[group.perm]
            pooled = [_merge(total, _host(m)) for total, m in zip(pooled, sites)]
        if pooled[0] is None:
            raise InputError("activation matching needs at least one batch")
        similarity = sum(_cosine(cross, ss_a, ss_b) for _, _, _, cross, ss_a, ss_b in pooled)
        perm[group.perm] = jnp.asarray(_solve(similarity), jnp.int32)
    return perm


def _paper_groups(model: nn.Module, groups: list[_Group]) -> list[_Group]:
    """``groups`` with the activations the paper's code matches on.

    Chains keep theirs. A ResNet stream permutation is matched on its first writer alone,
    ``relu`` of the BatchNorm that follows it (a stream group's second producer): the stem's
    ``stem_bn`` for stage 0, the ``shortcut_bn`` of the block that starts the stage (the
    shortcut projection before the residual add) for later stages, instead of the outputs of
    the stage's blocks.
    """
    if not isinstance(model, ResNet):
        return groups
    return [dataclasses.replace(g, sites=[(tuple(g.producers[1].split("/")), True)])
            if _STREAM.fullmatch(g.perm) else g for g in groups]


def paper_activation_matching(spec: PermutationSpec, model: nn.Module, a: Mapping[str, Any],
                              b: Mapping[str, Any],
                              batches: Iterable[Any]) -> dict[str, jax.Array]:
    """Activation matching as the paper's code (``find_permutation.py``) does it: one assignment
    per batch, each composed into the permutation at once.

    Permutations are solved greedily in forward order of their activations. For each, on every
    batch in turn, both models run in eval mode, the permutation's activations are centred per
    channel over this batch's batch × height × width positions, a's and the *currently
    permuted* b's channels are compared by cosine similarity, and the linear assignment
    maximising it is composed into the permutation before the next batch. So each batch's
    solve acts on a b already aligned by the earlier batches and re-decides the whole
    assignment: the batches do not accumulate evidence, and up to ties and float rounding the
    result is the assignment that the last batch alone gives. This is the code's behaviour,
    reproduced as is; :func:`greedy_activation_matching` pools the statistics of all batches
    instead.

    The activations are those of :func:`activation_matching`, except for a ResNet's residual
    stream, which the code matches only where a stream starts: ``P_stage0`` on ``relu`` of
    ``stem_bn``'s output, ``P_stage{s}`` (s > 0) on ``relu`` of the ``shortcut_bn`` output of
    the block starting stage ``s`` (not on block outputs). Block permutations are matched on
    ``relu`` of their ``bn1`` output, each block fed its real input: the code feeds the
    second block of ``layer1`` the stem's output instead of the first block's, a bug not
    reproduced here. The code's ResNet version loops over batches outside the layers rather
    than inside; since a permutation's activations do not depend on the other permutations
    (they cancel between writer and reader), the order makes no difference beyond rounding.
    A constant channel has similarity 0 to every channel.

    Args:
      spec: the models' spec, from :func:`spec_for`.
      model: the module both variables belong to.
      a: the reference variables (θ_NC in the paper).
      b: the variables to align (θ_C).
      batches: normalised NHWC float images, one array per batch (the paper: 91 shuffled
        clean training batches of 128); iterated once per permutation, so it must be
        re-iterable (a list), not an iterator. Batches of one shape share one compilation.

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.

    Raises:
      InputError: no batches, an iterator for ``batches``, or a spec that is not the model's.
    """
    if iter(batches) is batches:
        raise InputError("paper activation matching iterates over the batches once per "
                         "permutation; pass a re-iterable (e.g. a list), not an iterator")
    groups = _paper_groups(model, _matching_groups(spec, model, a, b))
    moments_fn = _moments_fn(model, groups)
    perm = {name: np.arange(size) for name, size in spec.sizes.items()}
    for group in groups:
        solved = False
        for images in batches:
            sites = moments_fn(a, apply(spec, perm, b), images)[group.perm]
            similarity = sum(_cosine(cross, ss_a, ss_b)
                             for _, _, _, cross, ss_a, ss_b in map(_host, sites))
            # apply(spec, {g: s}, apply(spec, perm, b)) takes channel perm[g][s[i]] of b.
            perm[group.perm] = perm[group.perm][_solve(similarity)]
            solved = True
        if not solved:
            raise InputError("activation matching needs at least one batch")
    return {name: jnp.asarray(p, jnp.int32) for name, p in perm.items()}
