"""Deep Feature Reweighting (Kirichenko, Izmailov, Wilson, ICLR 2023, "Last layer re-training
is sufficient for robustness to spurious correlations") from θ_C.

The feature extractor stays θ_C's; only the linear head is retrained, on a *group-balanced*
set: for each class as many cued as clean samples (the smaller of the two counts, drawn
without replacement from the fine-tuning's clean and cued samples, :mod:`.groups`). As in
that paper: the features are standardized, the head is an L1-regularized logistic
regression (sklearn's ``C``: the data term weighs ``C`` against ``||W||₁``; here solved by
proximal gradient descent), and the heads of ``dfr_subsets`` balanced draws are averaged
(in the original feature space). DFR tunes ``C`` on held-out data; ``FinetuneConfig.dfr_c``
fixes it (1.0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax.runtime.errors import InputError


def balanced_index(clean_labels, cued_labels, rng: np.random.Generator):
    """Positions in the clean and in the cued samples of one group-balanced draw: for every
    class, ``min(#clean, #cued)`` of each, without replacement."""
    clean_labels, cued_labels = np.asarray(clean_labels), np.asarray(cued_labels)
    clean, cued = [], []
    for k in np.union1d(clean_labels, cued_labels):
        a, b = np.flatnonzero(clean_labels == k), np.flatnonzero(cued_labels == k)
        n = min(len(a), len(b))
        clean.append(rng.choice(a, n, replace=False))
        cued.append(rng.choice(b, n, replace=False))
    return np.concatenate(clean).astype(int), np.concatenate(cued).astype(int)


def fit_l1_logistic(x, y, num_classes: int, c: float, steps: int = 2000):
    """Multinomial logistic regression ``min C · Σ_i CE_i + ||W||₁`` (bias unpenalized) by
    proximal gradient descent (ISTA) with step ``1 / L`` for the smooth part's Lipschitz
    constant; returns ``(W [D, K], b [K])``."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    n = x.shape[0]
    with_bias = np.concatenate([np.asarray(x), np.ones((n, 1), np.float32)], 1)
    lipschitz = 0.5 * np.linalg.norm(with_bias, 2) ** 2 / n  # of the mean cross-entropy
    lr, l1 = 1.0 / lipschitz, 1.0 / (c * n)  # mean CE + ||W||₁ / (C n): sklearn's objective / (C n)
    w, b = _ista(x, y, jnp.float32(lr), jnp.float32(l1), num_classes, steps)
    return np.asarray(w), np.asarray(b)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _ista(x, y, lr, l1, num_classes: int, steps: int):
    """ISTA's iterations (compiled once for every balanced draw of the same shape)."""

    def mean_ce(w, b):
        logits = x @ w + b
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(x.shape[0]), y])

    grad = jax.grad(mean_ce, argnums=(0, 1))

    def step(carry, _):
        w, b = carry
        gw, gb = grad(w, b)
        w = w - lr * gw
        w = jnp.sign(w) * jnp.maximum(jnp.abs(w) - lr * l1, 0.0)  # soft threshold
        return (w, b - lr * gb), None

    init = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros((num_classes,)))
    return jax.lax.scan(step, init, None, length=steps)[0]


def head(clean_features, clean_labels, cued_features, cued_labels, num_classes, c, subsets, seed):
    """DFR's head ``(kernel [D, K], bias [K])`` on the original features: the average of the
    heads fitted on ``subsets`` balanced draws (standardized features, L1 logistic
    regression), and the number of samples each draw has."""
    rng = np.random.default_rng([seed, 23])
    kernels, biases = [], []
    for _ in range(subsets):
        i, j = balanced_index(clean_labels, cued_labels, rng)
        if not len(i):
            raise InputError(
                "DFR's group-balanced set is empty: no class has both clean and cued samples "
                "(is the cued set's cue proportion 0?)"
            )
        x = np.concatenate([clean_features[i], cued_features[j]])
        y = np.concatenate([np.asarray(clean_labels)[i], np.asarray(cued_labels)[j]])
        mean, scale = x.mean(0), x.std(0) + 1e-6
        w, b = fit_l1_logistic((x - mean) / scale, y, num_classes, c)
        kernels.append(w / scale[:, None])
        biases.append(b - (mean / scale) @ w)
    return np.mean(kernels, 0), np.mean(biases, 0), 2 * len(i)


__all__ = ["balanced_index", "fit_l1_logistic", "head"]
