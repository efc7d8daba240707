"""Aligning one trained model to another through a permutation spec: weight matching (Git
Re-Basin), activation matching, greedy layer-by-layer activation matching, and the paper
code's per-batch greedy matching."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmc_jax.models.nnx_bridge import from_module, variables_of
from mmc_jax.permute.layouts import Group, has_layout, layout_groups, paper_groups, spec_names
from mmc_jax.permute.sites import TracedActivations
from mmc_jax.permute.spec import (
    Blocks,
    PermutationSpec,
    apply,
    leaves_of,
    part_paths,
    part_view,
    perms_of,
    permute_leaf,
    select_path,
    validate,
)
from mmc_jax.runtime.errors import InputError

#: Most rounds of activation matching when a site holds units of several permutations
#: (attention's heads and head dimensions, a split axis's parts): each round compares a with
#: b aligned by the previous round, until nothing changes.
COUPLED_ROUNDS = 4

#: A flax module, or any ``apply``-like callable the sites can be traced through.
Model = nn.Module | Callable
#: A model's variables (``{"params": ..., "batch_stats": ...}``).
Variables = Mapping[str, Any]


def _solve(similarity: np.ndarray) -> np.ndarray:
    """The permutation maximising ``sum_i similarity[i, perm[i]]`` (rows: model a)."""
    import scipy.optimize  # imported when first needed: a third of a second at startup

    rows, cols = scipy.optimize.linear_sum_assignment(similarity, maximize=True)
    return cols[np.argsort(rows)]


def _unit_rows(
    x: np.ndarray, entries: tuple, name: str, axis: int, steps: tuple = ()
) -> np.ndarray:
    """``x`` as a ``[n, -1]`` matrix whose rows are the ``n`` units that permutation ``name``
    orders on ``axis`` (at its part ``steps``, :func:`~mmc_jax.permute.spec.part_paths`),
    each row's values sorted along the (flattened) sub-axes that any permutation acts on,
    separately for every index of the unpermuted sub-axes.

    Two rows that some choice of the *other* permutations maps onto each other are then
    equal, so ``rows_a @ rows_b.T`` compares units without knowing those permutations (it
    is, per pair, the best inner product over all rearrangements of the permuted sub-axes).
    In float32: it only gives coordinate descent a start, and sorts several times faster.
    """
    x = np.asarray(x, np.float32)
    shape, roles = [], []  # roles: 0 the unit axis, 1 unpermuted, 2 permuted
    for ax, entry in enumerate(entries):
        at = len(shape)
        if ax == axis and isinstance(entry, Blocks) and _nested_or_shared(entry, name):
            y, unit = select_path(x, at, steps)  # the other parts of the axis count as moved
            added = y.ndim - x.ndim + 1
            shape += y.shape[at : at + added]
            roles += [0 if at + i == unit else 2 for i in range(added)]
            x = y
        elif ax == axis and isinstance(entry, Blocks) and entry.kind == "segments":
            x, _ = select_path(x, at, steps)
            shape.append(x.shape[at])
            roles.append(0)
        elif isinstance(entry, Blocks) and entry.kind == "factors" and not _nested(entry):
            x = x.reshape(*x.shape[:at], *entry.sizes, *x.shape[at + 1 :])
            shape += entry.sizes
            roles += [0 if ax == axis and p == name else 1 if p is None else 2 for p in entry.perms]
        else:
            shape.append(x.shape[at])
            roles.append(0 if ax == axis else 1 if entry is None else 2)
    order = sorted(range(len(shape)), key=lambda i: roles[i])  # stable: unit, fixed, moved
    moved = math.prod(n for n, r in zip(shape, roles) if r == 2)
    x = np.transpose(x, order).reshape(shape[order[0]], -1, moved)
    return np.sort(x, axis=-1).reshape(shape[order[0]], -1)


def _nested(entry: Blocks) -> bool:
    return any(isinstance(p, Blocks) for p in entry.perms)


def _nested_or_shared(entry: Blocks, name: str) -> bool:
    """Whether ``name``'s place in ``entry`` needs :func:`_unit_rows`' general view."""
    return _nested(entry) or len(part_paths(entry, name)) > 1


def _similarity(
    spec: PermutationSpec,
    name: str,
    leaves_a: dict,
    leaves_b: dict,
    perm: Mapping[str, np.ndarray] | None,
) -> np.ndarray:
    """``[n, n]`` similarity of a's units (rows) and b's for permutation ``name``, summed
    over its parameter leaves (and the parts of an axis it acts on): with the other
    permutations at ``perm`` (Git Re-Basin's linear assignment), or, for ``perm=None``,
    invariant to them (:func:`_unit_rows`)."""
    size = spec.sizes[name]
    similarity = np.zeros((size, size))
    for path, axis in spec.perm_to_axes[name]:
        if path not in leaves_a:
            continue
        entries = spec.axes_to_perm[path]
        if perm is None:
            for steps in part_paths(entries[axis], name):
                similarity += (
                    _unit_rows(leaves_a[path], entries, name, axis, steps)
                    @ _unit_rows(leaves_b[path], entries, name, axis, steps).T
                )
        else:
            w_b = permute_leaf(leaves_b[path], entries, perm, skip=name)
            similarity += (
                part_view(leaves_a[path], entries[axis], name, axis)
                @ part_view(w_b, entries[axis], name, axis).T
            )
    return similarity


def _coordinate_descent(
    spec: PermutationSpec,
    leaves_a: dict,
    leaves_b: dict,
    perm: dict[str, np.ndarray],
    rng: np.random.Generator,
    max_iter: int,
) -> dict[str, np.ndarray]:
    """Git Re-Basin's coordinate descent from ``perm`` (updated in place and returned).

    A permutation's similarity depends only on the permutations sharing a parameter leaf
    with it (its own value is skipped), so it is re-solved only when one of those changed
    since its last solve: otherwise the same matrix would give the same assignment again.
    """
    neighbours = {
        name: sorted(
            {
                other
                for path, _ in entries
                if path in leaves_a
                for e in spec.axes_to_perm[path]
                for other in perms_of(e)
            }
            - {name}
        )
        for name, entries in spec.perm_to_axes.items()
    }
    version = dict.fromkeys(spec.sizes, 0)
    solved_at: dict[str, tuple] = {}
    for _ in range(max_iter):
        improved = False
        for name in rng.permutation(sorted(spec.sizes)):
            state = tuple(version[other] for other in neighbours[name])
            if solved_at.get(name) == state:
                continue
            solved_at[name] = state
            similarity = _similarity(spec, name, leaves_a, leaves_b, perm)
            new = _solve(similarity)
            rows = np.arange(spec.sizes[name])
            old_value = similarity[rows, perm[name]].sum()
            if similarity[rows, new].sum() > old_value + 1e-12 * max(1.0, abs(old_value)):
                perm[name] = new
                version[name] += 1
                improved = True
        if not improved:
            break
    return perm


def _total_similarity(
    spec: PermutationSpec, leaves_a: dict, leaves_b: dict, perm: Mapping[str, np.ndarray]
) -> float:
    """``sum over parameter leaves of <a_leaf, b_leaf permuted by perm>``, the objective."""
    return sum(
        float(np.vdot(x, permute_leaf(leaves_b[path], spec.axes_to_perm[path], perm)))
        for path, x in leaves_a.items()
    )


def weight_matching(
    spec: PermutationSpec,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    key: jax.Array,
    max_iter: int = 100,
) -> dict[str, jax.Array]:
    """Permutation aligning the weights of ``b`` to ``a`` (Ainsworth et al., "Git Re-Basin").

    Coordinate descent: each iteration visits the permutations in a random order and
    re-solves one, the others fixed, as a linear assignment maximising
    ``sum over its (leaf, axis) of <a_leaf, b_leaf permuted>``; the similarity matrix is
    ``a_leaf`` (axis first, flattened) times ``b_leaf`` with the other permutations applied
    (likewise). It stops after an iteration without improvement, or ``max_iter`` iterations.

    It runs twice and keeps the result of larger total similarity (the first on ties):
    from the identity, and from a start that solves every permutation alone on similarities
    invariant to all the others (units compared by their weights sorted along the axes other
    permutations act on). Coordinate descent stalls where permutations act jointly on the
    same weights (attention heads and head dimensions: the heads' similarity is computed
    with the head dimensions at wrong values); the second start does not depend on the
    other permutations, and recovers a planted permutation of a model at once.

    Only ``params`` enter the similarity; BatchNorm statistics are not weights, but
    :func:`apply` permutes them with the returned permutation all the same.

    Args:
      spec: the models' permutation spec.
      a: the reference variables (an ``nnx.Module`` stands for its own).
      b: the variables to align (likewise).
      key: PRNG key for the visiting orders.
      max_iter: most iterations over all permutations, per start.

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.
    """
    a, b = variables_of(a), variables_of(b)
    validate(spec, a)
    validate(spec, b)
    if max_iter < 1:
        raise InputError(f"max_iter must be positive, got {max_iter}")
    leaves_a = {
        p: np.asarray(x, np.float64)
        for p, x in leaves_of(spec, a).items()
        if p.startswith("params/")
    }
    leaves_b = {
        p: np.asarray(x, np.float64)
        for p, x in leaves_of(spec, b).items()
        if p.startswith("params/")
    }
    # A host generator seeded by the key's bits: no device program to compile per order.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    best, best_value = None, 0.0
    for start in (
        {name: np.arange(size) for name, size in spec.sizes.items()},
        {name: _solve(_similarity(spec, name, leaves_a, leaves_b, None)) for name in spec.sizes},
    ):
        perm = _coordinate_descent(spec, leaves_a, leaves_b, start, rng, max_iter)
        value = _total_similarity(spec, leaves_a, leaves_b, perm)
        if best is None or value > best_value + 1e-12 * max(1.0, abs(best_value)):
            best, best_value = perm, value
    return {name: jnp.asarray(p, jnp.int32) for name, p in best.items()}


def _module_activations(model: nn.Module, groups: list[Group]) -> Callable:
    """``(variables, images) → {perm: [positions × channels per site]}`` from
    ``capture_intermediates``: the hand-written sites of a library model's groups (module
    outputs, ``relu`` applied where the group says)."""
    modules = {path for group in groups for path, _ in group.sites}

    def capture(module: nn.Module, method: str) -> bool:
        return method == "__call__" and module.path in modules

    @jax.jit
    def activations(variables, images) -> dict[str, list[jax.Array]]:
        _, state = model.apply(
            variables, images, train=False, capture_intermediates=capture, mutable=["intermediates"]
        )
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

    return activations


def _moments_fn(activations: Callable) -> Callable:
    """A compiled ``(a, b, images) → {perm: [per site (n, mean_a, mean_b, cross, ss_a, ss_b)]}``
    over ``activations(variables, images) → {perm: [positions × units]}``.

    For each site, ``n`` is the number of positions (e.g. batch × height × width), ``mean_*``
    the unit means, ``cross`` ``[C, C]`` the centred cross products (a's units in rows),
    ``ss_*`` the centred sums of squares. Memory is one batch's activations at the sites
    plus ``C × C`` per site.
    """

    def moments(x_a, x_b):
        mean_a, mean_b = x_a.mean(0), x_b.mean(0)
        x_a, x_b = x_a - mean_a, x_b - mean_b
        return (x_a.shape[0], mean_a, mean_b, x_a.T @ x_b, (x_a**2).sum(0), (x_b**2).sum(0))

    @jax.jit
    def all_moments(acts_a, acts_b):
        return {
            name: [moments(x_a, x_b) for x_a, x_b in zip(acts_a[name], acts_b[name])]
            for name in acts_a
        }

    # The forward passes run as their own program: a's and b's share one compilation.
    return lambda a, b, images: all_moments(activations(a, images), activations(b, images))


def _traced(spec: PermutationSpec, model, a: Mapping[str, Any], b: Mapping[str, Any]):
    """Checks ``spec`` against both models; the activations of its permutations' sites."""
    validate(spec, a)
    validate(spec, b)
    return TracedActivations(spec, model, a)


def _plain(model, a, b) -> tuple:
    """``(model, a, b)`` with NNX modules as the library's forms (an apply function,
    variables)."""
    model = from_module(model)[0] if isinstance(model, nnx.Module) else model
    return model, variables_of(a), variables_of(b)


def _cosine(cross: np.ndarray, ss_a: np.ndarray, ss_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of centred channels from their cross products and sums of squares;
    a constant channel has similarity 0 to every channel."""
    norms = np.sqrt(np.outer(ss_a, ss_b))
    return np.divide(cross, norms, out=np.zeros_like(cross), where=norms > 0)


def _host(moments) -> tuple:
    """Device moments as float64 numpy arrays (``n`` as a float)."""
    return tuple(np.asarray(m, np.float64) for m in moments)


def _cosine_sum(sites: Iterable[tuple]) -> np.ndarray:
    """The cosine similarities (:func:`_cosine`) of several sites' host moments, summed."""
    return sum(_cosine(cross, ss_a, ss_b) for _, _, _, cross, ss_a, ss_b in sites)


def _check_reiterable(batches: Iterable[Any], method: str) -> None:
    """Raises InputError when ``batches`` is an iterator, which ``method`` (iterating over the
    batches once per permutation) would exhaust at the first."""
    if iter(batches) is batches:
        raise InputError(
            f"{method} iterates over the batches once per permutation; pass a re-iterable "
            "(e.g. a list), not an iterator"
        )


def activation_matching(
    spec: PermutationSpec, model: Model, a: Variables, b: Variables, batches: Iterable[Any]
) -> dict[str, jax.Array]:
    """Permutation aligning the activations of ``b`` to ``a`` (Ainsworth et al.; Entezari et al.).

    Both models run in eval mode on every batch. Each permutation is solved independently, as a
    linear assignment maximising the correlation of a's and b's units at its activations,
    found in the model's trace (:mod:`mmc_jax.permute.sites`): the arrays its units enter
    the layers reading them in, before pooling. For the library's models:

    - VGG ``P_conv{i}``: ``relu`` of ``bn{i}``'s output; SmallCNN likewise, before its
      max-pool (pooling does not mix channels).
    - ResNet stream of stage ``s`` (``P_stem_conv``, ``P_stage{s}_block0/conv2``): the output
      of every block of the stage (after the residual add and ReLU), plus for stage 0
      ``relu`` of ``stem_bn``'s output, which enters the same stream;
      ``P_stage{s}_block{b}/conv1``: ``relu`` of the block's ``bn1`` output.

    The correlation is computed per batch (units centred and normalised over the batch and
    every other position, e.g. height × width), summed over the batches and over a
    permutation's activations. Where one activation holds units of several permutations
    (attention's heads and head dimensions, GroupNorm's groups and the channels within them),
    the others' units count as positions, compared as currently aligned: the solve is then
    repeated on ``b`` aligned by the last round, up to :data:`COUPLED_ROUNDS` rounds, until
    nothing changes.

    Args:
      spec: the models' spec, from :func:`derive_spec` or :func:`spec_for`.
      model: a Flax module (run with ``train=False``) or an apply function
        ``(variables, images) → outputs``.
      a: the reference variables.
      b: the variables to align.
      batches: normalised NHWC float images, one array per batch (each distinct shape is
        traced once).

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.

    Raises:
      InputError: no batches, or a spec whose permutations are not symmetries of the model.
    """
    model, a, b = _plain(model, a, b)
    activations = _traced(spec, model, a, b)
    moments_fn = _moments_fn(activations)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise InputError("activation matching needs at least one batch")
    rounds = COUPLED_ROUNDS if activations.coupled(first) else 1
    batches = [first, *batches] if rounds > 1 else itertools.chain([first], batches)
    perm = {name: np.arange(size) for name, size in spec.sizes.items()}
    for _ in range(rounds):
        similarity = _summed_similarity(spec, moments_fn, a, apply(spec, perm, b), batches)
        step = {name: _solve(s) for name, s in similarity.items()}
        # apply(spec, step, apply(spec, perm, b)) takes channel perm[name][step[i]] of b.
        perm = {name: perm[name][step[name]] for name in perm}
        if all((s == np.arange(len(s))).all() for s in step.values()):
            break
    return {name: jnp.asarray(p, jnp.int32) for name, p in perm.items()}


def _summed_similarity(
    spec: PermutationSpec, moments_fn: Callable, a: Variables, b: Variables, batches
) -> dict[str, np.ndarray]:
    """Per permutation, the cosine similarities of a's and b's units at its sites, per batch,
    summed over the sites and the batches."""
    similarity = {name: np.zeros((size, size)) for name, size in spec.sizes.items()}
    for images in batches:
        for name, sites in moments_fn(a, b, images).items():
            for _, _, _, cross, ss_a, ss_b in map(_host, sites):
                similarity[name] += _cosine(cross, ss_a, ss_b)
    return similarity


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
    return (
        n,
        mean_a1 + delta_a * n2 / n,
        mean_b1 + delta_b * n2 / n,
        cross1 + cross2 + weight * np.outer(delta_a, delta_b),
        ss_a1 + ss_a2 + weight * delta_a**2,
        ss_b1 + ss_b2 + weight * delta_b**2,
    )


def greedy_activation_matching(
    spec: PermutationSpec, model: Model, a: Variables, b: Variables, batches: Iterable[Any]
) -> dict[str, jax.Array]:
    """Layer-by-layer activation matching, the scheme of the paper's code.

    Permutations are solved in forward order of their activations (the same activations as
    :func:`activation_matching`). For each, both models run on all batches, the similarity is
    the cosine of a's and b's channels centred over the whole stream (moments pooled over all
    batches, not summed per batch), and the assignment is applied to ``b`` before the next
    permutation's activations are computed. Where activations hold units of several
    permutations, the sweep is repeated (up to :data:`COUPLED_ROUNDS`) until nothing changes.

    Differences from :func:`activation_matching`: statistics pooled over the stream instead
    of per-batch correlations summed, and sequential solving that costs one pass over the
    batches per permutation. Because a layer's outputs depend only on its own permutation
    (earlier ones cancel between writer and reader), applying the earlier assignments leaves
    the later activations unchanged up to float rounding; the sequential order is kept for
    fidelity to the paper's procedure.

    Args:
      spec: the models' spec, from :func:`derive_spec` or :func:`spec_for`.
      model: a Flax module (run with ``train=False``) or an apply function.
      a: the reference variables.
      b: the variables to align.
      batches: normalised NHWC float images; iterated once per permutation, so it must be
        re-iterable (a list, or an object whose ``__iter__`` restarts), not an iterator.

    Returns:
      Permutation name → int32 array, for ``apply(spec, perm, b)``.
    """
    _check_reiterable(batches, "greedy activation matching")
    model, a, b = _plain(model, a, b)
    activations = _traced(spec, model, a, b)
    moments_fn = _moments_fn(activations)
    first = next(iter(batches), None)
    if first is None:
        raise InputError("activation matching needs at least one batch")
    perm = {name: np.arange(size) for name, size in spec.sizes.items()}
    for _ in range(COUPLED_ROUNDS if activations.coupled(first) else 1):
        changed = False
        for name in activations.order(first):
            pooled = None
            aligned_b = apply(spec, perm, b)
            for images in batches:
                sites = moments_fn(a, aligned_b, images)[name]
                pooled = [
                    _merge(total, _host(m))
                    for total, m in zip(pooled or [None] * len(sites), sites)
                ]
            step = _solve(_cosine_sum(pooled))
            perm[name] = perm[name][step]
            changed |= not (step == np.arange(len(step))).all()
        if not changed:
            break
    return {name: jnp.asarray(p, jnp.int32) for name, p in perm.items()}


def _checked_groups(
    spec: PermutationSpec, model: nn.Module, a: Mapping[str, Any], b: Mapping[str, Any]
) -> list[Group]:
    """The hand-written groups of a library model with the paper code's activations, named
    as ``spec`` names them, after checking that they and ``spec`` describe ``a`` and ``b``."""
    validate(spec, a)
    validate(spec, b)
    if not has_layout(model, a):
        raise InputError(
            "paper activation matching reproduces the paper code on its models "
            f"(VGG, SmallCNN, ResNet), not {type(model).__name__}; use activation "
            "or greedy matching"
        )
    groups = paper_groups(layout_groups(model, a))
    names = spec_names(spec, groups)
    if sorted(names.values()) != sorted(spec.sizes):
        raise InputError(
            f"the spec's permutations {sorted(spec.sizes)} are not those of the "
            f"model, {sorted(names.values())}"
        )
    return [dataclasses.replace(g, perm=names[g.perm]) for g in groups]


def paper_activation_matching(
    spec: PermutationSpec,
    model: nn.Module,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    batches: Iterable[Any],
) -> dict[str, jax.Array]:
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
    stream, which the code matches only where a stream starts: ``P_stem_conv`` on ``relu`` of
    ``stem_bn``'s output, stage ``s``'s (s > 0) on ``relu`` of the ``shortcut_bn`` output of
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
    _check_reiterable(batches, "paper activation matching")
    groups = _checked_groups(spec, model, a, b)
    moments_fn = _moments_fn(_module_activations(model, groups))
    perm = {name: np.arange(size) for name, size in spec.sizes.items()}
    for group in groups:
        _solve_per_batch(spec, moments_fn, a, b, batches, group.perm, perm)
    return {name: jnp.asarray(p, jnp.int32) for name, p in perm.items()}


def _solve_per_batch(
    spec: PermutationSpec,
    moments_fn: Callable,
    a: Variables,
    b: Variables,
    batches: Iterable[Any],
    name: str,
    perm: dict[str, np.ndarray],
) -> None:
    """The paper code's step for permutation ``name``: on each batch in turn, the assignment
    of a's units to those of ``b`` aligned by ``perm``, composed into ``perm[name]`` at once
    (``perm`` is updated in place)."""
    solved = False
    for images in batches:
        sites = moments_fn(a, apply(spec, perm, b), images)[name]
        # apply(spec, {name: s}, apply(spec, perm, b)) takes channel perm[name][s[i]] of b.
        perm[name] = perm[name][_solve(_cosine_sum(map(_host, sites)))]
        solved = True
    if not solved:
        raise InputError("activation matching needs at least one batch")
