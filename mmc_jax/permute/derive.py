"""Permutation symmetries of any Flax model, derived from its traced forward pass.

Hidden units can be permuted wherever every array that writes them and every array that reads
them is permuted alike. Which array axes must share a permutation follows from how values
flow through the computation, so :func:`derive_spec` traces the model once (``jax.make_jaxpr``,
eval mode) and joins array axes into groups with a union-find, one rule per primitive:

* ``dot_general``: contracted axes of the two operands join; batch axes join the output's;
  every free axis joins its place in the output (a dense kernel's input axis joins the
  features it reads, its output axis the features it writes; attention's einsums join heads
  and head dimensions of query, key and value).
* ``conv_general_dilated``: the input's feature axis joins the kernel's input axis, the
  kernel's output axis joins the output's feature axis (spatial axes are never permuted;
  grouped convolutions are not supported).
* elementwise ops (arithmetic, activations, comparisons, casts, ``select_n``): equal axes
  join; ``broadcast_in_dim``, ``reshape`` that keeps an axis whole, ``squeeze``,
  ``transpose``, reductions and pooling windows carry axes to their new places. So a bias,
  a normalisation's scale and offset, BatchNorm statistics and residual adds join the
  features they touch; LayerNorm's and BatchNorm's reductions over the feature axis are
  permutation invariant.
* calls (``pjit``, ``custom_jvp_call``, ...) are followed into their bodies.

Axes that reach the model's inputs or outputs are fixed (no permutation). An op the rules do
not cover (e.g. a ``reshape`` that splits the feature axis, as GroupNorm does, ``concatenate``
or ``gather``) fixes the axes it touches; when that fixes axes of a weight, the op is listed
in ``spec.unsupported``, or raises with ``strict=True``. Every group that holds an axis of a
weight and is not fixed becomes one permutation.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Mapping

import jax
from jax.extend import core as jcore

from mmc_jax.errors import InputError
from mmc_jax.permute.spec import PermutationSpec, _path, validate

#: Primitives whose output element i depends only on the inputs' elements i.
ELEMENTWISE = frozenset("""
abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
copy_p cos cosh device_put div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow
is_finite le lgamma digamma log log1p logistic lt max min mul ne neg nextafter not or pow real
reduce_precision rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh
xor
""".split())
#: Reductions over ``params["axes"]``.
REDUCTIONS = frozenset(["reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                        "reduce_or", "argmax", "argmin"])
#: Pooling-style windows over ``params["window_dimensions"]``.
WINDOWS = frozenset(["reduce_window_sum", "reduce_window_max", "reduce_window_min",
                     "reduce_window"])
#: Parameters naming a sub-computation that call-like primitives run.
_SUBJAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class _Groups:
    """Union-find over array axes ``(var, axis)``, with the reasons that fix some of them."""

    def __init__(self):
        self.parent: dict[Hashable, Hashable] = {}
        self.fixed: dict[Hashable, str | None] = {}
        #: reshapes that split or merge axes: (input axes, output axes).
        self.reshapes: list[tuple[list, list]] = []

    def find(self, node):
        parent = self.parent.setdefault(node, node)
        if parent != node:
            parent = self.parent[node] = self.find(parent)
        return parent

    def join(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def fix(self, node, reason: str | None = None) -> None:
        """Marks ``node`` as not permutable; ``reason`` names an unsupported op (``None``: a
        structural reason, an input, output or spatial axis, which takes precedence)."""
        if reason is None:
            self.fixed[node] = None
        else:
            self.fixed.setdefault(node, reason)


def _var(v):
    """The jaxpr variable of a scoped variable ``(scope, var)``, or ``v`` itself."""
    return v[1] if isinstance(v, tuple) else v


def _shape(v) -> tuple[int, ...]:
    return tuple(getattr(_var(v).aval, "shape", ()))


def _is_var(v) -> bool:
    return not isinstance(_var(v), jcore.Literal)


def _scoped(scope: tuple, variables) -> list:
    """Variables of one call of a computation as ``(scope, var)``: a computation that several
    call sites share (a cached ``pjit`` body) has the same variables at every site, so its
    axes are told apart by the chain of call equations that reached them."""
    return [(scope, v) if _is_var(v) else v for v in variables]


def _join_axes(groups: _Groups, a, i: int, b, j: int) -> None:
    """Joins axis i of a with axis j of b when both are arrays of one size above 1."""
    if _is_var(a) and _is_var(b):
        if _shape(a)[i] == _shape(b)[j] and _shape(a)[i] > 1:
            groups.join((a, i), (b, j))


def _fix_all(groups: _Groups, variables: Iterable, reason: str | None = None) -> None:
    for v in variables:
        if _is_var(v):
            for axis in range(len(_shape(v))):
                groups.fix((v, axis), reason)


def _reshape_pairs(in_shape, out_shape):
    """Pairs of (input axis, output axis) that a reshape keeps whole, and the axes it splits
    or merges (as two lists), ignoring axes of size 1."""
    ins = [i for i, d in enumerate(in_shape) if d != 1]
    outs = [o for o, d in enumerate(out_shape) if d != 1]
    pairs, broken_in, broken_out = [], [], []
    i = o = 0
    while i < len(ins) and o < len(outs):
        block_in, block_out = [ins[i]], [outs[o]]
        size_in, size_out = in_shape[ins[i]], out_shape[outs[o]]
        i, o = i + 1, o + 1
        while size_in != size_out:
            if size_in < size_out:
                block_in.append(ins[i])
                size_in *= in_shape[ins[i]]
                i += 1
            else:
                block_out.append(outs[o])
                size_out *= out_shape[outs[o]]
                o += 1
        if len(block_in) == len(block_out) == 1:
            pairs.append((block_in[0], block_out[0]))
        else:
            broken_in += block_in
            broken_out += block_out
    return pairs, broken_in, broken_out


def _describe(eqn) -> str:
    shapes = ", ".join(str(_shape(v)) for v in eqn.invars if _is_var(v))
    return f"{eqn.primitive.name}({shapes})"


def _visit(jaxpr, groups: _Groups, scope: tuple = ()) -> None:
    """Applies the rule of every equation of ``jaxpr`` (recursing into sub-computations);
    its variables are told apart from other calls of it by ``scope``."""
    for index, eqn in enumerate(jaxpr.eqns):
        name, params = eqn.primitive.name, eqn.params
        ins, outs = _scoped(scope, eqn.invars), _scoped(scope, eqn.outvars)
        sub = next((params[k] for k in _SUBJAXPR_PARAMS if k in params), None)
        if sub is not None:
            inner = getattr(sub, "jaxpr", sub)
            inner_scope = (*scope, index)
            _fix_all(groups, _scoped(inner_scope, inner.constvars))
            inner_ins = _scoped(inner_scope, inner.invars)
            for outer, inner_var in zip(ins[len(ins) - len(inner_ins):], inner_ins):
                for axis in range(len(_shape(inner_var))):
                    _join_axes(groups, outer, axis, inner_var, axis)
            _visit(inner, groups, inner_scope)
            for inner_var, outer in zip(_scoped(inner_scope, inner.outvars), outs):
                for axis in range(len(_shape(outer))):
                    _join_axes(groups, inner_var, axis, outer, axis)
            continue
        if name in ELEMENTWISE:
            (out,) = outs
            for v in ins:
                if _is_var(v) and len(_shape(v)) == len(_shape(out)):
                    for axis in range(len(_shape(out))):
                        _join_axes(groups, v, axis, out, axis)
        elif name == "broadcast_in_dim":
            for j, axis in enumerate(params["broadcast_dimensions"]):
                _join_axes(groups, ins[0], j, outs[0], axis)
        elif name == "reshape":
            pairs, broken_in, broken_out = _reshape_pairs(_shape(ins[0]), _shape(outs[0]))
            for i, o in pairs:
                _join_axes(groups, ins[0], i, outs[0], o)
            reason = f"reshape {_shape(ins[0])} -> {_shape(outs[0])}"
            for axis in broken_in:
                groups.fix((ins[0], axis), reason)
            for axis in broken_out:
                groups.fix((outs[0], axis), reason)
            if broken_in:
                groups.reshapes.append(([(ins[0], a) for a in broken_in],
                                        [(outs[0], a) for a in broken_out]))
        elif name == "squeeze":
            kept = [a for a in range(len(_shape(ins[0]))) if a not in params["dimensions"]]
            for o, i in enumerate(kept):
                _join_axes(groups, ins[0], i, outs[0], o)
        elif name == "transpose":
            for o, i in enumerate(params["permutation"]):
                _join_axes(groups, ins[0], i, outs[0], o)
        elif name in REDUCTIONS:
            kept = [a for a in range(len(_shape(ins[0]))) if a not in params["axes"]]
            for o, i in enumerate(kept):
                _join_axes(groups, ins[0], i, outs[0], o)
        elif name in WINDOWS:
            _window(eqn, ins, outs, groups)
        elif name == "dot_general":
            _dot_general(eqn, ins, outs, groups)
        elif name == "conv_general_dilated":
            _conv(eqn, ins, outs, groups)
        elif name in ("iota", "random_bits", "random_seed", "random_wrap", "random_unwrap"):
            _fix_all(groups, outs)
        else:  # not understood: nothing it touches may be permuted
            _fix_all(groups, [*ins, *outs], _describe(eqn))


def _propagate_structural(groups: _Groups) -> None:
    """A reshape that merges or splits axes which all reach an input (flattening an image for
    an MLP) gives axes that reach the input too: fixed for a structural reason, not for an
    unsupported op."""
    changed = True
    while changed:
        changed = False
        roots = {groups.find(n) for n, reason in groups.fixed.items() if reason is None}
        for ins, outs in groups.reshapes:
            if all(groups.find(n) in roots for n in ins):
                for node in outs:
                    if groups.fixed.get(node, "") is not None:
                        groups.fixed[node] = None
                        changed = True


def _window(eqn, ins, outs, groups: _Groups) -> None:
    """Pooling: axes with a trivial window keep their place; windowed axes are fixed."""
    params = eqn.params
    x, out = ins[0], outs[0]
    strides = params.get("window_strides", (1,) * len(_shape(x)))
    padding = params.get("padding", ((0, 0),) * len(_shape(x)))
    for axis, (size, stride, pad) in enumerate(zip(params["window_dimensions"], strides,
                                                   padding)):
        if size == 1 and stride == 1 and tuple(pad) == (0, 0):
            _join_axes(groups, x, axis, out, axis)
        else:
            groups.fix((x, axis))
            groups.fix((out, axis))


def _dot_general(eqn, ins, outs, groups: _Groups) -> None:
    lhs, rhs = ins
    (out,) = outs
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    for i, j in zip(lc, rc):
        _join_axes(groups, lhs, i, rhs, j)
    for k, (i, j) in enumerate(zip(lb, rb)):
        _join_axes(groups, lhs, i, out, k)
        _join_axes(groups, rhs, j, out, k)
    lhs_free = [d for d in range(len(_shape(lhs))) if d not in (*lc, *lb)]
    rhs_free = [d for d in range(len(_shape(rhs))) if d not in (*rc, *rb)]
    for k, d in enumerate(lhs_free):
        _join_axes(groups, lhs, d, out, len(lb) + k)
    for k, d in enumerate(rhs_free):
        _join_axes(groups, rhs, d, out, len(lb) + len(lhs_free) + k)


def _conv(eqn, ins, outs, groups: _Groups) -> None:
    lhs, rhs = ins
    (out,) = outs
    numbers = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    for v, spec in ((lhs, lhs_spec), (rhs, rhs_spec), (out, out_spec)):
        for axis in spec[2:]:  # spatial axes
            groups.fix((v, axis))
    _join_axes(groups, lhs, lhs_spec[0], out, out_spec[0])
    if eqn.params["feature_group_count"] != 1 or eqn.params["batch_group_count"] != 1:
        reason = f"grouped convolution {_describe(eqn)}"
        for v, axes in ((lhs, lhs_spec[1:2]), (rhs, rhs_spec[:2]), (out, out_spec[1:2])):
            for axis in axes:
                groups.fix((v, axis), reason)
        return
    _join_axes(groups, lhs, lhs_spec[1], rhs, rhs_spec[1])
    _join_axes(groups, rhs, rhs_spec[0], out, out_spec[1])


def derive_spec(apply_fn: Callable, variables: Mapping[str, Any], *example_args,
                strict: bool = False, **apply_kwargs):
    """The permutation spec of any model, derived from its traced forward pass.

    Args:
      apply_fn: the model's apply function, called as ``apply_fn(variables, *example_args,
        **apply_kwargs)`` (e.g. ``model.apply`` with ``train=False``).
      variables: its variables (``params``, ``batch_stats``, any collection); every leaf gets
        an entry in the spec.
      *example_args: example inputs (only their shapes and dtypes matter).
      strict: raise on an op the rules do not cover instead of fixing the axes it touches.
      **apply_kwargs: keyword arguments of the call, e.g. ``train=False``.

    Returns:
      A :class:`mmc_jax.permute.PermutationSpec` whose ``unsupported`` lists the ops that
      fixed axes of weights; permutations are named after the first weight leaf they act on.

    Raises:
      InputError: with ``strict=True``, naming the unsupported op and the leaves it touches.
    """
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    names = [_path(keys) for keys, _ in flat]
    closed = jax.make_jaxpr(lambda v, *args: apply_fn(v, *args, **apply_kwargs))(
        variables, *example_args)
    jaxpr = closed.jaxpr
    groups = _Groups()
    weights = _scoped((), jaxpr.invars[:len(names)])
    _fix_all(groups, _scoped((), jaxpr.invars[len(names):]))  # the inputs
    _fix_all(groups, _scoped((), jaxpr.outvars))              # the outputs
    _fix_all(groups, _scoped((), jaxpr.constvars))
    _visit(jaxpr, groups)

    members: dict[Any, list[tuple[str, int]]] = {}
    for name, v in zip(names, weights):
        for axis in range(len(_shape(v))):
            members.setdefault(groups.find((v, axis)), []).append((name, axis))
    # Fixed groups, with the unsupported ops that fixed them; a group that reaches an input,
    # an output or a spatial axis is fixed anyway, and its ops are not worth reporting.
    _propagate_structural(groups)
    fixed_roots: dict[Any, list[str]] = {}
    structural = set()
    for node, reason in groups.fixed.items():
        root = groups.find(node)
        reasons = fixed_roots.setdefault(root, [])
        if reason is None:
            structural.add(root)
        elif reason not in reasons:
            reasons.append(reason)
    sizes_of = {name: _shape(v) for name, v in zip(names, weights)}
    weight_nodes = {(v, axis) for v in weights for axis in range(len(_shape(v)))}
    # Groups that hold an activation axis: a weight axis joined to nothing else (an unused
    # leaf, a kernel's spatial axis) is no symmetry.
    active = {groups.find(node) for node in groups.parent if node not in weight_nodes}
    perm_to_axes, sizes, unsupported = {}, {}, []
    axes_to_perm = {name: [None] * len(sizes_of[name]) for name in names}
    for root, entries in members.items():
        if root in fixed_roots:
            for reason in ([] if root in structural else fixed_roots[root]):
                if strict:
                    leaves = ", ".join(sorted({n for n, _ in entries}))
                    raise InputError(f"unsupported op {reason} touches {leaves}")
                if reason not in unsupported:
                    unsupported.append(reason)
            continue
        dims = {sizes_of[n][a] for n, a in entries}
        if len(dims) != 1 or root not in active:
            continue
        perm = _name(entries, sizes_of, perm_to_axes)
        perm_to_axes[perm] = tuple(entries)
        sizes[perm] = dims.pop()
        for n, a in entries:
            axes_to_perm[n][a] = perm
    spec = PermutationSpec(perm_to_axes, {n: tuple(a) for n, a in axes_to_perm.items()}, sizes,
                           tuple(unsupported))
    validate(spec, variables)
    return spec


def _name(entries, sizes_of, taken) -> str:
    """``P_<module>``: the module of the first leaf whose last axis the group holds (the
    layer writing the units), else of the first leaf."""
    writer = next((n for n, a in entries if a == len(sizes_of[n]) - 1), entries[0][0])
    parts = writer.split("/")
    module = "/".join(parts[1:-1]) or parts[-1]
    name, k = f"P_{module}", 1
    while name in taken:
        k += 1
        name = f"P_{module}_{k}"
    return name
