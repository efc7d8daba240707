"""Objectives: hand-computed values, the barrier's (1 − t) gradient, t distributions, the
weighted sum's value and gradient, BatchNorm-statistics threading, jit on a real model."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mmc_jax import InputError, models
from mmc_jax.finetune import objectives
from mmc_jax.finetune.objectives import Batch, Context
from mmc_jax.metrics import cross_entropy


def tiny_apply(variables, x, train=False, return_features=False, mutable=False):
    """A linear "model": features ``x * s``, logits ``features @ w + b``; its batch_stats
    count the train-mode forward passes."""
    assert train, "objectives run the model in train mode"
    p = variables["params"]
    features = x * p["s"]
    logits = features @ p["w"] + p["b"]
    out = (logits, features) if return_features else logits
    if not mutable:
        return out
    return out, {"batch_stats": {"passes": variables["batch_stats"]["passes"] + 1}}


def _params(seed, scale=1.0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "s": 1.0 + scale * jax.random.normal(k1, (2,)),
        "w": scale * jax.random.normal(k2, (2, 4)),
        "b": scale * jax.random.normal(k3, (4,)),
    }


def _ce(params, x, y):
    """Cross-entropy of the tiny model in NumPy (float64)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    logits = (np.asarray(x) * p["s"]) @ p["w"] + p["b"]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(y)), np.asarray(y)].mean()


# Four classes. Clean: class 0 twice, 1 once, 3 once (absent from cued). Cued: 0, 2 (absent
# from clean), 1. With features = x the class means are, clean: m0 = (2, 0), m1 = (0, 2);
# cued: m0 = (0, 1), m1 = (2, 2).
CLEAN = Batch(jnp.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]]), jnp.array([0, 0, 1, 3]))
CUED = Batch(jnp.array([[0.0, 1.0], [0.0, 4.0], [2.0, 2.0]]), jnp.array([0, 2, 1]))
STATS = {"passes": jnp.zeros((), jnp.int32)}
IDENTITY = {"s": jnp.ones(2), "w": jnp.zeros((2, 4)), "b": jnp.zeros(4)}


def _ctx(**kwargs):
    fields = {
        "batch_stats": STATS,
        "clean": CLEAN,
        "cued": CUED,
        "anchor": _params(1),
        "key": jax.random.key(7),
    }
    return Context(**{**fields, **kwargs})


@pytest.mark.parametrize("batch", ["clean", "cued"])
def test_cross_entropy_matches_hand_computation(batch):
    params, ctx = _params(0), _ctx()
    loss, aux = jax.jit(objectives.cross_entropy_loss(tiny_apply, batch))(params, ctx)
    data = getattr(ctx, batch)
    assert float(loss) == pytest.approx(_ce(params, *data), rel=1e-5)
    assert aux["logits"].shape == (len(data.labels), 4)
    assert int(aux["batch_stats"]["passes"]) == 1


@pytest.mark.parametrize(
    "normalize, expected",
    [
        # class 0: |(2, 0) - (0, 1)|² = 5, class 1: |(0, 2) - (2, 2)|² = 4; K = 4.
        (False, (5.0 + 4.0) / 4),
        # unit means: |(1, 0) - (0, 1)|² = 2, |(0, 1) - (1, 1)/√2|² = 2 - √2.
        (True, (2.0 + 2.0 - math.sqrt(2.0)) / 4),
    ],
)
def test_invariance_matches_hand_computation(normalize, expected):
    objective = jax.jit(objectives.invariance_loss(tiny_apply, 4, normalize=normalize))
    loss, aux = objective(IDENTITY, _ctx())
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert int(aux["num_classes_compared"]) == 2
    assert int(aux["batch_stats"]["passes"]) == 2
    grads = jax.grad(lambda p: objective(p, _ctx())[0])(_params(0))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["s"]).sum()) > 0


@pytest.mark.parametrize("normalize", [False, True])
def test_invariance_ignores_classes_missing_from_either_batch(normalize):
    objective = jax.jit(objectives.invariance_loss(tiny_apply, 4, normalize=normalize))
    reference, _ = objective(IDENTITY, _ctx())
    moved = _ctx(
        clean=CLEAN._replace(inputs=CLEAN.inputs.at[3].set(jnp.array([-7.0, 9.0]))),
        cued=CUED._replace(inputs=CUED.inputs.at[1].set(jnp.array([8.0, -3.0]))),
    )
    dropped = _ctx(
        clean=Batch(CLEAN.inputs[:3], CLEAN.labels[:3]),
        cued=Batch(CUED.inputs[::2], CUED.labels[::2]),
    )
    for ctx in (moved, dropped):
        assert float(objective(IDENTITY, ctx)[0]) == pytest.approx(float(reference), rel=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_invariance_is_zero_for_identical_features(normalize):
    # Same batch twice, a class absent (2) and a class whose mean feature is zero (3): the loss
    # is zero for every θ, so its gradient is exactly zero (and finite at the zero mean).
    batch = Batch(jnp.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]]), jnp.array([0, 1, 3]))
    objective = objectives.invariance_loss(tiny_apply, 4, normalize=normalize)
    loss, grads = jax.jit(
        jax.value_and_grad(lambda p: objective(p, _ctx(clean=batch, cued=batch))[0])
    )(_params(0))
    assert float(loss) == 0.0
    chex.assert_trees_all_equal(grads, jax.tree.map(jnp.zeros_like, grads))


@pytest.mark.parametrize("target", [1.0, 3.0])
def test_barrier_matches_hand_computation(target):
    params, ctx = _params(0), _ctx()
    loss, aux = jax.jit(objectives.barrier_loss(tiny_apply, target))(params, ctx)
    t = float(objectives.sample_t(ctx.key, "clipped_normal"))
    assert float(aux["t"]) == t
    theta_t = {k: (1 - t) * np.asarray(params[k]) + t * np.asarray(ctx.anchor[k]) for k in params}
    ce = _ce(theta_t, *ctx.cued)
    assert float(aux["cross_entropy"]) == pytest.approx(ce, rel=1e-5)
    assert float(loss) == pytest.approx(abs(target - ce), rel=1e-5)
    # The interpolated model's statistics are discarded.
    assert int(aux["batch_stats"]["passes"]) == 0


@pytest.mark.parametrize("t_dist", objectives.T_DISTRIBUTIONS)
def test_barrier_gradient_is_one_minus_t_times_gradient_at_theta_t(t_dist):
    target, params, anchor = 1.0, _params(0), _params(10, scale=2.0)
    ctx = _ctx(key=jax.random.key(5))
    objective = objectives.barrier_loss(tiny_apply, target, t_dist)
    (grads, anchor_grads), aux = jax.jit(
        jax.grad(lambda p, a: objective(p, ctx._replace(anchor=a)), argnums=(0, 1), has_aux=True)
    )(params, anchor)
    t = aux["t"]
    chex.assert_trees_all_equal(t, objectives.sample_t(ctx.key, t_dist))

    def barrier_at(theta):
        logits = tiny_apply({"params": theta}, ctx.cued.inputs, train=True)
        return jnp.abs(target - cross_entropy(logits, ctx.cued.labels))

    theta_t = jax.tree.map(lambda a, b: (1 - t) * a + t * b, params, anchor)
    expected = jax.tree.map(lambda g: (1 - t) * g, jax.jit(jax.grad(barrier_at))(theta_t))
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_equal(anchor_grads, jax.tree.map(jnp.zeros_like, anchor))


def _samples(kind, n=20_000, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: objectives.sample_t(k, kind)))(keys))


def test_clipped_normal_t_puts_a_third_of_its_mass_on_each_end():
    t = _samples("clipped_normal")
    assert t.min() == 0.25 and t.max() == 0.75
    tail = 1 - stats.norm.cdf(0.5)  # ≈ 0.309
    assert np.mean(t == 0.25) == pytest.approx(tail, abs=0.02)
    assert np.mean(t == 0.75) == pytest.approx(tail, abs=0.02)


def test_truncated_normal_t_lies_in_unit_interval_with_mean_half():
    t = _samples("truncated_normal")
    assert t.min() >= 0.0 and t.max() <= 1.0
    assert t.mean() == pytest.approx(0.5, abs=0.01)
    assert t.std() == pytest.approx(stats.truncnorm(-1, 1, loc=0.5, scale=0.5).std(), abs=0.01)


def test_uniform_t_covers_unit_interval():
    t = _samples("uniform")
    assert t.min() >= 0.0 and t.max() <= 1.0
    assert t.mean() == pytest.approx(0.5, abs=0.01)
    assert np.histogram(t, bins=4, range=(0, 1))[0].min() > 4_500


@pytest.mark.parametrize("kind", objectives.T_DISTRIBUTIONS)
def test_t_is_deterministic_in_the_key(kind):
    key = jax.random.key(3)
    assert float(objectives.sample_t(key, kind)) == float(objectives.sample_t(key, kind))
    # Raw uint32[2] keys (TrainState.key) work too.
    raw = jax.random.PRNGKey(3)
    assert float(objectives.sample_t(raw, kind)) == float(
        jax.jit(objectives.sample_t, static_argnums=1)(raw, kind)
    )
    assert len(set(_samples(kind, n=8).tolist())) > 1


def test_weighted_sum_value_and_gradient_are_weighted_sums_of_the_terms():
    terms = {
        "ce": (objectives.cross_entropy_loss(tiny_apply), 1.0),
        "barrier": (objectives.barrier_loss(tiny_apply, 2.0), 0.5),
        "invariance": (objectives.invariance_loss(tiny_apply, 4), 3.0),
    }
    combined = objectives.weighted_sum(**terms)
    params, ctx = _params(0), _ctx()
    (loss, aux), grads = jax.jit(jax.value_and_grad(combined, has_aux=True))(params, ctx)
    parts = jax.jit(
        lambda p, c: {
            name: jax.value_and_grad(fn, has_aux=True)(p, c) for name, (fn, _) in terms.items()
        }
    )(params, ctx)
    values = {name: value for name, ((value, _), _) in parts.items()}
    part_grads = {name: g for name, (_, g) in parts.items()}
    assert float(loss) == pytest.approx(
        sum(w * float(values[n]) for n, (_, w) in terms.items()), rel=1e-6
    )
    names = list(terms)
    expected = jax.tree.map(
        lambda *gs: sum(terms[n][1] * g for n, g in zip(names, gs)), *(part_grads[n] for n in names)
    )
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(aux["losses"], values, rtol=1e-6)
    # Statistics thread through in order: CE one pass, barrier none, invariance two.
    assert int(aux["batch_stats"]["passes"]) == 3
    assert "batch_stats" not in aux["terms"]["barrier"] and "t" in aux["terms"]["barrier"]
    # A bare objective has weight 1, and weighted sums nest.
    nested = objectives.weighted_sum(
        inner=(combined, 2.0), ce=objectives.cross_entropy_loss(tiny_apply)
    )
    nested_loss, nested_aux = jax.jit(nested)(params, ctx)
    assert float(nested_loss) == pytest.approx(2 * float(loss) + float(values["ce"]), rel=1e-6)
    assert int(nested_aux["batch_stats"]["passes"]) == 4


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_shared_forward_objective_equals_the_sum_of_its_terms(weight):
    shared = objectives.cross_entropy_invariance_loss(tiny_apply, 4, weight)
    separate = objectives.weighted_sum(
        ce=objectives.cross_entropy_loss(tiny_apply),
        invariance=(objectives.invariance_loss(tiny_apply, 4), weight),
    )
    params, ctx = _params(1), _ctx()
    (loss, aux), grads = jax.value_and_grad(shared, has_aux=True)(params, ctx)
    (loss2, aux2), grads2 = jax.value_and_grad(separate, has_aux=True)(params, ctx)
    assert float(loss) == pytest.approx(float(loss2), rel=1e-6)
    chex.assert_trees_all_close(grads, grads2, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(aux["losses"], aux2["losses"], rtol=1e-6)
    # The clean batch is seen once; the cued pass counts only when the term is on.
    assert int(aux["batch_stats"]["passes"]) == (2 if weight else 1)
    assert int(aux2["batch_stats"]["passes"]) == 3


def _random_variables(model, rng, image_shape):
    """Random variables of ``model`` from NumPy draws (no init compilation: a fast test)."""
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False),
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, *image_shape), jnp.float32),
    )

    def draw(path, leaf):
        x = rng.standard_normal(leaf.shape).astype(leaf.dtype)
        if x.ndim > 1:
            return x / np.sqrt(np.prod(x.shape[:-1]))
        return (path[-1].key in ("scale", "var")) + 0.1 * x

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_cbft_objective_jits_on_a_batchnorm_model():
    model = models.SmallCNN(10, channels=(4, 8), conv_impl="xla")  # two conv–BN layers
    rng = np.random.default_rng(0)
    theta = _random_variables(model, rng, (16, 16, 3))
    anchor = _random_variables(model, rng, (16, 16, 3))["params"]
    ctx = Context(
        theta["batch_stats"],
        clean=Batch(rng.standard_normal((8, 16, 16, 3), np.float32), np.arange(8) % 4),
        cued=Batch(rng.standard_normal((8, 16, 16, 3), np.float32), rng.integers(0, 10, 8)),
        anchor=anchor,
        key=jax.random.PRNGKey(3),
    )
    loss_fn = objectives.weighted_sum(
        ce=objectives.cross_entropy_loss(model.apply),
        barrier=objectives.barrier_loss(model.apply),
        invariance=(objectives.invariance_loss(model.apply, 10), 2.0),
    )
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss, aux), grads = step(theta["params"], ctx)
    assert bool(jnp.isfinite(loss)) and float(aux["losses"]["invariance"]) > 0
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    chex.assert_trees_all_equal_structs(aux["batch_stats"], theta["batch_stats"])
    assert not np.allclose(
        jax.tree.leaves(aux["batch_stats"])[0], jax.tree.leaves(theta["batch_stats"])[0]
    )
    # Train-mode BatchNorm throughout: no term depends on the running statistics.
    other = jax.tree.map(lambda s: s + 5.0, ctx.batch_stats)
    (other_loss, _), _ = step(theta["params"], ctx._replace(batch_stats=other))
    assert float(other_loss) == pytest.approx(float(loss), rel=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: objectives.cross_entropy_loss(tiny_apply, "noisy"), "unknown batch 'noisy'"),
        (lambda: objectives.barrier_loss(tiny_apply, t_dist="beta"), "unknown t distribution"),
        (lambda: objectives.barrier_loss(tiny_apply, target=-1.0), "must be non-negative"),
        (lambda: objectives.sample_t(jax.random.key(0), "beta"), "unknown t distribution"),
        (lambda: objectives.invariance_loss(tiny_apply, 0), "positive integer"),
        (lambda: objectives.weighted_sum(), "at least one objective"),
        (
            lambda: objectives.weighted_sum(ce=(1.0, objectives.cross_entropy_loss(tiny_apply))),
            "term 'ce' must be an objective",
        ),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(InputError, match=message):
        make()


@pytest.mark.parametrize(
    "objective, ctx, message",
    [
        (objectives.barrier_loss(tiny_apply), _ctx(key=None), "needs ctx.key"),
        (objectives.barrier_loss(tiny_apply), _ctx(anchor={"params": _params(1)}), "structure"),
        (objectives.invariance_loss(tiny_apply, 4), _ctx(cued=None), "needs ctx.cued"),
        (objectives.cross_entropy_loss(tiny_apply), _ctx(clean=None), "needs ctx.clean"),
        (
            objectives.weighted_sum(bad=lambda p, c: (jnp.zeros(()), {})),
            _ctx(),
            "must return aux\\['batch_stats'\\]",
        ),
    ],
)
def test_missing_context_fails_clearly(objective, ctx, message):
    with pytest.raises(InputError, match=message):
        objective(_params(0), ctx)
