"""Pure training objectives over PyTrees, composable into one loss for any optax optimizer.

Connectivity-based fine-tuning (CBFT; Lubana et al., "Mechanistic Mode Connectivity",
ICML 2023) fine-tunes a model θ, starting from a cue-reliant model θ_C, with three terms:
cross-entropy on clean data, a *barrier* term that asks the straight line from θ to θ_C to
have high loss on cued data (so θ leaves θ_C's mechanism), and an *invariance* term that
asks θ's class-mean features to be the same with and without the cue.

Every objective here has one signature, so that they compose (like optax transformations)::

    objective(params, ctx: Context) -> (loss: scalar, aux: dict)

* ``params`` is what is differentiated; everything else a loss may need — running BatchNorm
  statistics, the clean and the cued batch, the anchor θ_C, a PRNG key — travels in the
  :class:`Context`, a NamedTuple (hence a PyTree: jit it, shard it, ``_replace`` fields).
* ``aux["batch_stats"]`` is always present: the running statistics after the objective's
  train-mode forward passes of θ (unchanged if it runs none), to be stored with the update.
  The other entries are diagnostics (logits, t, ...).
* Factories close over hyperparameters and static choices and return the pure function:

>>> loss_fn = objectives.weighted_sum(
...     ce=objectives.cross_entropy_loss(model.apply),
...     barrier=objectives.barrier_loss(model.apply),
...     invariance=(objectives.invariance_loss(model.apply, num_classes=10), 1.0))
>>> ctx = objectives.Context(batch_stats, clean=objectives.Batch(x, y),
...                          cued=objectives.Batch(x_cue, y_cue), anchor=theta_c_params, key=key)
>>> (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, ctx)

That is the paper's CBFT objective as one loss. The paper's code takes two optimizer steps per
batch instead (first the barrier term, then cross-entropy plus invariance); two objectives
and two updates reproduce it. Composed with :func:`weighted_sum`, cross-entropy and
invariance each run their own clean forward pass (the running statistics see the clean batch
twice); :func:`cross_entropy_invariance_loss` shares one, as the paper's code does, with the
same value and gradient.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmc_jax import paths
from mmc_jax.metrics import cross_entropy, train_forward
from mmc_jax.runtime.errors import InputError

PyTree = Any
T_DISTRIBUTIONS = ("clipped_normal", "truncated_normal", "uniform")
BATCHES = ("clean", "cued")


class Batch(NamedTuple):
    """Model inputs (already normalized, the cue applied where wanted) and integer labels."""

    inputs: jax.Array
    labels: jax.Array


class Context(NamedTuple):
    """Everything an objective reads besides the parameters it is differentiated in.

    Attributes:
      batch_stats: running BatchNorm statistics of θ (``{}`` for a model without BatchNorm).
      clean: the clean (cue-free) batch.
      cued: the batch with the cue.
      anchor: ``params`` of the frozen anchor model θ_C (same structure as ``params``).
      key: PRNG key (typed, or a raw ``uint32[2]`` key like ``TrainState.key``); use a fresh
        one every step. Objectives that need randomness derive it from this key.
    """

    batch_stats: PyTree
    clean: Batch | None = None
    cued: Batch | None = None
    anchor: PyTree | None = None
    key: jax.Array | None = None


Objective = Callable[[PyTree, Context], tuple[jax.Array, dict]]


def _require(ctx: Context, field: str, objective: str):
    value = getattr(ctx, field)
    if value is None:
        raise InputError(f"{objective} needs ctx.{field}")
    return value


def _check_num_classes(num_classes) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")


def _clean_and_cued_features(apply_fn: Callable, params: PyTree, ctx: Context, objective: str):
    """Train-mode passes over the clean, then the cued batch, with features: returns
    ``(clean logits, clean features, cued features, stats after clean, stats after cued)``."""
    clean = _require(ctx, "clean", objective)
    cued = _require(ctx, "cued", objective)
    (logits, z_nc), clean_stats = train_forward(
        apply_fn, params, ctx.batch_stats, clean.inputs, return_features=True
    )
    (_, z_c), cued_stats = train_forward(
        apply_fn, params, clean_stats, cued.inputs, return_features=True
    )
    return logits, z_nc, z_c, clean_stats, cued_stats


def cross_entropy_loss(apply_fn: Callable, batch: str = "clean") -> Objective:
    """Mean cross-entropy of θ in train mode on one batch of the context.

    Args:
      apply_fn: model apply function, ``apply_fn(variables, x, train=..., mutable=...)``.
      batch: ``"clean"`` (CBFT's first term) or ``"cued"`` (ordinary training on cued data).

    Returns:
      An objective with aux ``{"batch_stats", "logits"}``.
    """
    if batch not in BATCHES:
        raise InputError(f"unknown batch {batch!r}; choose from {', '.join(BATCHES)}")

    def objective(params: PyTree, ctx: Context) -> tuple[jax.Array, dict]:
        data = _require(ctx, batch, "cross_entropy_loss")
        logits, batch_stats = train_forward(apply_fn, params, ctx.batch_stats, data.inputs)
        return cross_entropy(logits, data.labels), {"batch_stats": batch_stats, "logits": logits}

    return objective


def sample_t(key: jax.Array, kind: str = "clipped_normal") -> jax.Array:
    """One point ``t`` in [0, 1] on the path for the barrier loss (float32 scalar).

    Args:
      key: PRNG key.
      kind: the distribution (static):

        * ``"clipped_normal"`` — the paper's code: ``0.5 + 0.5 · clip(z, -0.5, 0.5)``,
          ``z ~ N(0, 1)``, so ``t ∈ [0.25, 0.75]`` with P(z > 0.5) ≈ 30.9 % of the mass on
          each end point.
        * ``"truncated_normal"`` — the paper's text: a Gaussian with mean 0.5 truncated to
          [0, 1]. Its σ is 0.5, the scale of the code's Gaussian, so the two differ only in
          truncating versus clipping (standard deviation of t ≈ 0.27).
        * ``"uniform"`` — uniform on [0, 1].
    """
    if kind == "clipped_normal":
        return 0.5 + 0.5 * jnp.clip(jax.random.normal(key, (), jnp.float32), -0.5, 0.5)
    if kind == "truncated_normal":
        return 0.5 + 0.5 * jax.random.truncated_normal(key, -1.0, 1.0, (), jnp.float32)
    if kind == "uniform":
        return jax.random.uniform(key, (), jnp.float32)
    raise InputError(f"unknown t distribution {kind!r}; choose from {', '.join(T_DISTRIBUTIONS)}")


def barrier_loss(
    apply_fn: Callable, target: float = 1.0, t_dist: str = "clipped_normal"
) -> Objective:
    """CBFT's barrier term: the loss on cued data at a random point between θ and θ_C.

    With ``t = sample_t(ctx.key, t_dist)`` and ``θ_t = paths.linear(θ, θ_C)(t) = (1 − t) θ +
    t θ_C`` (parameters only), the loss is ``|target − CE(f(x_cue; θ_t), y_cue)|``: minimizing
    it raises the loss along the line towards ``target``, i.e. builds a barrier between θ and
    the cue-reliant θ_C. The gradient reaches θ through the interpolation, hence scaled by
    ``1 − t`` (what the paper's code multiplies in by hand); θ_C gets none (stop_gradient).

    As in the paper's code, the interpolated model runs with train-mode BatchNorm, so its value
    does not depend on running statistics; its statistics are discarded.

    Args:
      apply_fn: model apply function.
      target: the loss level the path should reach (the code's ``loss_margin``), ≥ 0.
      t_dist: distribution of t, one of :data:`T_DISTRIBUTIONS` (see :func:`sample_t`).

    Returns:
      An objective reading ``ctx.cued``, ``ctx.anchor`` and ``ctx.key``, with aux
      ``{"batch_stats" (unchanged), "t", "cross_entropy" (at θ_t), "logits" (of θ_t)}``.
    """
    if t_dist not in T_DISTRIBUTIONS:
        raise InputError(
            f"unknown t distribution {t_dist!r}; choose from {', '.join(T_DISTRIBUTIONS)}"
        )
    if target < 0:
        raise InputError(f"barrier target must be non-negative, got {target}")

    def objective(params: PyTree, ctx: Context) -> tuple[jax.Array, dict]:
        data = _require(ctx, "cued", "barrier_loss")
        anchor = _require(ctx, "anchor", "barrier_loss")
        key = _require(ctx, "key", "barrier_loss")
        if jax.tree.structure(anchor) != jax.tree.structure(params):
            raise InputError(
                "ctx.anchor must be the anchor's params, with the structure of "
                "params (pass variables['params'], not the variables)"
            )
        t = sample_t(key, t_dist)
        theta_t = paths.linear(params, jax.lax.stop_gradient(anchor))(t)
        logits, _ = train_forward(apply_fn, theta_t, ctx.batch_stats, data.inputs)
        ce = cross_entropy(logits, data.labels)
        return jnp.abs(target - ce), {
            "batch_stats": ctx.batch_stats,
            "t": t,
            "cross_entropy": ce,
            "logits": logits,
        }

    return objective


def _class_means(
    features: jax.Array, labels: jax.Array, num_classes: int
) -> tuple[jax.Array, jax.Array]:
    """Per-class mean features ``[K, C]`` (zero for absent classes) and counts ``[K]``."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    counts = onehot.sum(0)
    sums = onehot.T @ features.astype(jnp.float32)
    return sums / jnp.maximum(counts, 1.0)[:, None], counts


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` row-wise (PyTorch's ``F.normalize``), with finite gradients
    at zero rows (``optax.safe_norm``)."""
    return x / optax.safe_norm(x, eps, axis=-1, keepdims=True)


def invariance_loss(apply_fn: Callable, num_classes: int, normalize: bool = True) -> Objective:
    """CBFT's invariance term: class-mean features of θ must not change with the cue.

    Penultimate features ``z_nc = g(x_clean; θ)`` and ``z_c = g(x_cue; θ)`` come from two
    train-mode forward passes (clean first, as in the paper's code; both update the running
    statistics). For each class k present in *both* batches the term adds
    ``||m_nc_k − m_c_k||²`` for the class means m; classes absent from either batch add
    nothing. The sum is divided by ``num_classes``, so ``λ · invariance`` is the code's
    ``λ · inv_loss / n_classes``.

    Args:
      apply_fn: model apply function accepting ``return_features=True``.
      num_classes: K, the number of classes (static).
      normalize: L2-normalize each class mean first (the paper's code: squared chord distance
        between unit vectors, at most 4); False uses the plain means (the paper's formula).

    Returns:
      An objective reading ``ctx.clean`` and ``ctx.cued``, with aux ``{"batch_stats",
      "num_classes_compared"}``.
    """
    _check_num_classes(num_classes)

    def objective(params: PyTree, ctx: Context) -> tuple[jax.Array, dict]:
        _, z_nc, z_c, _, batch_stats = _clean_and_cued_features(
            apply_fn, params, ctx, "invariance_loss"
        )
        loss, compared = _invariance(
            z_nc, ctx.clean.labels, z_c, ctx.cued.labels, num_classes, normalize
        )
        return loss, {"batch_stats": batch_stats, "num_classes_compared": compared}

    return objective


def _invariance(z_nc, y_nc, z_c, y_c, num_classes: int, normalize: bool):
    """The invariance term from features, and how many classes it compared."""
    m_nc, n_nc = _class_means(z_nc, y_nc, num_classes)
    m_c, n_c = _class_means(z_c, y_c, num_classes)
    if normalize:
        m_nc, m_c = _l2_normalize(m_nc), _l2_normalize(m_c)
    present = (n_nc > 0) & (n_c > 0)
    distances = jnp.sum((m_nc - m_c) ** 2, axis=-1)
    return jnp.sum(jnp.where(present, distances, 0.0)) / num_classes, present.sum()


def cross_entropy_invariance_loss(
    apply_fn: Callable,
    num_classes: int,
    weight: Any = 1.0,
    normalize: bool = True,
    cued_statistics: Any = None,
) -> Objective:
    """``CE(clean) + weight · invariance`` with one clean forward pass (the paper code's
    second step).

    The value and gradient equal ``weighted_sum(ce=cross_entropy_loss(apply_fn),
    invariance=(invariance_loss(apply_fn, num_classes, normalize), weight))``; the running
    statistics see the clean batch once, then the cued one where ``cued_statistics`` is true
    (a bool or traced array; default: where ``weight`` is not 0). The paper's code runs the
    cued pass from the end of warm-up on, whatever λ: CBFT passes that (see
    ``FinetuneConfig.cued_statistics``).

    Returns:
      An objective reading ``ctx.clean`` and ``ctx.cued``, with aux ``{"batch_stats",
      "losses": {"ce", "invariance"}, "logits"}``.
    """
    _check_num_classes(num_classes)

    def objective(params: PyTree, ctx: Context) -> tuple[jax.Array, dict]:
        logits, z_nc, z_c, clean_stats, cued_stats = _clean_and_cued_features(
            apply_fn, params, ctx, "cross_entropy_invariance_loss"
        )
        ce = cross_entropy(logits, ctx.clean.labels)
        inv, _ = _invariance(z_nc, ctx.clean.labels, z_c, ctx.cued.labels, num_classes, normalize)
        cued = jnp.asarray(weight) != 0 if cued_statistics is None else cued_statistics
        batch_stats = jax.tree.map(lambda a, b: jnp.where(cued, a, b), cued_stats, clean_stats)
        return ce + weight * inv, {
            "batch_stats": batch_stats,
            "losses": {"ce": ce, "invariance": inv},
            "logits": logits,
        }

    return objective


def weighted_sum(**terms: Objective | tuple[Objective, Any]) -> Objective:
    """One objective ``Σ_i w_i · objective_i`` from named terms (in the order given).

    Each keyword is an objective (weight 1) or an ``(objective, weight)`` pair; the weight may
    be a number or an array (e.g. a scheduled λ computed in the step). Running statistics are
    threaded through the terms in order, like successive train-mode forward passes of one
    PyTorch module: each term sees the statistics the previous one left. Loss values in train
    mode do not depend on them, so the value and gradient are exactly the weighted sums of the
    terms' own.

    Returns:
      An objective with aux ``{"batch_stats" (after the last term), "losses": {name:
      unweighted value}, "terms": {name: the term's other aux}}``; weighted sums nest.
    """
    if not terms:
        raise InputError("weighted_sum needs at least one objective")
    weighted = {}
    for name, term in terms.items():
        objective, weight = term if isinstance(term, tuple) and len(term) == 2 else (term, 1.0)
        if not callable(objective):
            raise InputError(
                f"term {name!r} must be an objective or an (objective, weight) pair, got {term!r}"
            )
        weighted[name] = (objective, weight)

    def objective_sum(params: PyTree, ctx: Context) -> tuple[jax.Array, dict]:
        total, losses, auxes = 0.0, {}, {}
        for name, (objective, weight) in weighted.items():
            value, aux = objective(params, ctx)
            aux = dict(aux)
            if "batch_stats" not in aux:
                raise InputError(f"objective {name!r} must return aux['batch_stats']")
            ctx = ctx._replace(batch_stats=aux.pop("batch_stats"))
            total = total + weight * value
            losses[name], auxes[name] = value, aux
        return total, {"batch_stats": ctx.batch_stats, "losses": losses, "terms": auxes}

    return objective_sum
