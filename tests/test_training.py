"""Training: SGD equals PyTorch's update, loss goes down, checkpoints round-trip bit-exactly,
interrupted-then-resumed runs equal uninterrupted ones, an unreadable latest checkpoint falls
back to the previous one, NaN losses stop the run, bad configs fail clearly."""

import functools
import json
import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import train_config
from mmc_jax import InputError, data, models, training
from mmc_jax.training import loop


def tiny_config(**overrides):
    return train_config(
        **{
            "model": "cnn4",
            "width": 0.25,
            "num_train": 256,
            "num_test": 100,
            "batch_size": 64,
            "epochs": 2,
            "eval_batch_size": 100,
            **overrides,
        }
    )


def test_sgd_matches_pytorch_update_by_hand():
    lr, mu, wd = 0.1, 0.9, 0.01
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    grads = [
        {"w": jnp.array([0.3, 0.1]), "b": jnp.array(-1.0)},
        {"w": jnp.array([-0.2, 0.4]), "b": jnp.array(0.25)},
    ]
    tx = training.sgd(lr, mu, wd)
    opt_state = tx.init(params)
    p = params
    for g in grads:
        updates, opt_state = tx.update(g, opt_state, p)
        p = optax.apply_updates(p, updates)
    # torch.optim.SGD: d = g + wd*θ; buf = μ*buf + d (buf0 = d); θ -= lr*buf
    expected, buf = {k: np.asarray(v, np.float64) for k, v in params.items()}, None
    for g in grads:
        d = {k: np.asarray(g[k]) + wd * expected[k] for k in expected}
        buf = d if buf is None else {k: mu * buf[k] + d[k] for k in d}
        expected = {k: expected[k] - lr * buf[k] for k in expected}
    chex.assert_trees_all_close(p, expected, atol=1e-6)


def test_schedules():
    step = training.schedule("step", 0.1, total_steps=300, steps_per_epoch=2, step_every_epochs=40)
    assert [float(step(s)) for s in (0, 79, 80, 159, 160)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001]
    )
    cosine = training.schedule("cosine", 0.2, total_steps=100, steps_per_epoch=10)
    assert float(cosine(0)) == pytest.approx(0.2) and float(cosine(50)) == pytest.approx(0.1)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-8)


def test_train_step_applies_the_cue_only_where_flagged():
    cue = data.box_cue(10)
    images = np.full((4, 32, 32, 3), 100, np.uint8)
    batch = {
        "images": images,
        "labels": np.array([0, 1, 2, 3]),
        "cue": np.array([True, False, True, False]),
    }
    x = training.cued_inputs(cue, batch)
    clean = data.normalize(images)
    chex.assert_trees_all_equal(x[1::2], clean[1::2])
    chex.assert_trees_all_equal(x[0::2], cue.add(clean[0::2], jnp.array([0, 2])))


def test_short_training_lowers_the_loss():
    model = models.create("cnn4", 10, width=0.25)
    config = tiny_config(learning_rate=0.1, weight_decay=0.0, schedule="constant")
    state = training.create_state(config, model, (32, 32, 3), 10)
    ds = data.load("shapes10", "train", num_examples=200)
    batch = {"images": ds.images[:64], "labels": ds.labels[:64], "cue": np.ones(64, bool)}
    step = jax.jit(lambda s, b: training.train_step(s, b, data.box_cue(10)))
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 40


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    config = tiny_config()
    model = models.create("cnn4", 10, width=0.25)
    state = training.create_state(config, model, (32, 32, 3), 4)
    state = state.replace(
        params=jax.tree.map(lambda x: x + 0.123, state.params), step=jnp.asarray(7, jnp.int32)
    )
    with training.RunCheckpoints(tmp_path, config.to_dict()) as ckpt:
        ckpt.save(state, {"history": [{"epoch": 1}], "seconds": 1.5})
    fresh = training.create_state(config, model, (32, 32, 3), 4)
    with training.RunCheckpoints(tmp_path, config.to_dict()) as ckpt:
        restored, meta = ckpt.restore(fresh)
    chex.assert_trees_all_equal(restored.params, state.params)
    chex.assert_trees_all_equal(restored.batch_stats, state.batch_stats)
    chex.assert_trees_all_equal(restored.opt_state, state.opt_state)
    chex.assert_trees_all_equal(restored.key, state.key)
    assert int(restored.step) == 7 and meta == {"history": [{"epoch": 1}], "seconds": 1.5}


def test_restoring_into_another_architecture_is_a_clear_error(tmp_path):
    config = tiny_config()
    state = training.create_state(config, models.create("cnn4", 10, width=0.25), (32, 32, 3), 4)
    with training.RunCheckpoints(tmp_path, config.to_dict()) as ckpt:
        ckpt.save(state, {})
    wider = training.create_state(config, models.create("cnn4", 10, width=0.5), (32, 32, 3), 4)
    with training.RunCheckpoints(tmp_path, config.to_dict()) as ckpt:
        with pytest.raises(InputError, match="does not match the model"):
            ckpt.restore(wider)


@pytest.mark.parametrize("damage", ["garbage", "delete"])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    config = tiny_config()
    state = training.create_state(config, models.create("cnn4", 10, width=0.25), (32, 32, 3), 4)
    with training.RunCheckpoints(tmp_path, config.to_dict(), min_interval_s=0) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(
                state.replace(
                    step=jnp.asarray(step, jnp.int32),
                    params=jax.tree.map(lambda x: x + step, state.params),
                ),
                {"step": step},
            )
    for file in (tmp_path / "checkpoints" / "3" / "state").rglob("*"):
        if file.is_file():
            if damage == "garbage":
                file.write_bytes(b"\x00not a checkpoint")
            else:
                file.unlink()
    with training.RunCheckpoints(tmp_path, config.to_dict()) as ckpt:
        with pytest.warns(UserWarning, match=r"checkpoints/3 cannot be read .* from step 2"):
            restored, meta = ckpt.restore(state)
    assert int(restored.step) == 2 and meta == {"step": 2}
    chex.assert_trees_all_equal(restored.params, jax.tree.map(lambda x: x + 2, state.params))


def test_resume_with_a_different_config_lists_the_fields(tmp_path):
    training.RunCheckpoints(tmp_path, tiny_config().to_dict()).close()
    with pytest.raises(
        InputError,
        match=r"different config \(optim.epochs: 2 -> 5; "
        r"optim.learning_rate: 0.05 -> 0.1\)",
    ):
        training.RunCheckpoints(tmp_path, tiny_config(epochs=5, learning_rate=0.1).to_dict())


def _signal_at_step(monkeypatch, n, sig=signal.SIGTERM):
    """Sends ``sig`` to this process during the n-th training step of the next run (the
    loop records it and stops after that step)."""
    calls, accumulate = [0], loop._accumulate

    def counting(*args):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), sig)
        return accumulate(*args)

    monkeypatch.setattr(loop, "_accumulate", counting)


@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    config = tiny_config(cue_proportion=0.5, epochs=3)
    full = training.train_and_evaluate(config, str(tmp_path / "full"), progress=False)
    # Mid-epoch 2 (step 6), then mid-epoch 3 (step 6 + 4; 4 steps per epoch).
    for stop_at, where in ((6, "epoch 2 step 6"), (4, "epoch 3 step 10")):
        _signal_at_step(monkeypatch, stop_at)
        with pytest.raises(training.Interrupted, match=f"stopped at {where}; rerun"):
            training.train_and_evaluate(config, str(tmp_path / "resumed"), progress=False)
        monkeypatch.undo()
    resumed = training.train_and_evaluate(config, str(tmp_path / "resumed"), progress=False)
    chex.assert_trees_all_equal(resumed["state"].params, full["state"].params)
    chex.assert_trees_all_equal(resumed["state"].batch_stats, full["state"].batch_stats)
    assert resumed["result"]["test"] == full["result"]["test"]
    assert resumed["history"] == full["history"]
    stored = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert stored["data"]["cue_proportion"] == 0.5


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"learning_rate": -0.1}, "learning_rate must be > 0"),
        ({"cue_proportion": 1.2}, r"cue proportion must be in \[0, 1\]"),
        ({"model": "vgg11"}, "unknown model 'vgg11'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"num_train": 10**6}, "num_train 1000000 exceeds"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ],
)
def test_bad_config_values_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        training.train_and_evaluate(tiny_config(**overrides), str(tmp_path), progress=False)
    assert not (tmp_path / "checkpoints").exists()


def test_gradient_clipping_rescales_to_the_global_norm():
    grads = {"w": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}  # global norm 5
    params = jax.tree.map(jnp.zeros_like, grads)
    clipped = training.sgd(1.0, momentum=0.0, weight_decay=0.0, clip_norm=1.0)
    updates, _ = clipped.update(grads, clipped.init(params), params)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -g / 5.0, grads))
    plain = training.sgd(1.0, momentum=0.0, weight_decay=0.0)  # no clipping, no extra state
    assert len(plain.init(params)) == 2 and len(clipped.init(params)) == 3


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(epochs=3)  # 4 steps per epoch
    train, _ = training.load_data(config)
    model = training.create_model(config, train.num_classes)
    iterator = data.EpochIterator(
        {"images": train.images, "labels": train.labels, "cue": np.zeros(len(train), bool)},
        batch_size=64,
        seed=0,
    )
    state = training.create_state(config, model, train.image_shape, 4)
    step = jax.jit(functools.partial(training.train_step, cue=train.cue))

    def diverging(state, batch):  # the loss of the 7th step is NaN
        state, metrics = step(state, batch)
        return state, {**metrics, "loss": jnp.where(state.step == 7, jnp.nan, metrics["loss"])}

    with training.RunCheckpoints(tmp_path, config.to_dict(), min_interval_s=0) as ckpt:
        with pytest.raises(
            training.NonFiniteLoss, match="training loss became NaN or infinite at step 7"
        ):
            training.run_epochs(state, diverging, iterator, ckpt, 3, progress=False)
        assert ckpt.latest_step == 4  # epoch 1; epoch 2 (steps 5-8) was not saved


def test_restore_trained_reads_only_the_variables_and_loads_no_data(tmp_path, monkeypatch):
    config = tiny_config(epochs=1)
    run = training.train_and_evaluate(config, str(tmp_path), progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("restore_trained must not load data or build an optimizer")

    monkeypatch.setattr(data, "load", refuse)
    monkeypatch.setattr(training.optim, "sgd", refuse)
    for stored_shapes in (True, False):  # data.json, then a run from before it existed
        if not stored_shapes:
            (tmp_path / training.saved_model.DATA_SHAPES).unlink()
        model, variables, restored_config = training.restore_trained(tmp_path)
        chex.assert_trees_all_equal(variables, run["state"].variables)
        assert type(model).__name__ == "SmallCNN" and model.num_classes == 10
        assert restored_config.to_dict() == json.loads((tmp_path / "config.json").read_text())


def test_run_epochs_passes_its_constants_as_arguments_of_one_compiled_step(tmp_path):
    config = tiny_config(epochs=1, num_train=128)
    train, _ = training.load_data(config)
    model = training.create_model(config, train.num_classes)
    iterator = data.EpochIterator(
        {"images": train.images, "labels": train.labels}, batch_size=64, seed=0
    )
    step = functools.partial(training.train_step, cue=train.cue)
    jitted = jax.jit(lambda state, batch, c: (step(state, batch)[0], {"c": c["value"]}))
    state = training.create_state(config, model, train.image_shape, 2)
    for value in (1.0, 2.5):
        with training.RunCheckpoints(tmp_path / str(value), config.to_dict()) as ckpt:
            _, meta = training.run_epochs(
                state,
                jitted,
                iterator,
                ckpt,
                1,
                progress=False,
                constants=({"value": jnp.float32(value)},),
            )
        assert meta["history"][0]["train_c"] == value
    assert jitted._cache_size() == 1  # the second value reused the program
