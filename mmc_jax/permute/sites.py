"""The activations that activation matching compares, per permutation of a spec.

For any model they come from the same trace as :func:`mmc_jax.permute.derive_spec`: a
permutation's *sites* are the arrays its units enter the layers that read them in (every
data-dependent operand a ``dot_general`` or convolution sums over), followed back through
pooling and spatial means, which drop positions but never mix units. For the library's
models these are its hand-written sites: ``relu`` of each BatchNorm output of a VGG or
SmallCNN (before pooling), and for a ResNet the stem's output and every block's output on
the residual stream and ``relu`` of ``bn1`` inside each block.

A site holds units of several permutations when several act on its axes (attention's heads
and head dimensions, a split axis's parts); for one of them the others' positions count as
more samples, so such a similarity is an approximation (weight matching has none).
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmc_jax.permute.spec import PermutationSpec, part_paths, select_path
from mmc_jax.permute.trace import Parts, evaluate, trace_model
from mmc_jax.runtime.errors import InputError


def as_apply(model) -> Callable:
    """``(variables, images) → outputs`` in eval mode: ``model.apply(..., train=False)`` for a
    Linen module, ``model`` itself for any other callable. A module with a ``conv_impl``
    field (the library's models) runs plain XLA convolutions, whose channels the trace can
    follow (the CPU im2col form merges them with the kernel taps); the function is the same."""
    if isinstance(model, nn.Module):
        if getattr(model, "conv_impl", "xla") != "xla":
            model = model.clone(conv_impl="xla")
        return functools.partial(model.apply, train=False)
    if not callable(model):
        raise InputError(f"expected a Flax module or an apply function, got {type(model)}")
    return model


def _units(x: jax.Array, axis: int, steps: tuple):
    """``x`` as ``[positions, n]``: the ``n`` units at part ``steps`` of axis ``axis`` in
    columns."""
    x, axis = select_path(x, axis, steps)
    x = jnp.moveaxis(x.astype(jnp.float32), axis, -1)
    return x.reshape(-1, x.shape[-1])


def _follow(layout, steps: tuple):
    """The group at ``steps`` of a traced axis's layout (None where the two disagree)."""
    for kind, sizes, k in steps:
        if not isinstance(layout, Parts) or layout.kind != kind or len(layout.parts) != len(sizes):
            return None
        layout = layout.parts[k]
    return None if isinstance(layout, Parts) else layout


def _roots(spec: PermutationSpec, trace) -> dict[str, Any]:
    """Each permutation's group in ``trace``; every axis it lists must fall in that group."""
    roots = {}
    for name, entries in spec.perm_to_axes.items():
        found = set()
        for path, axis in entries:
            if path not in trace.names:
                raise InputError(
                    f"permutation {name} acts on {path}, which the model's variables lack"
                )
            layout = trace.groups.layout(trace.weight_node(path, axis))
            for steps in part_paths(spec.axes_to_perm[path][axis], name):
                found.add(_follow(layout, steps))
        if len(found) != 1 or None in found:
            raise InputError(
                f"permutation {name} of the spec is not a symmetry of the traced "
                "model (its axes fall in different groups)"
            )
        roots[name] = found.pop()
    return roots


class TracedActivations:
    """``(variables, images) → {permutation: [positions × units matrix per site]}``, one
    compiled program per input shape, from the trace of ``model`` on images of that shape.

    Args:
      spec: the permutation spec whose permutations are wanted.
      model: a Flax module (run with ``train=False``) or an apply function
        ``(variables, images) → outputs``.
      variables: variables of the model, for the trace (only their shapes matter).
    """

    def __init__(self, spec: PermutationSpec, model, variables: Mapping[str, Any]):
        self.spec, self.apply_fn, self.variables = spec, as_apply(model), variables
        self._compiled: dict[tuple, tuple[Callable, list[str], bool]] = {}

    def _compile(self, images) -> Callable:
        trace = trace_model(self.apply_fn, self.variables, images)
        sites = trace.sites()
        wanted, layout, first = [], {}, {}
        for name, root in _roots(self.spec, trace).items():
            if not sites.get(root):
                raise InputError(
                    f"no layer reads the units of permutation {name}, so "
                    "activation matching cannot compare them"
                )
            layout[name] = []
            first[name] = min(index for index, *_ in sites[root])
            for _, v, axis, steps in sites[root]:
                if v not in wanted:
                    wanted.append(v)
                layout[name].append((wanted.index(v), axis, steps))
        run = evaluate(trace, wanted)

        @jax.jit
        def activations(variables, images):
            values = run(variables, images)
            return {
                name: [_units(values[i], axis, steps) for i, axis, steps in places]
                for name, places in layout.items()
            }

        uses = collections.Counter(i for places in layout.values() for i, *_ in places)
        coupled = any(count > 1 for count in uses.values())
        return activations, sorted(layout, key=first.get), coupled

    def coupled(self, images) -> bool:
        """Whether some site holds units of several permutations (or several parts of one)."""
        return self._get(images)[2]

    def order(self, images) -> list[str]:
        """The permutations in forward order of their first site on inputs like ``images``."""
        return self._get(images)[1]

    def _get(self, images):
        key = (jnp.shape(images), jnp.result_type(images))
        if key not in self._compiled:
            self._compiled[key] = self._compile(images)
        return self._compiled[key]

    def __call__(self, variables, images) -> dict[str, list[jax.Array]]:
        return self._get(images)[0](variables, images)
