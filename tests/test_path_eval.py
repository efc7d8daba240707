"""The path evaluator: strategies agree with a Python loop, BN policies match direct
computations, self-paths have no barrier, the memory budget chunks the points, and splitting
points or batches over 8 devices equals one device."""

import os
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, data, models, paths, training
from mmc_jax.connectivity import path_eval
from mmc_jax.reporting import timing

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    model = models.create("cnn4", 10, width=0.25)
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    # Distinct running statistics, so that BN policies differ.
    b = {**b, "batch_stats": jax.tree.map(lambda s: s + 0.3, b["batch_stats"])}
    train = data.load("shapes10", "train", num_examples=120)
    test = data.load("shapes10", "test", num_examples=50)
    return model, a, b, train, test


def _loop(model, path, ts, test, bn, train, conditions):
    """Reference: one point at a time, BN settled by the same policy, plain Python loop."""
    stacked = path_eval.stack_batches(train, 40, None, pad=False)
    bn_images = data.normalize(jnp.asarray(stacked["images"]))
    out = []
    for t in ts:
        variables = path_eval.settle_batch_stats(model.apply, path(t), bn_images, bn)
        out.append(
            training.evaluate(
                model.apply,
                variables,
                test,
                jax.random.key(0),
                conditions=conditions,
                batch_size=50,
            )
        )
    return out


@pytest.mark.parametrize(
    "strategy,chunk", [("map", None), ("map", 2), ("vmap", None), ("vmap", 2), ("shard_map", None)]
)
def test_strategies_agree_with_a_python_loop(setup, strategy, chunk):
    model, a, b, train, test = setup
    path = paths.linear(a, b)
    ts = paths.grid(4)
    conditions = ("nocue", "cue")  # deterministic conditions: comparable across code paths
    result = path_eval.evaluate_path(
        model.apply,
        path,
        ts,
        test,
        conditions=conditions,
        bn="recompute",
        bn_set=train,
        bn_batches=None,
        batch_size=40,
        strategy=strategy,
        chunk_size=chunk,
    )
    reference = _loop(model, path, ts, test, "recompute", train, conditions)
    for c in conditions:
        np.testing.assert_allclose(
            result.metrics[c]["loss"], [r[c]["loss"] for r in reference], atol=1e-4, rtol=1e-4
        )
        np.testing.assert_allclose(
            result.metrics[c]["acc"], [r[c]["acc"] for r in reference], atol=1e-6
        )


def test_random_conditions_are_identical_across_strategies(setup):
    model, a, b, train, test = setup
    kwargs = dict(bn="interpolate", batch_size=25, key=jax.random.PRNGKey(3))
    ts = paths.grid(3)
    results = [
        path_eval.evaluate_path(model.apply, paths.linear(a, b), ts, test, strategy=s, **kwargs)
        for s in ("map", "vmap")
    ]
    for c in data.CONDITIONS:
        np.testing.assert_allclose(
            results[0].metrics[c]["loss"], results[1].metrics[c]["loss"], atol=1e-4
        )


def test_recompute_over_one_batch_gives_that_batchs_statistics(setup):
    model, a, _, train, _ = setup
    x = data.normalize(jnp.asarray(train.images[:40]))
    settled = path_eval.settle_batch_stats(model.apply, a, x[None], "recompute")
    train_mode, _ = model.apply(a, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(model.apply(settled, x, train=False), train_mode, atol=1e-4)
    # Two identical batches: the cumulative average is the same.
    twice = path_eval.settle_batch_stats(model.apply, a, jnp.stack([x, x]), "recompute")
    chex.assert_trees_all_close(twice["batch_stats"], settled["batch_stats"], atol=1e-5)


def test_interpolate_ema_is_a_pytorch_style_ema_without_reset(setup):
    model, a, _, train, _ = setup
    xs = data.normalize(jnp.asarray(train.images[:120])).reshape(3, 40, 32, 32, 3)
    settled = path_eval.settle_batch_stats(model.apply, a, xs, "interpolate_ema")
    stats = a["batch_stats"]
    for x in xs:  # running = 0.9 running + 0.1 batch (PyTorch momentum 0.1), from a's stats
        batch = path_eval.settle_batch_stats(model.apply, a, x[None], "recompute")["batch_stats"]
        stats = jax.tree.map(lambda r, s: 0.9 * r + 0.1 * s, stats, batch)
    chex.assert_trees_all_close(settled["batch_stats"], stats, atol=1e-5)
    assert path_eval.bn_momentum(model.apply, a, xs[0]) == pytest.approx(0.9, abs=1e-5)
    unchanged = path_eval.settle_batch_stats(model.apply, a, xs, "interpolate")
    chex.assert_trees_all_equal(unchanged, a)


def test_path_from_a_model_to_itself_has_no_barrier(setup):
    model, a, _, train, test = setup
    result = path_eval.evaluate_path(
        model.apply, paths.linear(a, a), paths.grid(5), test, bn="interpolate"
    )
    for c in data.CONDITIONS:
        assert result.barriers(c)["loss"] == pytest.approx(0.0, abs=1e-5)
        assert result.barriers(c)["acc"] == pytest.approx(0.0, abs=1e-6)
    summary = result.to_json("linear")
    assert summary["path"] == "linear" and len(summary["ts"]) == 5
    assert set(summary["conditions"]["randimg"]) == {"acc", "loss", "barrier", "integral"}


def test_another_path_of_the_same_model_reuses_the_compiled_evaluation(setup):
    """The second path (other endpoints, other BN data, an equal but distinct model object)
    is neither traced nor compiled again, and gives what a fresh compilation gives."""
    model, a, b, train, test = setup
    kwargs = dict(conditions=("nocue", "randcue"), bn="recompute", bn_batches=2, batch_size=40)
    path_eval.evaluate_path(
        model.apply, paths.linear(a, b), paths.grid(3), test, bn_set=train, **kwargs
    )
    events = []
    listen = lambda event, duration, **_: events.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        other_model = models.create("cnn4", 10, width=0.25)
        other_train = data.load("shapes10", "train", num_examples=120, seed=1)
        again = path_eval.evaluate_path(
            other_model.apply,
            paths.linear(b, a),
            paths.grid(3),
            test,
            bn_set=other_train,
            key=jax.random.PRNGKey(3),
            **kwargs,
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    compiled = [e for e in events if e in timing.COMPILE_EVENTS and "backend_compile" in e]
    assert not compiled
    path_eval._COMPILED.clear()
    fresh = path_eval.evaluate_path(
        other_model.apply,
        paths.linear(b, a),
        paths.grid(3),
        test,
        bn_set=other_train,
        key=jax.random.PRNGKey(3),
        **kwargs,
    )
    for c in ("nocue", "randcue"):
        np.testing.assert_allclose(again.metrics[c]["loss"], fresh.metrics[c]["loss"], rtol=1e-6)
        np.testing.assert_array_equal(again.metrics[c]["acc"], fresh.metrics[c]["acc"])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"strategy": "pmap"}, "unknown strategy 'pmap'"),
        ({"bn": "reset"}, "unknown BN policy 'reset'"),
        ({"bn": "recompute"}, "needs bn_set"),
        ({"bn": "interpolate", "conditions": ("nocue", "flip")}, "unknown condition 'flip'"),
    ],
)
def test_bad_arguments(setup, kwargs, message):
    model, a, b, _, test = setup
    with pytest.raises(InputError, match=message):
        path_eval.evaluate_path(model.apply, paths.linear(a, b), paths.grid(3), test, **kwargs)


def test_memory_budget_shrinks_the_chunk_without_changing_the_result(setup):
    model, a, b, train, test = setup
    kwargs = dict(
        conditions=("nocue",), bn="recompute", bn_set=train, batch_size=40, strategy="vmap"
    )
    ts = paths.grid(6)
    whole = path_eval.evaluate_path(model.apply, paths.linear(a, b), ts, test, **kwargs)
    assert whole.chunk_size == 6 and whole.memory_bytes > 0
    budget = whole.memory_bytes // 3
    chunked = path_eval.evaluate_path(
        model.apply, paths.linear(a, b), ts, test, memory_budget=budget, **kwargs
    )
    assert chunked.chunk_size < 6 and chunked.memory_bytes <= budget
    for k in ("loss", "acc"):
        np.testing.assert_allclose(
            chunked.metrics["nocue"][k], whole.metrics["nocue"][k], atol=1e-5
        )
    with pytest.raises(InputError, match="one path point needs .* GiB"):
        path_eval.evaluate_path(
            model.apply, paths.linear(a, b), ts, test, memory_budget=1, **kwargs
        )


SHARD_SCRIPT = """
import jax, numpy as np
from mmc_jax import data, models, paths, training
from mmc_jax.connectivity import path_eval
from mmc_jax.runtime import parallel
assert jax.device_count() == 8, jax.devices()
model = models.create("cnn4", 10, width=0.25)
a = models.init(model, jax.random.key(0), (32, 32, 3))
b = models.init(model, jax.random.key(1), (32, 32, 3))
train = data.load("shapes10", "train", num_examples=80)
test = data.load("shapes10", "test", num_examples=40)
kw = dict(bn="recompute", bn_set=train, batch_size=40, key=jax.random.PRNGKey(1))
ts = paths.grid(11)
one_device = parallel.data_mesh(jax.devices()[:1])
one = path_eval.evaluate_path(model.apply, paths.linear(a, b), ts, test, strategy="map",
                              mesh=one_device, **kw)
by_points = path_eval.evaluate_path(model.apply, paths.linear(a, b), ts, test,
                                    strategy="shard_map", **kw)
by_data = path_eval.evaluate_path(model.apply, paths.linear(a, b), ts, test, strategy="map",
                                  **kw)  # batches of 40 split over the 8 devices
for many in (by_points, by_data):
    for c in data.CONDITIONS:
        np.testing.assert_allclose(many.metrics[c]["loss"], one.metrics[c]["loss"], atol=1e-4)
        np.testing.assert_allclose(many.metrics[c]["acc"], one.metrics[c]["acc"], atol=1e-6)
key = jax.random.PRNGKey(2)
single = training.evaluate(model.apply, a, test, key, batch_size=40, mesh=one_device)
split = training.evaluate(model.apply, a, test, key, batch_size=40)
for c in data.CONDITIONS:
    np.testing.assert_allclose(split[c]["loss"], single[c]["loss"], atol=1e-5)
    assert split[c]["acc"] == single[c]["acc"]
print("OK")
"""


@pytest.mark.slow
def test_points_or_data_split_over_8_devices_equal_one_device(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "MMC_JAX_CACHE": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", SHARD_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


def test_permuted_linear_path_to_a_permuted_copy_has_no_barrier(setup):
    from mmc_jax import permute

    model, a, _, _, test = setup
    spec = permute.spec_for(model, a)
    rng = np.random.default_rng(0)
    shuffled = permute.apply(spec, {p: rng.permutation(n) for p, n in spec.sizes.items()}, a)
    perm = permute.weight_matching(spec, a, shuffled, jax.random.PRNGKey(0))
    path = paths.linear(a, permute.apply(spec, perm, shuffled))
    chex.assert_trees_all_close(path(0.5), a, atol=1e-6)  # the whole path is the model itself
    aligned = path_eval.evaluate_path(
        model.apply, path, paths.grid(5), test, bn="interpolate", conditions=("nocue",)
    )
    assert aligned.barriers("nocue")["loss"] == pytest.approx(0.0, abs=1e-5)
    assert aligned.barriers("nocue")["acc"] == pytest.approx(0.0, abs=1e-6)


def test_an_evaluation_in_saved_parts_equals_one_call_and_resumes_from_its_parts(setup, tmp_path):
    """Parts give the numbers of one call; saved parts are reused as they are (a rerun
    after a kill computes only the missing ones); other points clear the store."""
    model, a, b, train, test = setup
    kwargs = dict(
        conditions=("nocue", "randimg"), bn="recompute", bn_set=train, bn_batches=2, batch_size=40
    )
    path, ts = paths.linear(a, b), paths.grid(7)
    whole = path_eval.evaluate_path(model.apply, path, ts, test, **kwargs)
    store = tmp_path / "parts"
    parts = path_eval.evaluate_path(model.apply, path, ts, test, store=store, part_size=3, **kwargs)
    assert sorted(p.name for p in store.glob("part_*")) == [
        "part_00000.npz",
        "part_00001.npz",
        "part_00002.npz",
    ]
    for c in kwargs["conditions"]:
        for k in ("loss", "acc"):
            np.testing.assert_allclose(parts.metrics[c][k], whole.metrics[c][k], atol=1e-6)
    # "Killed" after the first part: the second and third are computed again, the first
    # is read back (here altered, to show that it is not recomputed).
    (store / "part_00001.npz").unlink()
    (store / "part_00002.npz").unlink()
    saved = dict(np.load(store / "part_00000.npz"))
    saved["nocue/loss"] = saved["nocue/loss"] + 100.0
    np.savez(store / "part_00000.npz", **saved)
    resumed = path_eval.evaluate_path(
        model.apply, path, ts, test, store=store, part_size=3, **kwargs
    )
    np.testing.assert_allclose(
        resumed.metrics["nocue"]["loss"][:3], whole.metrics["nocue"]["loss"][:3] + 100.0, atol=1e-5
    )
    np.testing.assert_allclose(
        resumed.metrics["nocue"]["loss"][3:], whole.metrics["nocue"]["loss"][3:], atol=1e-6
    )
    other = path_eval.evaluate_path(
        model.apply, path, paths.grid(4), test, store=store, part_size=3, **kwargs
    )
    np.testing.assert_allclose(
        other.metrics["nocue"]["loss"][[0, -1]], whole.metrics["nocue"]["loss"][[0, -1]], atol=1e-6
    )


def test_redraw_gives_each_point_its_own_random_conditions(setup):
    """The paper's code draws rand-cue and rand-image anew at every evaluation; redraw=True
    does so per point (the same draws for the same t), the default keeps one draw for all."""
    model, a, _, _, test = setup
    path = paths.linear(a, a)  # one model at every point: differences are the draws alone
    kwargs = dict(bn="interpolate", batch_size=25, strategy="map")
    ts = [0.0, 0.5, 1.0]
    same = path_eval.evaluate_path(model.apply, path, ts, test, **kwargs)
    fresh = path_eval.evaluate_path(model.apply, path, ts, test, redraw=True, **kwargs)
    alone = path_eval.evaluate_path(model.apply, path, [0.5], test, redraw=True, **kwargs)
    for c in ("nocue", "cue"):  # no random draw: unchanged
        np.testing.assert_allclose(fresh.metrics[c]["loss"], same.metrics[c]["loss"], atol=1e-6)
    for c in ("randcue", "randimg"):
        assert np.ptp(same.metrics[c]["loss"]) == 0
        assert np.ptp(fresh.metrics[c]["loss"]) > 1e-5
        assert fresh.metrics[c]["loss"][1] == pytest.approx(alone.metrics[c]["loss"][0], abs=1e-6)
