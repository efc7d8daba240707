"""The permutation spec of any Flax model, derived from its traced forward pass.

:func:`derive_spec` traces the model (:mod:`mmc_jax.permute.trace` has the rules that group
array axes) and turns every group that holds an axis of a weight, reaches neither the input
nor the output and is not fixed by an unsupported op into one named permutation. An axis
made of parts (a reshape's factors, a concatenation's segments) gets a
:class:`mmc_jax.permute.Blocks` entry with one permutation per free part.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.permute.spec import Blocks, PermutationSpec, perms_of, validate
from mmc_jax.permute.trace import Parts, Trace, shape, size, trace_model
from mmc_jax.runtime.errors import InputError


@accepts_nnx
def derive_spec(
    apply_fn: Callable,
    variables: Mapping[str, Any],
    *example_args,
    strict: bool = False,
    residual_stream: bool = True,
    **apply_kwargs,
) -> PermutationSpec:
    """The permutation spec of any model, derived from its traced forward pass (an
    ``nnx.Module`` may replace ``(apply_fn, variables)``).

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
    if not residual_stream:
        for node in trace.groups.residual:
            trace.groups.fix(node)
    builder = _SpecBuilder(trace, strict)
    for root, entries in builder.members.items():
        builder.add(root, entries)
    streams = {trace.groups.find(node) for node in trace.groups.residual}
    names = tuple(dict.fromkeys(builder.names[r] for r in streams if r in builder.names))
    spec = builder.spec(_stacked(trace.names), tuple(sorted(names)))
    validate(spec, variables)
    return spec


class _SpecBuilder:
    """The spec of a trace, built one group of weight axes at a time (:meth:`add`).

    Attributes:
      members: group root → the ``(leaf path, axis)`` pairs of the weights in the group, the
        groups in order of their first weight axis.
    """

    def __init__(self, trace: Trace, strict: bool):
        self.groups, self.strict = trace.groups, strict
        self.status = self.groups.settle()
        self.shapes = {name: shape(v) for name, v in zip(trace.names, trace.weights)}
        self.first_use = trace.first_use()
        weight_nodes = {(v, axis) for v in trace.weights for axis in range(len(shape(v)))}
        # Groups that hold an activation axis: a weight axis joined to nothing else (an unused
        # leaf, a kernel's spatial axis) is no symmetry.
        self.active = {
            self.groups.find(node) for node in self.groups.parent if node not in weight_nodes
        }
        self.members: dict[Any, list[tuple[str, int]]] = {}
        for name, v in zip(trace.names, trace.weights):
            for axis in range(len(shape(v))):
                self.members.setdefault(self.groups.find((v, axis)), []).append((name, axis))
        self.unsupported: list[str] = []
        self.names: dict[Any, str] = {}
        self.perm_to_axes: dict[str, list] = {}
        self.sizes: dict[str, int] = {}
        self.axes_to_perm = {name: [None] * len(s) for name, s in self.shapes.items()}

    def add(self, root, entries: list[tuple[str, int]]) -> None:
        """Gives the weight axes ``entries`` of group ``root`` their permutation(s), if the
        group may be permuted."""
        if not self.free(root, entries) or root not in self.active:
            return
        layout = self.groups.layout(root)
        if isinstance(layout, Parts):
            entry = self.blocks(layout, entries, self.base_name(entries))
            acting = perms_of(entry)
            if not acting:
                return
        else:
            entry = self.name_of(root, self.base_name(entries))
            acting = (entry,)
        for leaf, axis in entries:
            self.axes_to_perm[leaf][axis] = entry
            for perm in acting:
                self.perm_to_axes[perm].append((leaf, axis))

    def blocks(self, layout: Parts, entries, base: str) -> Blocks | None:
        """The entry of an axis made of parts: one permutation per part that may be permuted
        (the same one wherever a group recurs, as a gated MLP's two halves), named after the
        part's own weights or, with none, ``<the axis's name>.<k>``; a part made of parts
        nests (None where nothing in it is permuted)."""
        perms, sizes = [], []
        for k, part in enumerate(layout.parts):
            if isinstance(part, Parts):
                perms.append(self.blocks(part, entries, f"{base}.{k}"))
                sizes.append(part.size)
                continue
            sizes.append(size(part))
            named = self.base_name(self.members[part]) if part in self.members else f"{base}.{k}"
            perms.append(self.name_of(part, named) if self.free(part, entries) else None)
        if all(p is None for p in perms):
            return None
        return Blocks(layout.kind, tuple(sizes), tuple(perms))

    def report(self, reason: str, entries) -> None:
        """Notes an unsupported op that fixed the axes ``entries``; raises if strict."""
        if self.strict:
            leaves = ", ".join(sorted({n for n, _ in entries}))
            raise InputError(f"unsupported op {reason} touches {leaves}")
        if reason not in self.unsupported:
            self.unsupported.append(reason)

    def free(self, root, entries) -> bool:
        """Whether ``root`` may be permuted; reports the unsupported ops that fixed it."""
        for reason in self.status.get(root, ()) or ():
            self.report(reason, entries)
        return root not in self.status and size(root) > 1

    def name_of(self, root, name: str) -> str:
        """The permutation of group ``root``: ``name``, or ``name_<k>`` when taken, given the
        first time the group is met."""
        if root not in self.names:
            k = 1
            while (candidate := name if k == 1 else f"{name}_{k}") in self.sizes:
                k += 1
            self.names[root] = candidate
            self.sizes[candidate], self.perm_to_axes[candidate] = size(root), []
        return self.names[root]

    def base_name(self, entries) -> str:
        """``P_<module>``: the module of the first leaf in forward order whose last axis the
        group holds (the layer writing the units); ``P_<module>@<axis>`` when no leaf has it
        last (attention's heads, axis 1 of the query kernel)."""
        leaf, axis = min(
            entries,
            key=lambda e: (
                e[1] != len(self.shapes[e[0]]) - 1,
                self.first_use.get(e[0], len(self.first_use)),
                e[0],
            ),
        )
        last = axis == len(self.shapes[leaf]) - 1
        layer = re.search(r"(\[\d+\])*$", leaf).group(0)  # a scanned layer's [k]
        parts = leaf[: len(leaf) - len(layer)].split("/")
        name = f"P_{'/'.join(parts[1:-1]) or parts[-1]}{layer}"
        return name if last else f"{name}@{axis}"

    def spec(self, stacked: dict[str, int], streams: tuple[str, ...]) -> PermutationSpec:
        return PermutationSpec(
            {p: tuple(e) for p, e in self.perm_to_axes.items()},
            {n: tuple(a) for n, a in self.axes_to_perm.items()},
            self.sizes,
            tuple(self.unsupported),
            stacked,
            streams,
        )


def _stacked(names: list[str]) -> dict[str, int]:
    """The stacked leaves among traced leaf names (``<path>[<k>]``: layer ``k`` of a weight
    scanned over) and their number of layers."""
    stacked: dict[str, int] = {}
    for name in names:
        while (found := re.fullmatch(r"(.*)\[(\d+)\]", name)) is not None:
            name, k = found.group(1), int(found.group(2))
            stacked[name] = max(stacked.get(name, 0), k + 1)
    return stacked
