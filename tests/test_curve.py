"""Midpoint training: the control point's gradient is 2t(1−t) times the gradient at path(t),
endpoints stay frozen, and fitting lowers the loss along the curve. The factor goes on the
learning rate (``scale="lr"``, the paper code) or on the gradient (``scale="gradient"``)."""

import functools
from contextlib import nullcontext

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmc_jax import data, models, paths, training
from mmc_jax.connectivity import curve
from mmc_jax.runtime.errors import InputError


def _models():
    model = models.create("cnn4", 10, width=0.25, conv_impl="xla")
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    c = models.init(model, jax.random.key(2), (32, 32, 3))
    return model, a, b, c


def _batch(ds, start, size=32):
    return {
        "images": jnp.asarray(ds.images[start : start + size]),
        "labels": jnp.asarray(ds.labels[start : start + size]),
        "cue": jnp.ones(size, bool),
    }


def _point_grad(model, a, b, control, batch_stats, batch, t):
    """Gradient of the loss w.r.t. the model's own parameters at path(t) (train-mode BN)."""
    x = training.cued_inputs(data.box_cue(10), batch)

    def loss_at(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return training.cross_entropy(logits, batch["labels"])

    return jax.grad(loss_at)(paths.bezier(a["params"], control, b["params"])(t))


@pytest.mark.parametrize("scale", ["gradient", "lr"])
def test_control_gradient_carries_the_bezier_factor(scale):
    # With plain SGD (no momentum, no weight decay) both scales give the same step.
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=40)
    batch = _batch(ds, 0)
    state = training.TrainState.create(model.apply, c, optax.sgd(1.0), jax.random.PRNGKey(5))
    new_state, _ = curve.curve_train_step(state, batch, a, b, data.box_cue(10), scale=scale)
    _, t_key = jax.random.split(state.key)
    t = float(jax.random.uniform(t_key))
    grad = _point_grad(model, a, b, c["params"], c["batch_stats"], batch, t)
    expected = jax.tree.map(lambda g: -curve.control_weight_factor(t) * g, grad)
    update = jax.tree.map(jnp.subtract, new_state.params, c["params"])
    chex.assert_trees_all_close(update, expected, atol=1e-5, rtol=1e-4)
    assert not np.array_equal(new_state.key, state.key)
    assert int(new_state.step) == 1
    chex.assert_trees_all_equal(new_state.batch_stats, c["batch_stats"])


def test_lr_scale_matches_pytorch_sgd_with_momentum_and_weight_decay():
    # The paper code: buf = μ·buf + (g_point + wd·θ_m); θ_m -= lr·2t(1-t)·buf.
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=64)
    batches = [_batch(ds, 0), _batch(ds, 32)]
    lr, mu, wd = 0.5, 0.9, 1e-2
    tx = training.optim.sgd(lr, momentum=mu, weight_decay=wd)
    state0 = training.TrainState.create(model.apply, c, tx, jax.random.PRNGKey(5))

    def run(scale):
        step = jax.jit(
            functools.partial(curve.curve_train_step, a=a, b=b, cue=data.box_cue(10), scale=scale)
        )
        state = state0
        for batch in batches:
            state, _ = step(state, batch)
        return state

    lr_state, grad_state = run("lr"), run("gradient")

    key, params, buf = state0.key, c["params"], None
    for batch in batches:
        key, t_key = jax.random.split(key)
        t = float(jax.random.uniform(t_key))
        g = _point_grad(model, a, b, params, c["batch_stats"], batch, t)
        d = jax.tree.map(lambda g_, p: g_ + wd * p, g, params)
        buf = d if buf is None else jax.tree.map(lambda m, d_: mu * m + d_, buf, d)
        s = curve.control_weight_factor(t)
        params = jax.tree.map(lambda p, m: p - lr * s * m, params, buf)

    chex.assert_trees_all_close(lr_state.params, params, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(lr_state.key, key)
    assert int(lr_state.step) == 2
    chex.assert_trees_all_equal(lr_state.batch_stats, c["batch_stats"])
    gap = max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(lr_state.params), jax.tree.leaves(grad_state.params))
    )
    assert gap > 1e-3


def test_unknown_scale_is_refused(tmp_path):
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=40)
    state = training.TrainState.create(model.apply, c, optax.sgd(1.0), jax.random.PRNGKey(5))
    with pytest.raises(InputError, match="lr, gradient"):
        curve.curve_train_step(state, _batch(ds, 0), a, b, data.box_cue(10), scale="bogus")
    with pytest.raises(InputError, match="lr, gradient"):
        curve.fit_curve(
            model.apply,
            a,
            b,
            c,
            ds,
            tmp_path / "m",
            curve.CurveConfig(scale="bogus"),
            progress=False,
        )
    assert not (tmp_path / "m").exists()


def test_resuming_with_another_scale_is_refused(tmp_path):
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=40)
    for scale in ("gradient", "lr"):
        config = curve.CurveConfig.of(scale=scale, optim={"epochs": 1, "batch_size": 32})
        with pytest.raises(InputError, match="scale") if scale == "lr" else nullcontext():
            curve.fit_curve(model.apply, a, b, c, ds, tmp_path / "m", config, progress=False)


def test_fit_curve_lowers_the_loss_and_resumes(tmp_path):
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=256)
    config = curve.CurveConfig.of(
        cue_proportion=1.0,
        optim={"epochs": 3, "learning_rate": 0.05, "step_every_epochs": 10, "batch_size": 64},
    )
    kwargs = dict(config=config, progress=False)
    fitted = curve.fit_curve(model.apply, a, b, c, ds, tmp_path / "m", **kwargs)
    history = fitted["history"]
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]
    again = curve.fit_curve(model.apply, a, b, c, ds, tmp_path / "m", **kwargs)
    chex.assert_trees_all_equal(again["control"]["params"], fitted["control"]["params"])
