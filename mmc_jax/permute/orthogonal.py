"""Rotations of a residual stream: symmetries beyond permutations.

A residual stream that only linear layers read and write, with RMSNorm without a scale or
no normalisation on it, keeps the model's function under *any* orthogonal change of basis
``Q``, not only under permutations (Theus et al. 2025, "Generalized linear mode connectivity
for transformers"): every writer's output axis and every reader's input axis is multiplied by
``Q`` alike, as a permutation matrix would act. LayerNorm's mean subtraction and per-unit
gain break the symmetry (only permutations remain), which :func:`check_rotation` detects.

Aligning a stream is an orthogonal Procrustes problem: the ``Q`` maximising
``<a, Q · b>`` summed over the stream's weights (or over its activations) is ``U Vᵀ`` of
the SVD of their cross-product (:func:`orthogonal_alignment`); :func:`align` composes it
with the permutations.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax.permute.sites import TracedActivations
from mmc_jax.permute.spec import Blocks, PermutationSpec, apply, leaf_path, leaves_of, validate
from mmc_jax.runtime.errors import InputError


def _axes(spec: PermutationSpec, name: str) -> tuple[tuple[str, int], ...]:
    """The ``(leaf, axis)`` pairs a rotation of ``name`` acts on (whole axes only)."""
    if name not in spec.sizes:
        raise InputError(f"no permutation {name!r} in the spec; its streams: {spec.streams}")
    entries = spec.perm_to_axes[name]
    for path, axis in entries:
        if isinstance(spec.axes_to_perm[path][axis], Blocks):
            raise InputError(f"{name} acts on part of axis {axis} of {path}; it cannot rotate")
    return entries


def rotate(
    spec: PermutationSpec, name: str, rotation: jax.Array, variables: Mapping[str, Any]
) -> Any:
    """``variables`` with the units of permutation ``name`` (a residual stream) mapped by the
    orthogonal matrix ``rotation``: unit ``i`` of the result is ``Σ_k rotation[i, k]`` times
    unit ``k``, on every axis the permutation acts on (a permutation matrix gives
    :func:`mmc_jax.permute.apply`)."""
    validate(spec, variables)
    axes = dict(_axes(spec, name))
    rotation = jnp.asarray(rotation, jnp.float32)
    if rotation.shape != (spec.sizes[name],) * 2:
        raise InputError(f"a rotation of {name} must be {spec.sizes[name]}×{spec.sizes[name]}")
    if spec.stacked:
        raise InputError("rotations of scanned models' streams are not supported yet")

    def one(keys, x):
        path = leaf_path(keys)
        if path not in axes:
            return x
        moved = jnp.tensordot(rotation, jnp.moveaxis(x, axes[path], 0), axes=1)
        return jnp.moveaxis(moved, 0, axes[path]).astype(x.dtype)

    return jax.tree_util.tree_map_with_path(one, variables)


def random_rotation(key: jax.Array, n: int) -> jax.Array:
    """A random ``n × n`` orthogonal matrix (Haar measure: QR of a Gaussian, signs fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (n, n)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def check_rotation(
    spec: PermutationSpec,
    name: str,
    apply_fn: Callable,
    variables: Mapping[str, Any],
    *example_args,
    atol: float = 1e-4,
    **apply_kwargs,
) -> None:
    """Raises InputError unless a random rotation of stream ``name`` leaves the model's
    outputs on ``example_args`` unchanged (within ``atol`` relative to their scale)."""
    rotated = rotate(spec, name, random_rotation(jax.random.key(0), spec.sizes[name]), variables)
    before = np.asarray(apply_fn(variables, *example_args, **apply_kwargs))
    after = np.asarray(apply_fn(rotated, *example_args, **apply_kwargs))
    scale = max(1.0, float(np.abs(before).max()))
    if not np.allclose(before, after, atol=atol * scale):
        raise InputError(
            f"rotations of {name} change the model's outputs (by up to "
            f"{float(np.abs(before - after).max()):.3g}): its stream is not rotation "
            "invariant (LayerNorm, a norm's gain or an elementwise op on it); only "
            "permutations align it"
        )


def procrustes(cross: np.ndarray) -> np.ndarray:
    """The orthogonal ``Q`` maximising ``<cross, Q>``: ``U Vᵀ`` of ``cross = U S Vᵀ``."""
    u, _, vt = np.linalg.svd(np.asarray(cross, np.float64))
    return u @ vt


def orthogonal_alignment(
    spec: PermutationSpec,
    name: str,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    model=None,
    batches: Iterable[Any] | None = None,
    alone: bool = False,
) -> jax.Array:
    """The rotation of stream ``name`` aligning ``b`` to ``a`` (apply it with
    :func:`rotate`); :func:`align` composes it with the permutations.

    Weights (default): ``Σ a_leaf · b_leafᵀ`` over the stream's parameter leaves, axis
    first; with ``alone``, only over the leaves no other permutation acts on (embeddings,
    the head, biases), so that the result does not depend on the other permutations.
    Activations (``model`` and ``batches`` given): ``Σ aᵀ b`` of the stream's activations at
    its sites (:class:`mmc_jax.permute.sites.TracedActivations`; ``model`` may be one, built
    for ``spec``, to reuse its compiled programs) over the batches, which the other
    permutations do not change.
    """
    validate(spec, a)
    validate(spec, b)
    axes = _axes(spec, name)
    n = spec.sizes[name]
    cross = np.zeros((n, n))
    if batches is None:
        leaves_a, leaves_b = leaves_of(spec, a), leaves_of(spec, b)
        for path, axis in axes:
            others = [e for i, e in enumerate(spec.axes_to_perm[path]) if i != axis and e]
            if path.startswith("params/") and not (alone and others):
                x = np.moveaxis(np.asarray(leaves_a[path], np.float64), axis, 0).reshape(n, -1)
                y = np.moveaxis(np.asarray(leaves_b[path], np.float64), axis, 0).reshape(n, -1)
                cross += x @ y.T
    else:
        if model is None:
            raise InputError("orthogonal alignment on activations needs the model")
        activations = (
            model if isinstance(model, TracedActivations) else TracedActivations(spec, model, a)
        )
        for images in batches:
            for x, y in zip(activations(a, images)[name], activations(b, images)[name]):
                cross += np.asarray(x, np.float64).T @ np.asarray(y, np.float64)
    return jnp.asarray(procrustes(cross), jnp.float32)


def align(
    spec: PermutationSpec,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    match: Callable[[Any, Any], Mapping[str, jax.Array]],
    *,
    model=None,
    batches: Iterable[Any] | None = None,
) -> Any:
    """``b`` aligned to ``a`` by permutations and rotations of its residual streams
    (``spec.streams``): each stream rotated first by what does not depend on the other
    permutations (activations, or the weights no other permutation touches), then
    ``match(a, b) → permutations`` (weight or activation matching) applied, then each stream
    rotated again on all its weights (or activations), now that the permutations fit."""
    kwargs = {}
    if batches is not None:  # one trace and compiled program for every rotation
        if model is None:
            raise InputError("orthogonal alignment on activations needs the model")
        kwargs = {"model": TracedActivations(spec, model, a), "batches": batches}
    for name in spec.streams:
        b = rotate(spec, name, orthogonal_alignment(spec, name, a, b, alone=True, **kwargs), b)
    b = apply(spec, match(a, b), b)
    for name in spec.streams:
        b = rotate(spec, name, orthogonal_alignment(spec, name, a, b, **kwargs), b)
    return b


__all__ = [
    "align",
    "check_rotation",
    "orthogonal_alignment",
    "procrustes",
    "random_rotation",
    "rotate",
]
