"""Fine-tuning methods: LLRT leaves the features untouched, one CBFT iteration in code mode
equals the two optimizer steps written out by hand, paired batches follow the code's zip."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmc_jax import InputError, data, finetune, models, training
from mmc_jax.finetune import objectives


def _cbft_step(state, batch, epoch_index, anchor, cue, config, num_classes):
    """``finetune.cbft_step`` compiled, as the library runs it."""
    step = functools.partial(finetune.cbft_step, cue=cue, config=config, num_classes=num_classes)
    return jax.jit(step)(state, batch, epoch_index, anchor)


@pytest.fixture(scope="module")
def setup():
    model = models.create("cnn4", 10, width=0.25, conv_impl="xla")
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    train = data.load("shapes10", "train", num_examples=300)
    return model, variables, train


def test_paired_iterator_zips_clean_and_cued_batches(setup):
    _, _, train = setup
    clean, cued = finetune.draw_subsets(train, 100, 300, seed=0)
    assert len(clean) == 100 and len(cued) == 300 and clean.max() < len(train)
    it = finetune.paired_iterator(train, clean, cued, 32, seed=0)
    batches = list(it.epoch(0))
    assert it.steps_per_epoch == 4 == len(batches)  # ceil(100 / 32): the clean set ends it
    assert [len(b["labels"]) for b in batches] == [32, 32, 32, 4]
    assert all(len(b["cue_labels"]) == 32 for b in batches)
    with pytest.raises(InputError, match="n_clean must be in"):
        finetune.draw_subsets(train, 10_000, 10, seed=0)


def test_llrt_leaves_the_feature_extractor_untouched(setup, tmp_path):
    model, variables, train = setup
    clean, _ = finetune.draw_subsets(train, 120, 10, seed=0)
    config = finetune.FinetuneConfig.of(
        optim={"batch_size": 64}, llrt={"batch_size": 64, "epochs": 3}
    )
    new, history = finetune.llrt(
        model.apply, variables, train, clean, 10, config, tmp_path, progress=False
    )
    body = lambda v: {k: x for k, x in v["params"].items() if k != "classifier"}  # noqa: E731
    chex.assert_trees_all_equal(body(new), body(variables))
    chex.assert_trees_all_equal(new["batch_stats"], variables["batch_stats"])
    assert not np.array_equal(
        new["params"]["classifier"]["dense"]["kernel"],
        variables["params"]["classifier"]["dense"]["kernel"],
    )
    assert len(history) == 3


def test_cbft_code_mode_iteration_equals_two_sequential_steps(setup):
    model, variables, train = setup
    config = finetune.FinetuneConfig.of(optim={"learning_rate": 0.05}, warmup_epochs=0)
    anchor = jax.tree.map(lambda x: x + 0.01, variables)
    optim_tx = training.sgd(0.05, 0.9, 1e-4)
    state = training.TrainState.create(model.apply, variables, optim_tx, jax.random.PRNGKey(3))
    batch = {
        "images": jnp.asarray(train.images[:32]),
        "labels": jnp.asarray(train.labels[:32]),
        "cue_images": jnp.asarray(train.images[32:64]),
        "cue_labels": jnp.asarray(train.labels[32:64]),
    }
    new, losses = _cbft_step(state, batch, jnp.asarray(1), anchor["params"], train.cue, config, 10)
    assert int(new.step) == 1 and set(losses) == {"barrier", "ce", "invariance"}

    # By hand: barrier step, then cross-entropy + invariance step, one shared optimizer state.
    key, step_key = jax.random.split(state.key)
    x = data.normalize(batch["images"])
    xc = train.cue.add(data.normalize(batch["cue_images"]), batch["cue_labels"])
    ctx = objectives.Context(
        variables["batch_stats"],
        objectives.Batch(x, batch["labels"]),
        objectives.Batch(xc, batch["cue_labels"]),
        anchor["params"],
        step_key,
    )
    barrier = objectives.barrier_loss(model.apply)
    g1, aux1 = jax.jit(jax.grad(barrier, has_aux=True))(variables["params"], ctx)
    u1, opt = optim_tx.update(g1, state.opt_state, variables["params"])
    p1 = optax.apply_updates(variables["params"], u1)

    def main(params, stats):
        # One clean pass (logits and features), then one cued pass, like the paper's code.
        (logits, z), upd = model.apply(
            {"params": params, "batch_stats": stats},
            x,
            train=True,
            return_features=True,
            mutable=["batch_stats"],
        )
        (_, zc), upd = model.apply(
            {"params": params, "batch_stats": upd["batch_stats"]},
            xc,
            train=True,
            return_features=True,
            mutable=["batch_stats"],
        )
        inv = 0.0
        for k in range(10):  # classes present in both batches (masked means, jit-friendly)
            a, b = batch["labels"] == k, batch["cue_labels"] == k
            ma = (z * a[:, None]).sum(0) / jnp.maximum(a.sum(), 1)
            mb = (zc * b[:, None]).sum(0) / jnp.maximum(b.sum(), 1)
            term = jnp.sum((ma / jnp.linalg.norm(ma) - mb / jnp.linalg.norm(mb)) ** 2)
            inv += jnp.where(a.any() & b.any(), term, 0.0)
        ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(32), batch["labels"]])
        return ce + inv / 10, upd["batch_stats"]

    g2, stats2 = jax.jit(jax.grad(main, has_aux=True))(p1, aux1["batch_stats"])
    u2, opt = optim_tx.update(g2, opt, p1)
    p2 = optax.apply_updates(p1, u2)
    chex.assert_trees_all_close(new.params, p2, atol=1e-6)
    chex.assert_trees_all_close(new.batch_stats, stats2, atol=1e-6)
    chex.assert_trees_all_equal(new.key, key)


def test_bad_finetune_config():
    with pytest.raises(InputError, match="unknown CBFT mode 'both'"):
        finetune.FinetuneConfig(cbft_mode="both")
    with pytest.raises(InputError, match="learning_rate must be > 0"):
        finetune.FinetuneConfig.of(optim={"learning_rate": 0.0})


def test_cbft_without_barrier_is_one_main_step(setup):
    """barrier_weight = 0 (Table 3, "w/o L_B"): the code mode's barrier step is skipped, so
    the parameters move exactly as one cross-entropy step (λ = 0 in the warm-up epoch)."""
    model, variables, train = setup
    config = finetune.FinetuneConfig(barrier_weight=0.0)
    state = training.TrainState.create(
        model.apply, variables, training.sgd(0.05, 0.9, 1e-4), jax.random.PRNGKey(3)
    )
    batch = {
        "images": jnp.asarray(train.images[:32]),
        "labels": jnp.asarray(train.labels[:32]),
        "cue_images": jnp.asarray(train.images[32:64]),
        "cue_labels": jnp.asarray(train.labels[32:64]),
    }
    new, losses = _cbft_step(
        state, batch, jnp.asarray(0), variables["params"], train.cue, config, 10
    )
    assert "barrier" not in losses and int(new.step) == 1
    naive, _ = jax.jit(functools.partial(finetune.naive_step, cue=train.cue))(state, batch)
    chex.assert_trees_all_close(new.params, naive.params, atol=1e-6)
    with_barrier, _ = _cbft_step(
        state, batch, jnp.asarray(0), variables["params"], train.cue, finetune.FinetuneConfig(), 10
    )
    assert not np.allclose(with_barrier.params["conv0"]["kernel"], new.params["conv0"]["kernel"])
    with pytest.raises(InputError, match="barrier_weight must be >= 0"):
        finetune.FinetuneConfig(barrier_weight=-1.0)


def test_the_whole_clean_set_is_each_image_once_and_smaller_sizes_draw_with_replacement(setup):
    _, _, train = setup
    whole, cued = finetune.draw_subsets(train, len(train), 50, seed=3)
    assert sorted(whole) == list(range(len(train))) and len(cued) == 50
    drawn, _ = finetune.draw_subsets(train, len(train) - 1, 50, seed=3)
    assert len(np.unique(drawn)) < len(drawn)  # with replacement, as the paper's code
    again, _ = finetune.draw_subsets(train, len(train), 50, seed=3)
    np.testing.assert_array_equal(whole, again)


def test_naive_finetuning_iterates_the_clean_set_alone(setup, tmp_path):
    """The code's naive FT loops over its clean loader: more clean than cued samples still
    give ceil(n_clean / batch) steps per epoch (a zip with the cued set would stop early)."""
    model, variables, train = setup
    clean, cued = finetune.draw_subsets(train, 96, 32, seed=0)
    iterator = finetune.paired_iterator(train, clean, cued, 32, seed=0)
    assert iterator.steps_per_epoch == 1  # CBFT's zip: the cued set ends it
    config = finetune.FinetuneConfig.of(optim={"epochs": 2, "batch_size": 32})
    _, history = finetune.naive_finetune(
        model.apply, variables, iterator, train.cue, config, tmp_path, progress=False
    )
    assert [r["step"] for r in history] == [3, 6]


@pytest.mark.parametrize("when", finetune.CUED_STATISTICS)
def test_cbft_without_invariance_mixes_cued_statistics_in_as_the_code(setup, when):
    """With λ = 0 after warm-up, the code's CE step still runs the cued pass, whose batch
    statistics enter the running averages ("after_warmup", the default); "with_invariance"
    keeps them out. During warm-up neither does."""
    model, variables, train = setup
    clean, cued = finetune.draw_subsets(train, 32, 32, seed=0)
    batch = next(finetune.paired_iterator(train, clean, cued, 32, seed=0).epoch(0))
    config = finetune.FinetuneConfig.of(
        invariance_weight=0.0, barrier_weight=0.0, cued_statistics=when
    )
    state = training.TrainState.create(
        model.apply, variables, config.optim.sgd(0.01), jax.random.PRNGKey(0)
    )
    clean_inputs, _ = finetune.paired_batches(train.cue, batch)

    def stats_after(images):  # train-mode passes from θ_C's statistics, in order
        stats = variables["batch_stats"]
        for x in images:
            _, upd = model.apply(
                {"params": variables["params"], "batch_stats": stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            stats = upd["batch_stats"]
        return stats

    cued_inputs = finetune.paired_batches(train.cue, batch)[1].inputs
    clean_only = stats_after([clean_inputs[0]])
    with_cued = stats_after([clean_inputs[0], cued_inputs])
    anchor = variables["params"]
    warm, _ = _cbft_step(state, batch, jnp.int32(0), anchor, train.cue, config, 10)
    after, _ = _cbft_step(state, batch, jnp.int32(1), anchor, train.cue, config, 10)
    chex.assert_trees_all_close(warm.batch_stats, clean_only, atol=1e-6)
    expected = with_cued if when == "after_warmup" else clean_only
    chex.assert_trees_all_close(after.batch_stats, expected, atol=1e-6)
    assert not np.allclose(
        jax.tree.leaves(with_cued)[0], jax.tree.leaves(clean_only)[0]
    )  # the cued batch does move them


def test_a_partly_cued_fine_tuning_set_stamps_the_first_p_of_each_class(setup):
    # The paper code's D_C at --cue_proportion p: the cued loader's samples outside the first
    # p of their class are clean, in every method's batches.
    _, _, train = setup
    clean, cued = finetune.draw_subsets(train, 100, 300, seed=0)
    p = 0.5
    flags = finetune.cued_flags(train, cued, p)
    np.testing.assert_array_equal(flags, data.cue_mask(train.labels, p)[cued])
    assert 0 < flags.sum() < len(cued)
    it = finetune.paired_iterator(train, clean, cued, 32, seed=0, cue_proportion=p)
    order = it.cued.order(0)
    batch = next(iter(it.epoch(0)))
    np.testing.assert_array_equal(batch["cue_flags"], flags[order[:32]])
    _, cued_batch = jax.jit(finetune.paired_batches, static_argnums=0)(train.cue, batch)
    x = data.normalize(batch["cue_images"])
    stamped = np.asarray(train.cue.add(x, batch["cue_labels"]))
    on = batch["cue_flags"]
    got = np.asarray(cued_batch.inputs)
    np.testing.assert_allclose(got[on], stamped[on], atol=1e-6)
    np.testing.assert_allclose(got[~on], np.asarray(x)[~on], atol=1e-6)
    assert np.abs(stamped[~on] - np.asarray(x)[~on]).max() > 0.5  # the cue is really absent
    # p = 1 is the fully cued set, with no flags at all.
    full = next(iter(finetune.paired_iterator(train, clean, cued, 32, seed=0).epoch(0)))
    assert "cue_flags" not in full
    mixed = finetune.groups.mixed_arrays(train, clean, cued, p)
    np.testing.assert_array_equal(mixed["cue"], np.concatenate([np.zeros(100, bool), flags]))


def test_dfr_without_cued_samples_is_a_clear_error(setup):
    model, variables, train = setup
    clean, cued = finetune.draw_subsets(train, 100, 300, seed=0)
    config = finetune.FinetuneConfig(dfr_subsets=1)
    with pytest.raises(InputError, match="group-balanced set is empty"):
        finetune.dfr_finetune(
            model.apply, variables, train, clean, cued, 10, config, cue_proportion=0.0
        )
