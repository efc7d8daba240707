"""The permutation spec of any Flax model, derived from its traced forward pass.

:func:`derive_spec` traces the model (:mod:`mmc_jax.permute.trace` has the rules that group
array axes) and turns every group that holds an axis of a weight, reaches neither the input
nor the output and is not fixed by an unsupported op into one named permutation. An axis
made of parts (a reshape's factors, a concatenation's segments) gets a
:class:`mmc_jax.permute.Blocks` entry with one permutation per free part.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from mmc_jax.permute.spec import Blocks, PermutationSpec, validate
from mmc_jax.permute.trace import Trace, shape, size, trace_model
from mmc_jax.runtime.errors import InputError


def derive_spec(
    apply_fn: Callable,
    variables: Mapping[str, Any],
    *example_args,
    strict: bool = False,
    residual_stream: bool = True,
    **apply_kwargs,
) -> PermutationSpec:
    """The permutation spec of any model, derived from its traced forward pass.

    Args:
      apply_fn: the model's apply function, called as ``apply_fn(variables, *example_args,
        **apply_kwargs)`` (e.g. ``model.apply`` with ``train=False``).
      variables: its variables (``params``, ``batch_stats``, any collection); every leaf gets
        an entry in the spec.
      *example_args: example inputs (only their shapes and dtypes matter).
      strict: raise on an op the rules do not cover instead of fixing the axes it touches.
      residual_stream: permute the residual streams (the units that residual additions
        ``x + f(x)`` join); ``False`` leaves them as they are and permutes only the units
        inside the branches, as some work finds identity streams merge better.
      **apply_kwargs: keyword arguments of the call, e.g. ``train=False``.

    Returns:
      A :class:`mmc_jax.permute.PermutationSpec` whose ``unsupported`` lists the ops that
      fixed axes of weights; permutations are named after the module writing the units
      (``P_<module>``; ``P_<module>.<k>`` for part ``k`` of a split axis).

    Raises:
      InputError: with ``strict=True``, naming the unsupported op and the leaves it touches.
    """
    trace = trace_model(apply_fn, variables, *example_args, **apply_kwargs)
    return spec_of(trace, variables, strict, residual_stream)


def spec_of(
    trace: Trace, variables: Mapping[str, Any], strict: bool = False, residual_stream: bool = True
) -> PermutationSpec:
    """The spec of a traced model (see :func:`derive_spec`)."""
    groups = trace.groups
    if not residual_stream:
        for node in groups.residual:
            groups.fix(node)
    status = groups.settle()
    sizes_of = {name: shape(v) for name, v in zip(trace.names, trace.weights)}
    first_use = trace.first_use()
    weight_nodes = {(v, axis) for v in trace.weights for axis in range(len(shape(v)))}
    # Groups that hold an activation axis: a weight axis joined to nothing else (an unused
    # leaf, a kernel's spatial axis) is no symmetry.
    active = {groups.find(node) for node in groups.parent if node not in weight_nodes}
    members: dict[Any, list[tuple[str, int]]] = {}
    for name, v in zip(trace.names, trace.weights):
        for axis in range(len(shape(v))):
            members.setdefault(groups.find((v, axis)), []).append((name, axis))

    unsupported: list[str] = []

    def free(root, entries) -> bool:
        """Whether ``root`` may be permuted; reports the unsupported ops that fixed it."""
        reasons = status.get(root, ())
        for reason in reasons or ():
            if strict:
                leaves = ", ".join(sorted({n for n, _ in entries}))
                raise InputError(f"unsupported op {reason} touches {leaves}")
            if reason not in unsupported:
                unsupported.append(reason)
        return root not in status and size(root) > 1

    names: dict[Any, str] = {}
    perm_to_axes: dict[str, list] = {}
    sizes: dict[str, int] = {}

    def name_of(root, name: str) -> str:
        if root not in names:
            k = 1
            while (candidate := name if k == 1 else f"{name}_{k}") in sizes:
                k += 1
            names[root] = candidate
            sizes[candidate], perm_to_axes[candidate] = size(root), []
        return names[root]

    axes_to_perm = {name: [None] * len(shape) for name, shape in sizes_of.items()}
    for root, entries in members.items():
        if not free(root, entries) or root not in active:
            continue
        kind, parts = groups.layout(root)
        if kind is None:
            entry = name_of(root, _name(entries, sizes_of, first_use))
            acting = [entry]
        elif kind == "mixed":
            reason = "reshape of a concatenated axis"
            if strict:
                raise InputError(
                    f"unsupported op {reason} touches {', '.join(sorted({n for n, _ in entries}))}"
                )
            if reason not in unsupported:
                unsupported.append(reason)
            continue
        else:
            base = _name(entries, sizes_of, first_use)
            perms = [
                name_of(
                    part,
                    _name(members[part], sizes_of, first_use) if part in members else f"{base}.{k}",
                )
                if free(part, entries) and parts.count(part) == 1
                else None
                for k, part in enumerate(parts)
            ]
            acting = [p for p in perms if p is not None]
            if not acting:
                continue
            entry = Blocks(kind, tuple(size(p) for p in parts), tuple(perms))
        for leaf, axis in entries:
            axes_to_perm[leaf][axis] = entry
            for perm in acting:
                perm_to_axes[perm].append((leaf, axis))
    spec = PermutationSpec(
        {p: tuple(e) for p, e in perm_to_axes.items()},
        {n: tuple(a) for n, a in axes_to_perm.items()},
        sizes,
        tuple(unsupported),
    )
    validate(spec, variables)
    return spec


def _name(entries, sizes_of, first_use) -> str:
    """``P_<module>``: the module of the first leaf in forward order whose last axis the
    group holds (the layer writing the units); ``P_<module>@<axis>`` when no leaf has it last
    (attention's heads, axis 1 of the query kernel)."""
    leaf, axis = min(
        entries,
        key=lambda e: (e[1] != len(sizes_of[e[0]]) - 1, first_use.get(e[0], len(first_use)), e[0]),
    )
    parts = leaf.split("/")
    name = f"P_{'/'.join(parts[1:-1]) or parts[-1]}"
    return name if axis == len(sizes_of[leaf]) - 1 else f"{name}@{axis}"
