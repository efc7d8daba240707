"""REPAIR (Jordan et al. 2023): along a path, rescale each channel of every hidden layer so
that its activation mean and standard deviation are the interpolation of the endpoints'.

Interpolating two networks shrinks the variance of their hidden activations ("variance
collapse"), which alone makes a barrier. REPAIR measures, for every channel of every
convolution and dense layer (the *sites*; the last layer, whose output is the logits, is
left alone), the mean and standard deviation of its output in each endpoint, and corrects the
interpolated network so that the channel's statistics are ``(1 − t)·stats_A + t·stats_B``:

    x ← (x − μ_own) · σ_target / σ_own + μ_target

``μ_own`` and ``σ_own`` are the interpolated network's own statistics, measured on the same
clean training batches site by site, with every earlier site already corrected by its final
statistics (one pass over the batches per site), so the repaired network has exactly the
target statistics on those batches; Jordan et al.'s single pass with reset BatchNorm layers
corrects earlier layers by per-batch statistics instead, an approximation. It works for any
Flax Linen model (a Flax NNX model is refused with InputError), with BatchNorm (whose running
statistics stay interpolated: the correction of the layer before it does the work; for BN
networks this is close to recomputing the statistics), LayerNorm or no normalisation at all,
through ``flax.linen.intercept_methods``: no change to the model. For a path through more
than two models the target is the same weighted sum of every anchor model's statistics that
the path uses for the weights (``weights(t)``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmc_jax.models import layers, nnx_bridge
from mmc_jax.runtime.errors import InputError

#: Modules whose outputs are corrected: convolutions and dense layers.
SITE_TYPES = (nn.Conv, nn.ConvTranspose, nn.Dense, layers.Conv)
#: Added to a variance before the square root: small, so that a corrected channel's standard
#: deviation is its target to float precision, and a dead channel stays finite.
EPSILON = 1e-8

Stats = dict  # {site: {"mean": [C], "std": [C]}}


def _require_linen(apply_fn: Callable) -> None:
    """Raises InputError for a Flax NNX model: its layers are not Linen modules, so
    ``flax.linen.intercept_methods`` finds no site to correct."""
    if nnx_bridge.is_nnx(apply_fn):
        raise InputError(
            "REPAIR (path.bn=repair) corrects the layers of a Linen model, found through "
            "flax.linen.intercept_methods; an NNX model has none to find: use path.bn=recompute "
            "or interpolate_ema"
        )


def _is_site(context) -> bool:
    return context.method_name == "__call__" and isinstance(context.module, SITE_TYPES)


class _Sites:
    """An interceptor naming each site call by module path (and call count, for modules
    called more than once) and handing its output to ``visit(name, output)``."""

    def __init__(self, visit: Callable[[str, jax.Array], jax.Array]):
        self.visit, self.calls = visit, {}

    def __call__(self, next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if not _is_site(context):
            return out
        path = "/".join(context.module.scope.path)
        count = self.calls[path] = self.calls.get(path, 0) + 1
        return self.visit(path if count == 1 else f"{path}#{count}", out)


def _channel_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    return x.mean(axes), x.var(axes)


def _finish(totals: Mapping, count: int) -> Stats:
    """Mean and standard deviation from per-batch sums of mean, mean², variance."""
    out = {}
    for name, (m, m2, v) in totals.items():
        mean = m / count
        var = v / count + jnp.maximum(m2 / count - mean**2, 0.0)
        out[name] = {"mean": mean, "std": jnp.sqrt(var + EPSILON)}
    return out


def _scan_moments(run: Callable, images: jax.Array) -> Stats:
    """Channel statistics over batches ``[num_batches, batch, ...]``: ``run(x)`` returns
    ``{site: (batch mean, batch variance)}``."""

    def step(x):
        return {k: (m, m**2, v) for k, (m, v) in run(x).items()}

    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(step, images[0]))
    totals, _ = jax.lax.scan(lambda t, x: (jax.tree.map(jnp.add, t, step(x)), None), zeros, images)
    return _finish(totals, images.shape[0])


def measure(apply_fn: Callable, variables: Mapping, images: jax.Array) -> Stats:
    """Every site's channel mean and standard deviation in eval mode over ``images``
    ``[num_batches, batch, ...]``, the last site (the logits) excluded.

    Returns:
      ``{site: {"mean": [C], "std": [C]}}``, sites named by module path.

    Raises:
      InputError: a Flax NNX model (no Linen layers to intercept).
    """
    _require_linen(apply_fn)

    def run(x):
        seen = {}

        def visit(name, out):
            seen[name] = out
            return out

        with nn.intercept_methods(_Sites(visit)):
            logits = apply_fn(variables, x, train=False)
        names = list(seen)
        if names and seen[names[-1]].shape == jnp.shape(logits):
            names = names[:-1]
        return {n: _channel_moments(seen[n]) for n in names}

    return _scan_moments(run, images)


def anchor_statistics(apply_fn: Callable, anchors: Any, images: jax.Array) -> Stats:
    """:func:`measure` for each of ``n`` models stacked along a leading axis; every leaf of
    the result is ``[n, C]``."""
    return jax.lax.map(lambda variables: measure(apply_fn, variables, images), anchors)


def interpolate(stats: Stats, weights: jax.Array) -> Stats:
    """The target statistics ``Σ_j w_j stats_j`` of stacked anchor statistics (a standard
    deviation stays positive where weights extrapolate)."""
    mix = lambda x: jnp.tensordot(weights.astype(jnp.float32), x, axes=1)  # noqa: E731
    return {
        k: {"mean": mix(s["mean"]), "std": jnp.maximum(mix(s["std"]), EPSILON**0.5)}
        for k, s in stats.items()
    }


def _correct(x: jax.Array, own: Mapping, target: Mapping) -> jax.Array:
    scale = target["std"] / own["std"]
    return ((x.astype(jnp.float32) - own["mean"]) * scale + target["mean"]).astype(x.dtype)


def settle(apply_fn: Callable, variables: Mapping, images: jax.Array, target: Stats) -> Stats:
    """The interpolated model's own site statistics over ``images`` (eval mode), each site
    measured with every site before it already corrected to ``target``: one pass over the
    images per site, so the corrected model has exactly the target statistics on them."""
    order = _call_order(apply_fn, variables, images[0], target)
    index = {name: i for i, name in enumerate(order)}

    def pass_over(own, k):  # site k measured, the sites before it corrected
        def run(x):
            moments = {}

            def visit(name, out):
                if name not in index:
                    return out
                moments[name] = _channel_moments(out)
                return jnp.where(index[name] < k, _correct(out, own[name], target[name]), out)

            with nn.intercept_methods(_Sites(visit)):
                apply_fn(variables, x, train=False)
            return moments

        measured = _scan_moments(run, images)
        return {
            n: jax.tree.map(
                lambda new, old, i=index[n]: jnp.where(i == k, new, old), measured[n], own[n]
            )
            for n in own
        }, None

    own, _ = jax.lax.scan(pass_over, {n: target[n] for n in order}, jnp.arange(len(order)))
    return own


def _call_order(apply_fn: Callable, variables: Mapping, x: jax.Array, sites) -> list[str]:
    """The names in ``sites``, in the order the model calls them."""
    order = []

    def visit(name, out):
        if name in sites:
            order.append(name)
        return out

    def run(x):
        with nn.intercept_methods(_Sites(visit)):
            return apply_fn(variables, x, train=False)

    jax.eval_shape(run, x)
    return order


def repaired(apply_fn: Callable, own: Stats, target: Stats) -> Callable:
    """``apply_fn`` with every site's output moved from ``own`` to ``target`` statistics."""

    def visit(name, out):
        return _correct(out, own[name], target[name]) if name in target else out

    def apply(variables, *args, **kwargs):
        with nn.intercept_methods(_Sites(visit)):
            return apply_fn(variables, *args, **kwargs)

    return apply


def repair(
    apply_fn: Callable,
    variables: Mapping,
    images: jax.Array,
    anchor_stats: Stats,
    weights: jax.Array,
) -> Callable:
    """The REPAIRed ``apply_fn`` for the model ``variables`` at path weights ``weights``:
    targets interpolated from ``anchor_stats`` (:func:`anchor_statistics`), own statistics
    measured on ``images``."""
    target = interpolate(anchor_stats, weights)
    return repaired(apply_fn, settle(apply_fn, variables, images, target), target)


__all__ = [
    "EPSILON",
    "SITE_TYPES",
    "anchor_statistics",
    "interpolate",
    "measure",
    "repair",
    "repaired",
    "settle",
]
