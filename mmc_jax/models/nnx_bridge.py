"""Flax NNX models wherever the library takes a Linen model's ``(apply_fn, variables)``.

The library is written against Linen's functional convention: a model is an ``apply_fn``
(``module.apply``) and ``variables``, pure nested dicts ``{"params", "batch_stats"}`` that
``jax.jit``, ``jax.grad``, ``jax.vmap``, orbax checkpoints, the paths between models and the
permutation tools (``flatten_dict(sep="/")`` leaf paths) all read. An NNX module holds its
state inside itself instead, and ``nnx.split`` gives an ``nnx.State``, not such dicts. This
module bridges the two without changing either side:

* :class:`NNXModel` behaves like a Linen module for the library: ``init`` builds the NNX
  module from a factory and returns its variables as pure dicts; ``apply`` merges variables
  into the module, sets train or eval mode, calls it and returns what Linen's ``apply``
  would. ``models.create`` returns one for a ``"pkg.mod:factory"`` whose factory takes
  ``(num_classes, *, rngs)``.
* :func:`from_module` turns a module a user holds into ``(apply_fn, variables)``;
  :func:`to_module` turns them back into a module.
* :func:`accepts_nnx` lets a public function taking ``(apply_fn, variables, ...)`` be called
  with an ``nnx.Module`` in their place.

Variables: ``nnx.Param`` → ``"params"``, ``nnx.BatchStat`` → ``"batch_stats"`` (``{}`` for a
model without BatchNorm), keyed by the module's attribute paths, so ``self.conv1 =
nnx.Conv(...)`` holds ``params/conv1/kernel`` and permutations derived from a traced pass are
named after it (``P_conv1``). NNX keys list items by integers (``self.blocks =
nnx.List([...])`` holds ``blocks/0/...``); here they are strings (``"0"``), which
``flatten_dict(sep="/")`` and orbax need, and are turned back into integers when merged.
Random streams (``nnx.Rngs`` kept by ``nnx.Dropout``) are not variables: ``apply`` seeds them
from its ``rngs`` argument, one key for every stream or ``{tag: key}`` by the stream's tag
(``"dropout"``, or ``"default"`` for a module built with ``nnx.Rngs(key)``), as Linen's
``rngs={"dropout": key}``; a pass that draws from a stream no key was given for raises, as
Linen's Dropout does without its PRNG key. Any other kind of ``nnx.Variable`` is refused.

>>> model = models.create("examples.my_nnx_model:make_model", num_classes=10)
>>> variables = models.init(model, jax.random.key(0), (32, 32, 3))
>>> logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
>>> apply_fn, variables = from_module(my_module)        # a module built by hand
>>> metrics.evaluate(my_module, test_set, key)          # the same as with (apply_fn, variables)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

from mmc_jax.runtime.errors import InputError

#: The collections of the variables and the NNX variable types they hold.
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}
#: The train/eval attributes ``apply`` sets on every submodule that has them
#: (``nnx.Module.train`` and ``eval`` set the same): Dropout's and BatchNorm's.
MODE_ATTRIBUTES = ("deterministic", "use_running_average")


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One variable of an NNX module: its NNX path, its key path in the variables (strings),
    its kind (a collection, ``"rng_key"`` or ``"rng_count"``), shape, dtype and stream tag."""

    path: tuple
    names: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]
    dtype: Any
    tag: Optional[str]


def _kind(variable: nnx.Variable) -> Optional[str]:
    """The collection or random-stream part a variable belongs to; None: refused."""
    for collection, cls in COLLECTIONS.items():
        if isinstance(variable, cls):
            return collection
    if isinstance(variable, nnx.RngKey):
        return "rng_key"
    if isinstance(variable, nnx.RngCount):
        return "rng_count"
    return None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where an NNX module's state lives: its graph definition (the static structure,
    computed once per model) and every variable's place (:class:`_Leaf`); whether its
    ``__call__`` takes a ``train`` argument."""

    graphdef: Any
    leaves: tuple[_Leaf, ...]
    takes_train: bool = False

    @classmethod
    def of(cls, module: nnx.Module, source: str) -> "_Layout":
        """The layout of ``module`` (abstract or concrete); ``source`` names it in errors."""
        graphdef, state = nnx.split(module)
        leaves, seen = [], {}
        for path, variable in nnx.to_flat_state(state):
            kind = _kind(variable)
            names = tuple(str(k) for k in path)
            if kind is None:
                raise InputError(
                    f"{source}: {'/'.join(names)} is an nnx.{type(variable).__name__}; an NNX "
                    "model here holds nnx.Param and nnx.BatchStat variables (and random streams)"
                )
            if seen.setdefault(names, path) != path:
                raise InputError(f"{source}: two variables at {'/'.join(names)}")
            value = variable.get_value()
            tag = getattr(variable, "tag", None)
            leaves.append(_Leaf(path, names, kind, tuple(value.shape), value.dtype, tag))
        call = inspect.signature(type(module).__call__).parameters
        return cls(graphdef, tuple(leaves), "train" in call)

    def collections(self) -> tuple[str, ...]:
        """The collections that hold at least one variable."""
        return tuple(c for c in COLLECTIONS if any(leaf.kind == c for leaf in self.leaves))

    def check(self, variables: Mapping) -> None:
        """Raises InputError unless ``variables`` has exactly this model's params and
        batch_stats (by key path)."""
        want = {(leaf.kind, *leaf.names) for leaf in self.leaves if leaf.kind in COLLECTIONS}
        have = {
            (collection, *names)
            for collection in COLLECTIONS
            for names in traverse_util.flatten_dict(dict(variables.get(collection) or {}))
        }
        missing, extra = sorted(want - have), sorted(have - want)
        if missing or extra:
            raise InputError(
                "variables do not fit the NNX model: "
                + "; ".join(
                    ([f"missing {', '.join('/'.join(p) for p in missing[:3])}"] if missing else [])
                    + ([f"unexpected {', '.join('/'.join(p) for p in extra[:3])}"] if extra else [])
                )
            )

    def merge(self, variables: Mapping, rngs=None) -> tuple[nnx.Module, frozenset]:
        """The module holding ``variables``, its random streams seeded from ``rngs``
        (:func:`_stream_keys`); also the paths of the counts of the streams left unseeded
        (holding a placeholder key)."""
        self.check(variables)
        keys = _stream_keys(rngs, [leaf for leaf in self.leaves if leaf.kind == "rng_key"])
        flat, unseeded = [], set()
        for leaf in self.leaves:
            if leaf.kind in COLLECTIONS:
                value = variables[leaf.kind]
                for name in leaf.names:
                    value = value[name]
            elif leaf.kind == "rng_key":
                value = keys.get(leaf.path)
                value = _placeholder_key(leaf.shape) if value is None else value
            else:
                value = jnp.zeros(leaf.shape, leaf.dtype)
                if (*leaf.path[:-1], "key") not in keys:
                    unseeded.add(leaf.path)
            flat.append((leaf.path, value))
        return nnx.merge(self.graphdef, nnx.from_flat_state(flat)), frozenset(unseeded)

    @staticmethod
    def values(module: nnx.Module) -> dict:
        """``{path: value}`` of every variable ``module`` holds now."""
        return {path: v.get_value() for path, v in nnx.to_flat_state(nnx.state(module))}

    def changed(self, before: dict, after: dict, kind: str) -> list[_Leaf]:
        """The leaves of ``kind`` whose value is another between two :meth:`values`: what a
        call replaced (traced values compare by identity too)."""
        return [
            leaf
            for leaf in self.leaves
            if leaf.kind == kind and after[leaf.path] is not before[leaf.path]
        ]

    def collect(self, module: nnx.Module, collections) -> dict:
        """Pure nested dicts (string keys) of ``collections`` as ``module`` holds them now."""
        values = self.values(module)
        out = {}
        for collection in collections:
            flat = {
                leaf.names: values[leaf.path] for leaf in self.leaves if leaf.kind == collection
            }
            out[collection] = traverse_util.unflatten_dict(flat)
        return out


def _placeholder_key(shape: tuple[int, ...]) -> jax.Array:
    """A fixed key for a random stream ``apply`` was given none for (it must stay unused)."""
    key = jax.random.key(0)
    return jax.random.split(key, shape) if shape else key


def _typed_key(key) -> jax.Array:
    """A new-style typed key from either kind of PRNG key."""
    key = jnp.asarray(key)
    return key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)


def _stream_keys(rngs, leaves: list[_Leaf]) -> dict:
    """``{path of a stream's key: key}`` for the streams ``rngs`` seeds: one key (every
    stream) or ``{stream tag: key}`` (those streams); each stream gets a different key."""
    if rngs is None:
        return {}
    if not isinstance(rngs, Mapping):
        rngs = {leaf.tag: rngs for leaf in leaves}
    out = {}
    for i, leaf in enumerate(leaves):
        if rngs.get(leaf.tag) is None:
            continue
        key = jax.random.fold_in(_typed_key(rngs[leaf.tag]), i)
        out[leaf.path] = jax.random.split(key, leaf.shape) if leaf.shape else key
    return out


def _mutable_collections(mutable) -> tuple[str, ...]:
    """The collections Linen's ``mutable`` argument asks for (False, True, a name or names)."""
    if mutable is True:
        return tuple(COLLECTIONS)
    if not mutable:
        return ()
    names = (mutable,) if isinstance(mutable, str) else tuple(mutable)
    return tuple(c for c in COLLECTIONS if c in names)


def _describe(factory: Callable) -> str:
    """``module:qualname`` of a factory, as a model name spells it (a module's class name for
    :func:`from_module`'s)."""
    if isinstance(factory, _Snapshot):
        return factory.name
    name = getattr(factory, "__qualname__", None) or type(factory).__name__
    return f"{getattr(factory, '__module__', '?')}:{name}"


@dataclasses.dataclass(frozen=True)
class NNXModel:
    """An NNX model as a Linen module for the library: hashable, with ``init`` and ``apply``.

    Args:
      factory: builds the module, called as ``factory(*args, rngs=nnx.Rngs(key))``; a
        function or an ``nnx.Module`` class (``models.create`` passes
        ``make_model``, ``(num_classes,)``).
      args: its positional arguments.

    Equal factories and arguments give equal models, and equal models equal ``apply``
    functions, so the library's programs jitted with ``apply_fn`` as a static argument are
    compiled once for them. The module's structure (its ``nnx.GraphDef`` and variable
    layout) is computed once per model, abstractly (``nnx.eval_shape``). Calling the model
    is calling its ``apply``, by default in eval mode: what ``permute``'s tools run for a
    model that is not a Linen module.
    """

    factory: Callable[..., nnx.Module]
    args: tuple = ()

    def build(self, rngs: nnx.Rngs) -> nnx.Module:
        """The module, with its parameters drawn from ``rngs``.

        Raises:
          InputError: the factory returned something other than an ``nnx.Module``.
        """
        module = self.factory(*self.args, rngs=rngs)
        if not isinstance(module, nnx.Module):
            raise InputError(
                f"model {_describe(self.factory)!r} returned {type(module).__name__}, "
                "not a Flax NNX module"
            )
        return module

    @functools.cached_property
    def layout(self) -> _Layout:
        """The module's graph definition and variable layout (built abstractly, once)."""
        abstract = nnx.eval_shape(lambda: self.build(nnx.Rngs(0)))
        return _Layout.of(abstract, _describe(self.factory))

    def init(self, key, x=None, *, train: bool = False, **kwargs) -> dict:
        """``{"params", "batch_stats"}`` of a module built with ``rngs=nnx.Rngs(key)``
        (``key``: a PRNG key, or ``{stream: key}`` as ``nnx.Rngs`` takes), as pure nested
        dicts with string keys. ``x``, ``train`` and ``kwargs`` are accepted as Linen's
        ``init`` takes them; NNX modules are built without a forward pass."""
        del x, train, kwargs
        rngs = nnx.Rngs(**key) if isinstance(key, Mapping) else nnx.Rngs(key)
        module = self.build(rngs)
        variables = self.layout.collect(module, tuple(COLLECTIONS))
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}

    @property
    def apply(self) -> "_Apply":
        """The model's apply function, as Linen's ``module.apply``::

            apply(variables, x, *args, train=False, mutable=False, return_features=False,
                  rngs=None, **kwargs)

        merges ``variables`` into the module, sets ``deterministic`` and
        ``use_running_average`` of every submodule that has them to ``not train`` (Dropout
        and BatchNorm; what ``module.train()`` and ``module.eval()`` set), calls
        ``module(x, *args, **kwargs)`` (with ``return_features=True`` when asked, and
        ``train=train`` when its ``__call__`` has a ``train`` parameter) and
        returns its outputs, or, when ``mutable`` is given (``True``, a collection name or a
        list of them), ``(outputs, {collection: values after the pass})`` for those of the
        named collections the model holds: ``mutable=["batch_stats"]`` with ``train=True``
        gives the running statistics the pass updated; as in Linen, a pass that updates them
        without it raises InputError. ``rngs``, a key or ``{stream tag: key}``, seeds the
        module's random streams (Dropout in train mode; drawing from an unseeded one raises
        InputError). Pure: ``jax.jit``, ``jax.grad`` and ``jax.vmap`` apply over
        ``variables``."""
        return _Apply(self)

    def __call__(self, variables, x, *args, **kwargs):
        """``self.apply(variables, x, *args, **kwargs)`` (eval mode unless ``train=True``)."""
        return self.apply(variables, x, *args, **kwargs)

    def _apply(
        self,
        variables,
        x,
        *args,
        train: bool = False,
        mutable=False,
        return_features: bool = False,
        rngs=None,
        **kwargs,
    ):
        """:attr:`apply`'s body."""
        layout = self.layout
        module, unseeded = layout.merge(variables, rngs)
        module.set_attributes(
            **{name: not train for name in MODE_ATTRIBUTES}, raise_if_not_found=False
        )
        if return_features:
            kwargs["return_features"] = True
        if layout.takes_train:
            kwargs["train"] = train
        before = layout.values(module)
        out = module(x, *args, **kwargs)
        after = layout.values(module)
        _check_updates(layout, before, after, unseeded, _mutable_collections(mutable))
        if mutable is False:
            return out
        wanted = [c for c in _mutable_collections(mutable) if c in layout.collections()]
        return out, layout.collect(module, wanted)


def _check_updates(layout: _Layout, before: dict, after: dict, unseeded, mutable) -> None:
    """Raises what Linen raises after a call that changed what it may not: running
    statistics updated while ``batch_stats`` is not mutable (``train=True`` needs
    ``mutable=["batch_stats"]``), or random numbers drawn from a stream ``apply`` was given
    no key for (Linen's Dropout without its PRNG key)."""
    updated = [] if "batch_stats" in mutable else layout.changed(before, after, "batch_stats")
    if updated:
        raise InputError(
            f"the NNX model updated batch_stats/{'/'.join(updated[0].names)}, but batch_stats "
            "is not mutable: a train-mode call takes mutable=['batch_stats'], as in Linen"
        )
    drawn = [leaf for leaf in layout.changed(before, after, "rng_count") if leaf.path in unseeded]
    if drawn:
        raise InputError(
            f"the NNX model draws random numbers from its stream {drawn[0].tag!r} at "
            f"{'/'.join(drawn[0].names[:-1])} (e.g. nnx.Dropout in train mode) without a key: "
            "pass apply(..., rngs=key or {stream: key}), or keep it deterministic (the "
            "library's training steps pass no key, as for Linen's Dropout)"
        )


@dataclasses.dataclass(frozen=True)
class _Apply:
    """:attr:`NNXModel.apply`: a callable equal (and hashing equal) for equal models."""

    model: NNXModel

    def __call__(self, variables, x, *args, **kwargs):
        return self.model._apply(variables, x, *args, **kwargs)


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """A factory that returns a copy of one module (its values as they were taken), for
    :func:`from_module`: equal for modules of the same structure and shapes."""

    graphdef: Any
    shapes: tuple
    name: str = dataclasses.field(compare=False)
    values: tuple = dataclasses.field(compare=False, repr=False)

    @classmethod
    def of(cls, module: nnx.Module) -> "_Snapshot":
        graphdef, state = nnx.split(module)
        values = tuple((path, v.get_value()) for path, v in nnx.to_flat_state(state))
        shapes = tuple((path, tuple(v.shape), v.dtype) for path, v in values)
        return cls(graphdef, shapes, f"a {type(module).__name__} module", values)

    def __call__(self, *, rngs=None) -> nnx.Module:
        del rngs
        return nnx.merge(self.graphdef, nnx.from_flat_state(list(self.values)))


def is_nnx(obj) -> bool:
    """Whether ``obj`` is an ``nnx.Module``, an :class:`NNXModel` or an NNXModel's apply."""
    return isinstance(obj, (nnx.Module, NNXModel, _Apply))


def from_module(module: nnx.Module) -> tuple[_Apply, dict]:
    """``(apply_fn, variables)`` of an NNX module: the library's form of a model.

    ``apply_fn`` is an :class:`NNXModel`'s ``apply`` for the module's structure (equal for
    modules of one structure, so compiled programs are shared); ``variables`` are the
    module's ``{"params", "batch_stats"}`` as pure nested dicts. The module is not changed.
    The model's ``init`` returns these values again (there is no factory to draw new ones).
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"from_module takes an nnx.Module, got {type(module).__name__}")
    model = NNXModel(_Snapshot.of(module))
    variables = model.layout.collect(module, tuple(COLLECTIONS))
    return model.apply, {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def variables_of(model_or_variables) -> Any:
    """The variables of an ``nnx.Module`` (:func:`from_module`), or the argument itself: for
    functions that take variables alone, e.g. weight matching's two models."""
    if isinstance(model_or_variables, nnx.Module):
        return from_module(model_or_variables)[1]
    return model_or_variables


def to_module(apply_fn, variables: Mapping) -> nnx.Module:
    """The NNX module holding ``variables``: the inverse of :func:`from_module`.

    Args:
      apply_fn: an :class:`NNXModel`'s ``apply`` (from :func:`from_module` or
        ``models.create``), the model itself, or an ``nnx.Module`` of the same structure
        (e.g. the one a fine-tuning function was called with).
      variables: ``{"params", "batch_stats"}``, e.g. returned by a fine-tuning function.

    Returns:
      A new module in the mode its structure was taken in (``module.eval()`` or
      ``module.train()`` change it); its random streams hold a fixed key (reseed them with
      ``nnx.reseed`` before drawing).
    """
    if isinstance(apply_fn, nnx.Module):
        apply_fn = from_module(apply_fn)[0]
    model = apply_fn.model if isinstance(apply_fn, _Apply) else apply_fn
    if not isinstance(model, NNXModel):
        raise TypeError(f"to_module takes an NNX model's apply, got {type(apply_fn).__name__}")
    return model.layout.merge(variables)[0]


def accepts_nnx(fn: Optional[Callable] = None, *, also: tuple[str, ...] = ()) -> Callable:
    """Lets ``fn(apply_fn, variables, ...)`` be called as ``fn(module, ...)`` with an
    ``nnx.Module``: the call becomes ``fn(*from_module(module), ...)``.

    Args:
      fn: the function (its first two parameters are the model's ``apply_fn`` and
        ``variables``).
      also: names of further parameters that hold variables of the same model (e.g.
        ``cbft``'s ``anchor``): an ``nnx.Module`` given for one stands for its variables.

    Used as ``@accepts_nnx`` or ``@accepts_nnx(also=("anchor",))``. Any other call passes
    through unchanged; ``functools.wraps`` keeps the name, docstring and signature.
    """
    if fn is None:
        return functools.partial(accepts_nnx, also=also)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if args and isinstance(args[0], nnx.Module):
            args = (*from_module(args[0]), *args[1:])
        if also:
            bound = signature.bind_partial(*args, **kwargs)
            for name in also:
                if isinstance(bound.arguments.get(name), nnx.Module):
                    bound.arguments[name] = from_module(bound.arguments[name])[1]
            args, kwargs = bound.args, bound.kwargs
        return fn(*args, **kwargs)

    return call


def takes_rngs(factory: Callable) -> bool:
    """Whether a model factory takes an ``rngs`` argument, as an NNX factory
    ``(num_classes, *, rngs)`` does (a Linen factory takes ``num_classes`` alone)."""
    try:
        return "rngs" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read: a Linen factory
        return False


__all__ = [
    "COLLECTIONS",
    "MODE_ATTRIBUTES",
    "NNXModel",
    "accepts_nnx",
    "from_module",
    "is_nnx",
    "takes_rngs",
    "to_module",
    "variables_of",
]
