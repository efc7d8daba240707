"""Midpoint training: the control point's gradient is 2t(1−t) times the gradient at path(t),
endpoints stay frozen, and fitting lowers the loss along the curve."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmc_jax import curve, data, models, paths, training


def _models():
    model = models.create("cnn4", 10, width=0.25, conv_impl="xla")
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    c = models.init(model, jax.random.key(2), (32, 32, 3))
    return model, a, b, c


def test_control_gradient_carries_the_bezier_factor():
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=40)
    batch = {"images": jnp.asarray(ds.images[:32]), "labels": jnp.asarray(ds.labels[:32]),
             "cue": jnp.ones(32, bool)}
    state = training.TrainState.create(model.apply, c, optax.sgd(1.0), jax.random.PRNGKey(5))
    new_state, _ = curve.curve_train_step(state, batch, a, b, data.box_cue(10))
    _, t_key = jax.random.split(state.key)
    t = float(jax.random.uniform(t_key))
    x = training.cued_inputs(data.box_cue(10), batch)

    def loss_at(params):  # loss as a function of the model's own parameters at path(t)
        logits, _ = model.apply({"params": params, "batch_stats": c["batch_stats"]}, x,
                                train=True, mutable=["batch_stats"])
        return training.cross_entropy(logits, batch["labels"])

    point = paths.bezier(a["params"], c["params"], b["params"])(t)
    expected = jax.tree.map(lambda g: -curve.control_weight_factor(t) * g,
                            jax.grad(loss_at)(point))
    update = jax.tree.map(jnp.subtract, new_state.params, c["params"])
    chex.assert_trees_all_close(update, expected, atol=1e-5, rtol=1e-4)
    assert not np.array_equal(new_state.key, state.key)


def test_fit_midpoint_lowers_the_loss_and_resumes(tmp_path):
    model, a, b, c = _models()
    ds = data.load("shapes10", "train", num_examples=256)
    kwargs = dict(cue_proportion=1.0, epochs=3, learning_rate=0.05, step_every_epochs=10,
                  batch_size=64, progress=False)
    fitted = curve.fit_midpoint(model.apply, a, b, c, ds, tmp_path / "m", **kwargs)
    history = fitted["history"]
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]
    again = curve.fit_midpoint(model.apply, a, b, c, ds, tmp_path / "m", **kwargs)
    chex.assert_trees_all_equal(again["control"]["params"], fitted["control"]["params"])
