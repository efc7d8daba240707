"""A model's forward pass as groups of array axes that must share one permutation.

Hidden units can be permuted wherever every array that writes them and every array that reads
them is permuted alike. Which array axes must share a permutation follows from how values
flow through the computation, so :func:`trace_model` traces the model once
(``jax.make_jaxpr``, eval mode) and joins array axes ``(var, axis)`` into groups with a
union-find, one rule per primitive (:data:`RULES`):

* ``dot_general``: contracted axes of the two operands join; batch axes join the output's;
  every free axis joins its place in the output (a dense kernel's input axis joins the
  features it reads, its output axis the features it writes; attention's einsums join heads
  and head dimensions of query, key and value).
* ``conv_general_dilated``: the input's feature axis joins the kernel's input axis, the
  kernel's output axis joins the output's feature axis (spatial axes are never permuted).
  With ``G`` feature groups the channels are ``G × (channels per group)`` factors: one
  permutation of the groups moves inputs and outputs alike, the kernel's input axis one
  within every input group; a depthwise convolution's inputs and outputs share one.
* elementwise ops (arithmetic, activations, comparisons, casts, ``select_n``): equal axes
  join; ``broadcast_in_dim``, ``squeeze``, ``transpose``, reductions and pooling windows
  carry axes to their new places. So a bias, a normalisation's scale and offset, BatchNorm
  statistics and residual adds join the features they touch; LayerNorm's and BatchNorm's
  reductions over the feature axis are permutation invariant.
* ``reshape``: an axis kept whole joins its new place. An axis split into several (GroupNorm's
  ``C → (groups, C / groups)``) or several merged into one (flattening ``H × W × C`` for a
  dense layer) makes the whole axis a product of *factors*, one group per sub-axis: its
  permutations are Kronecker products of one permutation per factor, e.g. a permutation of
  GroupNorm's groups times one permutation within every group, and a factor that reaches
  the input (the flattened image's height and width) stays fixed. A reshape that regroups
  axes in any other way is not supported.
* ``concatenate`` along an axis makes the result's axis a sum of *segments*, one group per
  operand: its permutations act within each block. ``split`` and static ``slice`` cut an
  axis into segments the same way (a fused q/k/v projection, a gated MLP's halves); parts
  nest (each q/k/v segment is heads × head dimensions) and a group may recur.
* ``gather`` (embedding lookups): an operand axis taken whole joins its place in the
  result; the indexed axis (the tokens) is fixed.
* calls (``jit``, ``custom_jvp_call``, ...) are followed into their bodies.

Axes that reach the model's inputs or outputs are fixed (no permutation). An op the rules do
not cover (e.g. ``cumsum``, a strided slice) fixes the axes it touches and is remembered by
name, so that :func:`mmc_jax.permute.derive_spec` can report it.

The trace also records *activation sites*, for activation matching: every axis that a
contraction (``dot_general``, ``conv_general_dilated``) sums over on a data-dependent operand,
i.e. the units as the layers reading them see them, followed back through pooling and
averaging (which drop positions but never mix units), as :func:`evaluate` returns them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Iterable, Mapping

import jax
from jax.extend import core as jcore

from mmc_jax.permute.spec import leaf_path

#: Primitives whose output element i depends only on the inputs' elements i.
ELEMENTWISE = frozenset(
    """
abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
copy_p cos cosh device_put div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow
is_finite le lgamma digamma log log1p logistic lt max min mul ne neg nextafter not or pow real
reduce_precision rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh
xor
""".split()
)
#: Reductions over ``params["axes"]``.
REDUCTIONS = frozenset(
    [
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "reduce_prod",
        "reduce_and",
        "reduce_or",
        "argmax",
        "argmin",
    ]
)
#: Pooling-style windows over ``params["window_dimensions"]``.
WINDOWS = frozenset(
    ["reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"]
)
#: Primitives that call a sub-computation once on their operands, and its parameter's name.
CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}
#: Primitives that make fresh values (constants, random bits): fixed, and nothing to report.
SOURCES = frozenset(
    ["iota", "random_bits", "random_seed", "random_wrap", "random_unwrap", "full", "zeros_like"]
)


def _var(v):
    """The jaxpr variable of a scoped variable ``(scope, var)``, or ``v`` itself."""
    return v[1] if isinstance(v, tuple) else v


def shape(v) -> tuple[int, ...]:
    """The shape of a jaxpr variable, scoped (``(scope, var)``) or not; ``()`` for a token."""
    return tuple(getattr(_var(v).aval, "shape", ()))


def _is_var(v) -> bool:
    return not isinstance(_var(v), jcore.Literal)


def _scoped(scope: tuple, variables) -> list:
    """Variables of one call of a computation as ``(scope, var)``: a computation that several
    call sites share (a cached ``jit`` body) has the same variables at every site, so its
    axes are told apart by the chain of call equations that reached them."""
    return [(scope, v) if _is_var(v) else v for v in variables]


def size(node) -> int:
    """The length of the axis ``node = (var, axis)``."""
    return shape(node[0])[node[1]]


@dataclasses.dataclass(frozen=True)
class Split:
    """An axis made of sub-axes, each a group of its own: ``kind="factors"`` (row-major
    sub-axes of a reshape: a Kronecker product) or ``"segments"`` (consecutive blocks of a
    concatenation: a direct sum)."""

    kind: str
    parts: tuple


class Part:
    """An array that exists only as a view (a grouped convolution's channels as ``groups ×
    channels``, a piece of a sliced axis, one layer of stacked weights): its axes are nodes
    like any array's, compared by identity."""

    def __init__(self, shape: tuple[int, ...], name: str = ""):
        self.aval = _Aval(tuple(shape))
        self.name = name

    def __repr__(self) -> str:
        return f"Part{self.aval.shape}{self.name}"


@dataclasses.dataclass(frozen=True)
class _Aval:
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Parts:
    """How a split axis is made (:meth:`Groups.layout`): ``kind`` as :class:`Split`, and each
    part's layout (a group's root, or :class:`Parts` again)."""

    kind: str
    parts: tuple

    @property
    def size(self) -> int:
        sizes = [p.size if isinstance(p, Parts) else size(p) for p in self.parts]
        return math.prod(sizes) if self.kind == "factors" else sum(sizes)


class Groups:
    """Union-find over array axes ``(var, axis)``.

    Besides the partition it keeps which groups are fixed (and the unsupported op that fixed
    them, ``None`` for a structural reason: an input, output or spatial axis), which groups
    are made of sub-axis groups (:class:`Split`), the variables that depend on the data, and
    the activation sites.
    """

    def __init__(self):
        self.parent: dict[Hashable, Hashable] = {}
        self.fixed: dict[Hashable, str | None] = {}
        self.splits: dict[Hashable, Split] = {}
        self.data: set = set()
        self.sites: list = []
        #: axes of residual additions (:func:`_mark_residual`).
        self.residual: list = []
        #: the equation that produced each variable: (primitive name, params, ins).
        self.producer: dict[Hashable, tuple] = {}
        #: reshapes that regroup axes in an unsupported way: (input axes, output axes).
        self.regroupings: list[tuple[list, list]] = []
        #: sliced axis → its slices ``(start, limit, result axis)`` (:meth:`cut_slices`).
        self.slices: dict[Hashable, list[tuple[int, int, Any]]] = {}
        #: variable → the weight (a leaf, or one layer of one) it is, through calls and scans.
        self.weight_of: dict[Hashable, Any] = {}
        #: weight scanned over → one :class:`Part` per layer (:func:`_visit_scan`).
        self.layers: dict[Any, list] = {}

    def find(self, node):
        parent = self.parent.setdefault(node, node)
        if parent != node:
            parent = self.parent[node] = self.find(parent)
        return parent

    def join(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[ra] = rb
        if ra in self.splits:
            self.split(rb, self.splits.pop(ra))

    def split(self, node, split: Split) -> None:
        """Declares ``node``'s axis made of ``split``; two different splits of one group fix
        it (an unsupported regrouping)."""
        root = self.find(node)
        old = self.splits.get(root)
        if old is None:
            self.splits[root] = split
        elif old.kind == split.kind and [size(p) for p in old.parts] == [
            size(p) for p in split.parts
        ]:
            for p, q in zip(old.parts, split.parts):
                self.join(p, q)
        elif old != split:
            sizes = lambda s: "×".join(map(str, (size(p) for p in s.parts)))  # noqa: E731
            self.fix(root, f"axis of {size(root)} split as {sizes(old)} and as {sizes(split)}")

    def cut_slices(self) -> None:
        """Every sliced axis as segments between all the bounds of its slices, and each
        slice as the segments it covers: fused projections sliced into q, k and v (or a
        gated MLP's halves) get one permutation per piece, a class token taken from the
        token axis leaves the other tokens as they are."""
        for node, pieces in self.slices.items():
            cuts = sorted({0, size(node), *(b for s, e, _ in pieces for b in (s, e))})
            atoms = {(s, e): None for s, e in zip(cuts, cuts[1:])}
            for start, limit, result in pieces:
                if (start, limit) in atoms and atoms[(start, limit)] is None:
                    atoms[(start, limit)] = result
            for span in atoms:
                if atoms[span] is None:
                    atoms[span] = (Part((span[1] - span[0],)), 0)
            self.split(node, Split("segments", tuple(atoms.values())))
            for start, limit, result in pieces:
                covered = tuple(n for (s, e), n in atoms.items() if start <= s and e <= limit)
                if len(covered) == 1:
                    self.join(result, covered[0])
                else:
                    self.split(result, Split("segments", covered))
        self.slices = {}

    def fix(self, node, reason: str | None = None) -> None:
        """Marks ``node`` as not permutable; ``reason`` names an unsupported op (``None``: a
        structural reason, which takes precedence)."""
        if reason is None:
            self.fixed[node] = None
        else:
            self.fixed.setdefault(node, reason)

    def layout(self, node):
        """How ``node``'s axis is made: its group's root when it is not split, else
        :class:`Parts` with each part's own layout (a fused q/k/v projection: three
        segments, each heads × head dimensions), as :class:`mmc_jax.permute.Blocks` nests."""
        root = self.find(node)
        split = self.splits.get(root)
        if split is None:
            return root
        return Parts(split.kind, tuple(self.layout(part) for part in split.parts))

    @staticmethod
    def leaves(layout, steps: tuple = ()) -> list[tuple[Any, tuple]]:
        """The groups of a :meth:`layout` with the steps that reach each (as
        :func:`mmc_jax.permute.spec.part_paths`), in order."""
        if not isinstance(layout, Parts):
            return [(layout, steps)]
        sizes = tuple(p.size if isinstance(p, Parts) else size(p) for p in layout.parts)
        return [
            found
            for k, part in enumerate(layout.parts)
            for found in Groups.leaves(part, (*steps, (layout.kind, sizes, k)))
        ]

    def settle(self) -> dict[Hashable, str | None | list]:
        """The fixed groups once fixing has spread: a fixed axis fixes its sub-axes, and an
        unsupported regrouping whose input axes all reach an input gives axes that reach the
        input too (structural). Returns root → ``None`` (structural) or the reasons."""
        changed = True
        while changed:
            changed = False
            status = self._status()
            for root, reasons in status.items():
                for part in self.splits[root].parts if root in self.splits else ():
                    if self.find(part) not in status or (
                        reasons is None and status[self.find(part)]
                    ):
                        for reason in reasons or [None]:
                            self.fix(part, reason)
                        changed = True
            for ins, outs in self.regroupings:
                if all(status.get(self.find(n), ()) is None for n in ins):
                    for node in outs:
                        if status.get(self.find(node), ()) is not None:
                            self.fix(node)
                            changed = True
        return self._status()

    def _status(self) -> dict:
        status: dict[Hashable, Any] = {}
        for node, reason in self.fixed.items():
            root = self.find(node)
            if reason is None:
                status[root] = None
            elif status.get(root, []) is not None:
                reasons = status.setdefault(root, [])
                if reason not in reasons:
                    reasons.append(reason)
        return status


def _join_axes(groups: Groups, a, i: int, b, j: int) -> None:
    """Joins axis i of a with axis j of b when both are arrays of one size above 1."""
    if _is_var(a) and _is_var(b):
        if shape(a)[i] == shape(b)[j] and shape(a)[i] > 1:
            groups.join((a, i), (b, j))


def _fix_all(groups: Groups, variables: Iterable, reason: str | None = None) -> None:
    for v in variables:
        if _is_var(v):
            for axis in range(len(shape(v))):
                groups.fix((v, axis), reason)


def _reshape_blocks(in_shape, out_shape) -> list[tuple[list[int], list[int]]]:
    """The reshape's blocks: (input axes, output axes) whose sizes multiply to the same number,
    smallest first, ignoring axes of size 1."""
    ins = [i for i, d in enumerate(in_shape) if d != 1]
    outs = [o for o, d in enumerate(out_shape) if d != 1]
    blocks = []
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
        blocks.append((block_in, block_out))
    return blocks


def describe(eqn) -> str:
    shapes = ", ".join(str(shape(v)) for v in eqn.invars if _is_var(v))
    return f"{eqn.primitive.name}({shapes})"


def _call_body(eqn):
    """``(jaxpr, consts)`` of a call equation's body, or None for any other equation."""
    param = CALLS.get(eqn.primitive.name)
    if param is None or param not in eqn.params:
        return None
    body = eqn.params[param]
    return getattr(body, "jaxpr", body), list(getattr(body, "consts", ()))


def _visit(jaxpr, groups: Groups, scope: tuple = ()) -> None:
    """Applies the rule of every equation of ``jaxpr`` (:data:`RULES`; an op without one
    fixes the axes it touches) and visits the bodies of calls in place; the variables of
    ``jaxpr`` are told apart from other calls of it by ``scope``."""
    for index, eqn in enumerate(jaxpr.eqns):
        ins, outs = _scoped(scope, eqn.invars), _scoped(scope, eqn.outvars)
        if any(_is_var(v) and v in groups.data for v in ins):
            groups.data.update(outs)
        for v in outs:
            groups.producer[v] = (eqn.primitive.name, eqn.params, ins)
        call = _call_body(eqn)
        if call is not None:
            _visit_call(call[0], ins, outs, groups, (*scope, index))
        elif eqn.primitive.name == "scan":
            _visit_scan(eqn, ins, outs, groups, (*scope, index))
        else:
            RULES.get(eqn.primitive.name, _unsupported)(eqn, ins, outs, groups)


def _enter(groups: Groups, outer, inner) -> None:
    """``inner`` (a body's input) receives ``outer``: their axes join; it depends on the
    data, and is a weight, when ``outer`` is."""
    if _is_var(outer):
        if outer in groups.data:
            groups.data.add(inner)
        if outer in groups.weight_of:
            groups.weight_of[inner] = groups.weight_of[outer]
    for axis in range(len(shape(inner))):
        _join_axes(groups, outer, axis, inner, axis)


def _visit_scan(eqn, ins, outs, groups: Groups, scope: tuple) -> None:
    """A ``scan`` (``nn.scan``, ``nnx.scan``, ``lax.scan``), visited as its unrolled loop:
    one scope per iteration, the carry flowing from each into the next. A weight scanned
    over (layers stacked on axis 0) is one :class:`Part` per layer, so every layer gets
    permutations of its own, as its unrolled twin would; any other scanned array (a
    sequence) is the same array at every step, so its slices share their permutations."""
    body, params = eqn.params["jaxpr"], eqn.params
    n_consts, n_carry, length = params["num_consts"], params["num_carry"], params["length"]
    split = n_consts + n_carry
    consts, carry, xs = ins[:n_consts], ins[n_consts:split], ins[split:]
    for x in xs:
        if _is_var(x) and x not in groups.weight_of:
            groups.fix((x, 0))
    for step in range(length):
        layer = length - 1 - step if params["reverse"] else step
        here = (*scope, step)
        _fix_all(groups, _scoped(here, body.jaxpr.constvars))
        inner = _scoped(here, body.jaxpr.invars)
        for outer, var in zip([*consts, *carry], inner):
            _enter(groups, outer, var)
        for x, var in zip(xs, inner[split:]):
            _enter(groups, _layer(groups, x, layer), var)
        _visit(body.jaxpr, groups, here)
        results = _scoped(here, body.jaxpr.outvars)
        carry = results[:n_carry]
        for y, var in zip(outs[n_carry:], results[n_carry:]):
            groups.fix((y, 0))
            for axis in range(len(shape(var))):
                _join_axes(groups, var, axis, y, axis + 1)
    for var, out in zip(carry, outs[:n_carry]):
        for axis in range(len(shape(out))):
            _join_axes(groups, var, axis, out, axis)


def _layer(groups: Groups, x, layer: int):
    """Slice ``layer`` of a scanned array: a weight's :class:`Part` of that layer, or a view
    of ``x`` whose axes are ``x``'s axes after the first."""
    weight = groups.weight_of.get(x) if _is_var(x) else None
    if weight is None:
        part = Part(shape(x)[1:])
        if _is_var(x):
            for axis in range(len(shape(part))):
                _join_axes(groups, part, axis, x, axis + 1)
            if x in groups.data:
                groups.data.add(part)
        return part
    layers = groups.layers.setdefault(weight, [])
    while len(layers) <= layer:
        layers.append(Part(shape(x)[1:], f"[{len(layers)}]"))
        groups.weight_of[layers[-1]] = layers[-1]
    return layers[layer]


def _visit_call(inner, ins, outs, groups: Groups, scope: tuple) -> None:
    """A call of computation ``inner``: its inputs join the call's last operands and its
    outputs the call's results, axis by axis, and its body is visited under ``scope``."""
    _fix_all(groups, _scoped(scope, inner.constvars))
    inner_ins = _scoped(scope, inner.invars)
    for outer, inner_var in zip(ins[len(ins) - len(inner_ins) :], inner_ins):
        _enter(groups, outer, inner_var)
    _visit(inner, groups, scope)
    for inner_var, outer in zip(_scoped(scope, inner.outvars), outs):
        for axis in range(len(shape(outer))):
            _join_axes(groups, inner_var, axis, outer, axis)


# The rules: ``rule(eqn, ins, outs, groups)`` joins (or fixes) the axes of one equation;
# ``ins`` and ``outs`` are its operands and results as scoped variables.


def _elementwise(eqn, ins, outs, groups: Groups) -> None:
    """Every axis of an operand of the output's rank joins the output's (scalars and
    literals only broadcast)."""
    (out,) = outs
    for v in ins:
        if _is_var(v) and len(shape(v)) == len(shape(out)):
            for axis in range(len(shape(out))):
                _join_axes(groups, v, axis, out, axis)


def _add(eqn, ins, outs, groups: Groups) -> None:
    """Elementwise, after noting a residual addition (:func:`_mark_residual`), which needs
    the operands' groups before they join."""
    _mark_residual(ins, groups)
    _elementwise(eqn, ins, outs, groups)


def _mark_residual(ins, groups: Groups) -> None:
    """An addition of two data-dependent arrays whose axes are not yet in one group joins two
    computations into a residual stream (``x + f(x)``); unlike ``x + 0.04 * x ** 3`` inside
    GELU, whose operands are already one group."""
    if len(ins) == 2 and all(_is_var(v) and v in groups.data for v in ins):
        a, b = ins
        if shape(a) == shape(b):
            groups.residual += [
                (a, axis)
                for axis in range(len(shape(a)))
                if groups.find((a, axis)) != groups.find((b, axis))
            ]


def _broadcast_in_dim(eqn, ins, outs, groups: Groups) -> None:
    for j, axis in enumerate(eqn.params["broadcast_dimensions"]):
        _join_axes(groups, ins[0], j, outs[0], axis)


def _kept(x, dropped) -> list[int]:
    """The axes of ``x`` not in ``dropped``: their places in the result, in order."""
    return [a for a in range(len(shape(x))) if a not in dropped]


def _squeeze(eqn, ins, outs, groups: Groups) -> None:
    for o, i in enumerate(_kept(ins[0], eqn.params["dimensions"])):
        _join_axes(groups, ins[0], i, outs[0], o)


def _reduction(eqn, ins, outs, groups: Groups) -> None:
    """The axes not reduced over keep their order in the result."""
    for o, i in enumerate(_kept(ins[0], eqn.params["axes"])):
        _join_axes(groups, ins[0], i, outs[0], o)


def _transpose(eqn, ins, outs, groups: Groups) -> None:
    for o, i in enumerate(eqn.params["permutation"]):
        _join_axes(groups, ins[0], i, outs[0], o)


def _reshape(eqn, ins, outs, groups: Groups) -> None:
    """Per block of :func:`_reshape_blocks`: an axis kept whole joins its new place, an axis
    split into several or several merged into one is made of factors, anything else is an
    unsupported regrouping."""
    x, out = ins[0], outs[0]
    for block_in, block_out in _reshape_blocks(shape(x), shape(out)):
        if len(block_in) == len(block_out) == 1:
            _join_axes(groups, x, block_in[0], out, block_out[0])
        elif len(block_in) == 1:
            groups.split((x, block_in[0]), Split("factors", tuple((out, o) for o in block_out)))
        elif len(block_out) == 1:
            groups.split((out, block_out[0]), Split("factors", tuple((x, i) for i in block_in)))
        else:
            reason = f"reshape {shape(x)} -> {shape(out)}"
            nodes_in, nodes_out = [(x, a) for a in block_in], [(out, a) for a in block_out]
            for node in nodes_in + nodes_out:
                groups.fix(node, reason)
            groups.regroupings.append((nodes_in, nodes_out))


def _concatenate(eqn, ins, outs, groups: Groups) -> None:
    """Axes other than ``dimension`` join the result's; the result's ``dimension`` is made of
    one segment per operand."""
    out, dimension = outs[0], eqn.params["dimension"]
    for axis in range(len(shape(out))):
        if axis != dimension:
            for v in ins:
                _join_axes(groups, v, axis, out, axis)
    parts = []
    for v in ins:
        if not _is_var(v):  # a literal block: never permuted
            groups.fix((out, dimension), f"concatenate with a constant {shape(v)}")
            return
        parts.append((v, dimension))
    groups.split((out, dimension), Split("segments", tuple(parts)))


def _split_op(eqn, ins, outs, groups: Groups) -> None:
    """``split`` (``jnp.split`` of a fused projection): axes other than ``axis`` join the
    pieces'; the operand's ``axis`` is made of one segment per piece."""
    x, axis = ins[0], eqn.params["axis"]
    for out in outs:
        for a in range(len(shape(x))):
            if a != axis:
                _join_axes(groups, x, a, out, a)
    groups.split((x, axis), Split("segments", tuple((out, axis) for out in outs)))


def _slice(eqn, ins, outs, groups: Groups) -> None:
    """A static ``slice``: axes taken whole join the result's; an axis taken in part (stride
    1) is noted, and once the whole computation is seen, every sliced axis is cut into the
    pieces between all its slices' bounds (:meth:`Groups.cut_slices`)."""
    x, out = ins[0], outs[0]
    strides = eqn.params["strides"] or (1,) * len(shape(x))
    bounds = zip(eqn.params["start_indices"], eqn.params["limit_indices"], strides)
    for axis, (start, limit, stride) in enumerate(bounds):
        if (start, limit, stride) == (0, shape(x)[axis], 1):
            _join_axes(groups, x, axis, out, axis)
        elif stride == 1:
            groups.slices.setdefault((x, axis), []).append((start, limit, (out, axis)))
        else:
            reason = f"strided slice {describe(eqn)}"
            groups.fix((x, axis), reason)
            groups.fix((out, axis), reason)


def _gather(eqn, ins, outs, groups: Groups) -> None:
    """``gather`` (an embedding lookup, ``jnp.take``): an operand axis taken whole (a table's
    feature axis) joins its place in the result; indexed axes (the table's tokens) are fixed,
    as positions of the data; the indices' batch axes join the result's others."""
    operand, indices = ins
    (out,) = outs
    numbers, slice_sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    if numbers.operand_batching_dims:
        _unsupported(eqn, ins, outs, groups)
        return
    kept = [d for d in range(len(shape(operand))) if d not in numbers.collapsed_slice_dims]
    for d in numbers.collapsed_slice_dims:
        groups.fix((operand, d))
    for d, o in zip(kept, numbers.offset_dims):
        if d in numbers.start_index_map or slice_sizes[d] != shape(operand)[d]:
            groups.fix((operand, d))
            groups.fix((out, o))
        else:
            _join_axes(groups, operand, d, out, o)
    others = [o for o in range(len(shape(out))) if o not in numbers.offset_dims]
    for d, o in zip(range(len(shape(indices)) - 1), others):
        _join_axes(groups, indices, d, out, o)


def _window(eqn, ins, outs, groups: Groups) -> None:
    """Pooling: axes with a trivial window keep their place; windowed axes are fixed."""
    params = eqn.params
    x, out = ins[0], outs[0]
    strides = params.get("window_strides", (1,) * len(shape(x)))
    padding = params.get("padding", ((0, 0),) * len(shape(x)))
    for axis, (width, stride, pad) in enumerate(zip(params["window_dimensions"], strides, padding)):
        if width == 1 and stride == 1 and tuple(pad) == (0, 0):
            _join_axes(groups, x, axis, out, axis)
        else:
            groups.fix((x, axis))
            groups.fix((out, axis))


def _site(groups: Groups, v, axis: int) -> None:
    """Records axis ``axis`` of ``v`` as an activation site when ``v`` depends on the data."""
    if _is_var(v) and v in groups.data and shape(v)[axis] > 1:
        groups.sites.append((v, axis))


def _dot_general(eqn, ins, outs, groups: Groups) -> None:
    lhs, rhs = ins
    (out,) = outs
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    for i, j in zip(lc, rc):
        _join_axes(groups, lhs, i, rhs, j)
        _site(groups, lhs, i)
        _site(groups, rhs, j)
    for k, (i, j) in enumerate(zip(lb, rb)):
        _join_axes(groups, lhs, i, out, k)
        _join_axes(groups, rhs, j, out, k)
    lhs_free = [d for d in range(len(shape(lhs))) if d not in (*lc, *lb)]
    rhs_free = [d for d in range(len(shape(rhs))) if d not in (*rc, *rb)]
    for k, d in enumerate(lhs_free):
        _join_axes(groups, lhs, d, out, len(lb) + k)
    for k, d in enumerate(rhs_free):
        _join_axes(groups, rhs, d, out, len(lb) + len(lhs_free) + k)


def _conv(eqn, ins, outs, groups: Groups) -> None:
    lhs, rhs = ins
    (out,) = outs
    numbers = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    for v, spec in ((lhs, lhs_spec), (rhs, rhs_spec), (out, out_spec)):
        for axis in spec[2:]:  # spatial axes
            groups.fix((v, axis))
    _join_axes(groups, lhs, lhs_spec[0], out, out_spec[0])
    if eqn.params["batch_group_count"] != 1:
        reason = f"batch-grouped convolution {describe(eqn)}"
        for v, axes in ((lhs, lhs_spec[1:2]), (rhs, rhs_spec[:2]), (out, out_spec[1:2])):
            for axis in axes:
                groups.fix((v, axis), reason)
        return
    _join_axes(groups, rhs, rhs_spec[0], out, out_spec[1])
    count = eqn.params["feature_group_count"]
    if count == 1:
        _join_axes(groups, lhs, lhs_spec[1], rhs, rhs_spec[1])
    else:
        _feature_groups(groups, (lhs, lhs_spec[1]), (out, out_spec[1]), (rhs, rhs_spec[1]), count)
    _site(groups, lhs, lhs_spec[1])


def _feature_groups(groups: Groups, inputs, outputs, kernel_in, count: int) -> None:
    """A convolution of ``count`` feature groups: input channel ``g · a + i`` reaches output
    channels ``g · b + j`` through kernel input ``i``. So the input axis is ``count × a``
    factors and the output axis ``count × b``: one permutation of the groups moves both, the
    kernel's input axis permutes within every input group alike (a Kronecker product, as
    GroupNorm's), and the outputs within a group permute freely. Depthwise (``a = b = 1``):
    input and output channels share one permutation."""
    a, b = size(inputs) // count, size(outputs) // count
    group_in = _factor(groups, inputs, count, a)
    group_out = _factor(groups, outputs, count, b)
    groups.join(group_in[0], group_out[0])
    if group_in[1] is not None:
        _join_axes(groups, kernel_in[0], kernel_in[1], group_in[1][0], group_in[1][1])


def _factor(groups: Groups, node, outer: int, inner: int) -> tuple:
    """``node``'s axis as ``outer × inner`` factors: the nodes of the two factors (the axis
    itself for a factor when the other is 1; ``None`` for a factor of 1)."""
    if inner == 1:
        return node, None
    part = Part((outer, inner))
    groups.split(node, Split("factors", ((part, 0), (part, 1))))
    return (part, 0), (part, 1)


def _source(eqn, ins, outs, groups: Groups) -> None:
    """A fresh value (constant, random bits): fixed, for no unsupported reason."""
    _fix_all(groups, outs)


def _unsupported(eqn, ins, outs, groups: Groups) -> None:
    """An op no rule covers: nothing it touches may be permuted, and it is reported."""
    _fix_all(groups, [*ins, *outs], describe(eqn))


#: Primitive name → its rule; calls (:data:`CALLS`) are visited in place, any other
#: primitive is :func:`_unsupported`.
RULES: dict[str, Callable] = {
    **dict.fromkeys(ELEMENTWISE, _elementwise),
    "add": _add,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "concatenate": _concatenate,
    "split": _split_op,
    "slice": _slice,
    "gather": _gather,
    "squeeze": _squeeze,
    "transpose": _transpose,
    **dict.fromkeys(REDUCTIONS, _reduction),
    **dict.fromkeys(WINDOWS, _window),
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    **dict.fromkeys(SOURCES, _source),
}


#: Ops an activation site is followed back through: they drop positions (pooling, spatial
#: means) or rescale by a constant, never mixing units, so the units before them are the
#: same units seen at more positions.
_POOLING = WINDOWS | {"reduce_sum", "reduce_max", "reduce_min", "convert_element_type"}


def _before_pooling(groups: Groups, node):
    """``node`` followed back through pooling, spatial reductions and division or
    multiplication by a scalar constant."""
    while True:
        v, axis = node
        name, params, ins = groups.producer.get(v, (None, None, None))
        if name in REDUCTIONS and name in _POOLING:
            node = (ins[0], _kept(ins[0], params["axes"])[axis])
        elif name in _POOLING and len(shape(ins[0])) == len(shape(v)):
            node = (ins[0], axis)
        elif (
            name in ("div", "mul")
            and len(ins) == 2
            and any(not _is_var(x) or shape(x) == () for x in ins)
        ):
            node = next((x, axis) for x in ins if _is_var(x) and shape(x) == shape(v))
        else:
            return node
        if not _is_var(node[0]) or node[0] not in groups.data:
            return (v, axis)


@dataclasses.dataclass
class Trace:
    """A traced forward pass: the closed jaxpr, the leaf paths of the variables (in the order
    of the jaxpr's first inputs), their scoped input variables, and the axis groups."""

    closed: Any
    names: list[str]
    weights: list
    groups: Groups
    #: leaf path → the variable of the jaxpr's inputs it is (a layer: its stacked weight's).
    origins: dict = dataclasses.field(default_factory=dict)

    def first_use(self) -> dict[str, int]:
        """Leaf path → rank of the first top-level equation reading it (forward order; the
        layers of a scanned weight in layer order)."""
        names_of: dict[Hashable, list[tuple[int, str]]] = {}
        for rank, (name, weight) in enumerate(zip(self.names, self.weights)):
            names_of.setdefault(self.origins.get(name, weight), []).append((rank, name))
        first: dict[str, tuple] = {}
        for index, eqn in enumerate(self.closed.jaxpr.eqns):
            for v in _scoped((), eqn.invars):
                for rank, name in names_of.get(v, ()) if _is_var(v) else ():
                    first.setdefault(name, (index, rank))
        return {name: i for i, name in enumerate(sorted(first, key=first.get))}

    def weight_node(self, path: str, axis: int):
        """The group of axis ``axis`` of the leaf at ``path``."""
        return self.groups.find((self.weights[self.names.index(path)], axis))

    def sites(self) -> dict[Hashable, list[tuple]]:
        """Activation sites per group: root → ``[(index, var, axis, steps)]``: the site's
        place in forward order, the scoped variable, its axis, and the steps to the group's
        part of the axis (:func:`mmc_jax.permute.spec.part_paths`; ``()``: the whole axis).
        Each site once, in forward order."""
        out: dict[Hashable, list] = {}
        seen = set()
        for index, node in enumerate(self.groups.sites):
            v, axis = _before_pooling(self.groups, node)
            if (v, axis) in seen:
                continue
            seen.add((v, axis))
            for leaf, steps in Groups.leaves(self.groups.layout((v, axis))):
                out.setdefault(leaf, []).append((index, v, axis, steps))
        return out


def trace_model(
    apply_fn: Callable, variables: Mapping[str, Any], *example_args, **apply_kwargs
) -> Trace:
    """Traces ``apply_fn(variables, *example_args, **apply_kwargs)`` and groups its axes."""
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    names = [leaf_path(keys) for keys, _ in flat]
    closed = jax.make_jaxpr(lambda v, *args: apply_fn(v, *args, **apply_kwargs))(
        variables, *example_args
    )
    jaxpr = closed.jaxpr
    groups = Groups()
    weights = _scoped((), jaxpr.invars[: len(names)])
    inputs = _scoped((), jaxpr.invars[len(names) :])
    groups.weight_of.update({w: w for w in weights})
    groups.data.update(inputs)
    _fix_all(groups, inputs)
    _fix_all(groups, _scoped((), jaxpr.outvars))
    _fix_all(groups, _scoped((), jaxpr.constvars))
    _visit(jaxpr, groups)
    groups.cut_slices()
    origins = dict(zip(names, weights))
    names, weights = _layered(groups, names, weights)
    origins = {n: origins[n.split("[", 1)[0]] for n in names}
    return Trace(closed, names, weights, groups, origins)


def _layered(groups: Groups, names: list[str], weights: list) -> tuple[list[str], list]:
    """The leaves with every weight scanned over replaced by its layers, ``<path>[<k>]``
    (again for a layer scanned over in a nested scan)."""
    out_names, out_weights = [], []
    for name, weight in zip(names, weights):
        if weight in groups.layers:
            parts = groups.layers[weight]
            inner = _layered(groups, [f"{name}[{k}]" for k in range(len(parts))], parts)
            out_names += inner[0]
            out_weights += inner[1]
        else:
            out_names.append(name)
            out_weights.append(weight)
    return out_names, out_weights


def evaluate(trace: Trace, wanted: Iterable) -> Callable:
    """A function ``(variables, *args) → [array of each wanted scoped variable]`` that runs the
    traced computation on other variables and inputs of the same shapes (jit it)."""
    wanted = list(wanted)
    scopes = {v[0][:k] for v in wanted for k in range(len(v[0]) + 1)}

    def run(variables, *args):
        captured: dict = {}
        flat = jax.tree_util.tree_leaves((variables, args))
        _evaluate(trace.closed.jaxpr, trace.closed.consts, flat, (), scopes, captured)
        return [captured[v] for v in wanted]

    return run


def _evaluate(jaxpr, consts, args, scope: tuple, scopes: set, captured: dict) -> list:
    """``jax.core.eval_jaxpr`` that also records every variable of ``jaxpr`` (and of the calls
    whose scope leads to a wanted one) under its scoped name."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def write(v, x):
        if not isinstance(v, jcore.DropVar):
            env[v] = x
            captured[(scope, v)] = x

    for v, x in zip(jaxpr.constvars, consts):
        write(v, x)
    for v, x in zip(jaxpr.invars, args):
        write(v, x)
    for index, eqn in enumerate(jaxpr.eqns):
        values = [read(v) for v in eqn.invars]
        call = _call_body(eqn)
        if call is not None and (*scope, index) in scopes:
            inner, inner_consts = call
            outs = _evaluate(
                inner,
                inner_consts,
                values[len(values) - len(inner.invars) :],
                (*scope, index),
                scopes,
                captured,
            )
        elif eqn.primitive.name == "scan" and (*scope, index) in scopes:
            outs = _evaluate_scan(eqn.params, values, (*scope, index), scopes, captured)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            write(v, x)
    return [read(v) for v in jaxpr.outvars]


def _evaluate_scan(params, values, scope: tuple, scopes: set, captured: dict) -> list:
    """A ``scan`` run as its unrolled loop, recording each iteration under its scope (as
    :func:`_visit_scan` names them)."""
    body, length = params["jaxpr"], params["length"]
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    consts, carry = values[:n_consts], values[n_consts : n_consts + n_carry]
    xs, ys = values[n_consts + n_carry :], [None] * length
    for step in range(length):
        layer = length - 1 - step if params["reverse"] else step
        args = [*consts, *carry, *(x[layer] for x in xs)]
        results = _evaluate(body.jaxpr, body.consts, args, (*scope, step), scopes, captured)
        carry, ys[layer] = results[:n_carry], results[n_carry:]
    stacked = [jax.numpy.stack([y[i] for y in ys]) for i in range(len(ys[0]))] if length else []
    return [*carry, *stacked]
