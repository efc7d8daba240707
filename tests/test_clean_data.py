"""Clean data means cue-free data everywhere (dominoes included), and one evaluation kernel.

Regression tests: before ``data.clean_inputs`` was used everywhere, Dominoes fine-tuning
batches, LLRT features, BatchNorm statistics along paths and activation-matching batches all
saw the paired cue image on top; and ``training.evaluate`` and the path evaluator drew
different counterfactual sets for the same key.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import data, finetune, models, paths, permute, training
from mmc_jax.connectivity import path_eval


@pytest.fixture(scope="module")
def dominoes():
    """A small embedded Dominoes set (shapes10 on shapes10, 64×32) and a copy whose stored
    cue halves are replaced by noise: clean data must not see the difference."""
    train = data.load("dominoes", "train", top="shapes10", bottom="shapes10", num_examples=256)
    rng = np.random.default_rng(0)
    images = np.array(train.images)
    images[:, :32] = rng.integers(0, 256, images[:, :32].shape, dtype=np.uint8)
    noisy = data.Dataset(images, train.labels, train.num_classes, "dominoes", cue=train.cue)
    model = models.create("cnn4", 10, width=0.25, conv_impl="xla")
    variables = models.init(model, jax.random.key(0), (64, 32, 3))
    return train, noisy, model, variables


def test_clean_inputs_blank_domino_tops_and_keep_box_images(dominoes):
    train, _, _, _ = dominoes
    x = data.clean_inputs(train.cue, train.images[:8])
    assert float(jnp.abs(x[:, :32]).max()) == 0.0
    chex.assert_trees_all_equal(x[:, 32:], data.normalize(train.images[:8])[:, 32:])
    shapes = data.load("shapes10", "test", num_examples=8)
    chex.assert_trees_all_equal(
        data.clean_inputs(shapes.cue, shapes.images), data.normalize(shapes.images)
    )


def test_dominoes_fine_tuning_batches_have_empty_tops(dominoes):
    train, _, _, _ = dominoes
    clean, cued = finetune.draw_subsets(train, 64, 64, seed=0)
    batch = next(finetune.paired_iterator(train, clean, cued, 32, seed=0).epoch(0))
    clean_batch, cued_batch = finetune.paired_batches(train.cue, batch)
    assert float(jnp.abs(clean_batch.inputs[:, :32]).max()) == 0.0
    assert float(cued_batch.inputs[:, :32].min()) >= 0.0  # the cue, shown in [0, 1]
    assert float(cued_batch.inputs[:, :32].max()) > 0.5


def _batch(ds, n=32):
    return {
        "images": jnp.asarray(ds.images[:n]),
        "labels": jnp.asarray(ds.labels[:n]),
        "cue_images": jnp.asarray(ds.images[n : 2 * n]),
        "cue_labels": jnp.asarray(ds.labels[n : 2 * n]),
    }


def test_naive_and_cbft_steps_ignore_the_stored_cue_of_clean_images(dominoes):
    train, noisy, model, variables = dominoes
    state = training.TrainState.create(
        model.apply, variables, training.sgd(0.05, 0.9, 1e-4), jax.random.PRNGKey(1)
    )
    naive = jax.jit(functools.partial(finetune.naive_step, cue=train.cue))
    a, _ = naive(state, _batch(train))
    b, _ = naive(state, _batch(noisy) | {"cue_images": _batch(train)["cue_images"]})
    chex.assert_trees_all_close(a.params, b.params, atol=1e-6)
    config = finetune.FinetuneConfig(warmup_epochs=0)
    mixed = _batch(noisy) | {"cue_images": _batch(train)["cue_images"]}
    cbft = jax.jit(
        functools.partial(finetune.cbft_step, cue=train.cue, config=config, num_classes=10)
    )
    a, _ = cbft(state, _batch(train), jnp.asarray(1), variables["params"])
    b, _ = cbft(state, mixed, jnp.asarray(1), variables["params"])
    chex.assert_trees_all_close(a.params, b.params, atol=1e-6)


def test_llrt_features_ignore_the_stored_cue(dominoes):
    train, noisy, model, variables = dominoes
    np.testing.assert_allclose(
        finetune.features_of(model.apply, variables, train.images[:64], train.cue),
        finetune.features_of(model.apply, variables, noisy.images[:64], noisy.cue),
        atol=1e-6,
    )


def test_path_batchnorm_statistics_come_from_clean_images(dominoes):
    train, noisy, model, variables = dominoes
    other = models.init(model, jax.random.key(1), (64, 32, 3))
    kwargs = dict(conditions=("nocue", "cue"), bn="recompute", bn_batches=2, batch_size=64)
    a = path_eval.evaluate_path(
        model.apply,
        paths.linear(variables, other),
        [0.0, 0.5],
        train.take(np.arange(64)),
        bn_set=train,
        **kwargs,
    )
    b = path_eval.evaluate_path(
        model.apply,
        paths.linear(variables, other),
        [0.0, 0.5],
        train.take(np.arange(64)),
        bn_set=noisy,
        **kwargs,
    )
    chex.assert_trees_all_close(a.metrics, b.metrics, atol=1e-5)


def test_activation_matching_on_clean_batches_ignores_the_stored_cue(dominoes):
    train, noisy, model, variables = dominoes
    other = models.init(model, jax.random.key(1), (64, 32, 3))
    spec = permute.spec_for(model, variables)

    def batches(ds):
        return [data.clean_inputs(ds.cue, x) for x in data.batching.sample_batches(ds, 64, 2)]

    for match in (permute.activation_matching, permute.paper_activation_matching):
        chex.assert_trees_all_equal(
            match(spec, model, variables, other, batches(train)),
            match(spec, model, variables, other, batches(noisy)),
        )


@pytest.mark.parametrize("random_from", data.RANDOM_FROM)
def test_path_endpoints_equal_training_evaluate(random_from):
    model = models.create("cnn4", 10, width=0.25, conv_impl="xla")
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    test = data.load("shapes10", "test", num_examples=150)
    key = jax.random.PRNGKey(7)
    result = path_eval.evaluate_path(
        model.apply,
        paths.linear(a, b),
        [0.0, 1.0],
        test,
        bn="interpolate",
        batch_size=64,
        key=key,
        random_from=random_from,
    )
    for i, variables in enumerate((a, b)):
        direct = training.evaluate(
            model.apply, variables, test, key, batch_size=64, random_from=random_from
        )
        for c in data.CONDITIONS:
            assert result.metrics[c]["acc"][i] == pytest.approx(direct[c]["acc"], abs=1e-6)
            assert result.metrics[c]["loss"][i] == pytest.approx(direct[c]["loss"], rel=1e-5)
    # A condition's draw depends on its name, not on which others are evaluated with it.
    alone = training.evaluate(
        model.apply,
        a,
        test,
        key,
        batch_size=64,
        conditions=("randimg", "randcue"),
        random_from=random_from,
    )
    full = training.evaluate(model.apply, a, test, key, batch_size=64, random_from=random_from)
    assert alone == {c: pytest.approx(full[c]) for c in ("randimg", "randcue")}


def test_random_domino_cues_and_images_come_from_the_pool():
    cue = data.DominoCue(rows=4)
    x = jnp.zeros((6, 8, 4, 3))  # the batch: all-zero images
    pool = jnp.broadcast_to(
        jnp.arange(1, 11, dtype=jnp.float32)[:, None, None, None] / 20, (10, 8, 4, 3)
    )
    key = jax.random.key(0)
    y = jnp.zeros(6, jnp.int32)
    randcue = data.counterfactual(cue, "randcue", x, y, key, pool)
    drawn = np.asarray(randcue[:, 0, 0, 0]) * 2 - 1  # undo the [0, 1] display of the cue
    members = np.arange(1, 11) / 20
    assert np.abs(drawn[:, None] - members[None]).min(1).max() < 1e-6
    assert np.unique(np.round(drawn, 4)).size > 1
    assert float(jnp.abs(randcue[:, 4:]).max()) == 0.0  # the batch's own bottoms kept
    randimg = data.counterfactual(cue, "randimg", x, y, key, pool)
    assert float(jnp.abs(randimg[:, :4] - 0.5).max()) == 0.0  # own cue (top 0 → 0.5)
    assert float(randimg[:, 4:].min()) > 0.0  # bottoms from the pool


def test_a_partly_cued_test_set_is_its_cued_and_its_clean_part():
    # cue_proportion < 1 (the paper's fine-tuning script's test sets): the cued conditions
    # stamp the first p of each class; the rest are scored as clean images.
    model = models.create("cnn4", 10, width=0.25, conv_impl="xla")
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    test = data.load("shapes10", "test", num_examples=150)
    key, p = jax.random.PRNGKey(7), 0.6
    mask = data.cue_mask(test.labels, p)

    def scored(dataset, conditions, **kwargs):
        out = training.evaluate(
            model.apply, a, dataset, key, batch_size=64, conditions=conditions, **kwargs
        )
        return {c: out[c]["acc"] * len(dataset) for c in conditions}

    partly = scored(test, ("nocue", "cue"), cue_proportion=p)
    cued, clean = (
        scored(test.take(np.flatnonzero(mask)), ("cue",)),
        scored(test.take(np.flatnonzero(~mask)), ("nocue",)),
    )
    assert partly["cue"] == pytest.approx(cued["cue"] + clean["nocue"], abs=1e-4)
    assert partly["nocue"] == pytest.approx(scored(test, ("nocue",))["nocue"], abs=1e-4)
    none = scored(test, ("nocue", "cue", "randcue"), cue_proportion=0.0)
    assert none["cue"] == none["randcue"] == pytest.approx(none["nocue"])
    # The path evaluator scores the same sets.
    direct = training.evaluate(model.apply, a, test, key, batch_size=64, cue_proportion=p)
    result = path_eval.evaluate_path(
        model.apply,
        paths.linear(a, b),
        [0.0],
        test,
        bn="interpolate",
        batch_size=64,
        key=key,
        cue_proportion=p,
    )
    for c in data.CONDITIONS:
        assert result.metrics[c]["acc"][0] == pytest.approx(direct[c]["acc"], abs=1e-6)
        assert result.metrics[c]["loss"][0] == pytest.approx(direct[c]["loss"], rel=1e-5)
    assert direct["cue"] != training.evaluate(model.apply, a, test, key, batch_size=64)["cue"]
