"""The spurious-correlation baselines pinned to their definitions: DFR's set is balanced per
(class, cue) and only the head changes; JTT upweights exactly the ERM model's errors; Group
DRO's weights follow the exponentiated-gradient update."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmc_jax import InputError, data, finetune, models, training
from mmc_jax.finetune import dfr, group_dro, groups, jtt


@pytest.fixture(scope="module")
def setup():
    model = models.create("cnn4", 10, width=0.25)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    train = data.load("shapes10", "train", num_examples=300)
    clean, cued = finetune.draw_subsets(train, 60, 200, seed=0)
    return model, variables, train, clean, cued


def test_dfr_draws_balance_each_class_between_cued_and_clean_samples():
    rng = np.random.default_rng(0)
    clean_labels = np.array([0, 0, 1, 2, 2, 2])
    cued_labels = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    i, j = dfr.balanced_index(clean_labels, cued_labels, rng)
    for k in range(3):
        expected = min((clean_labels == k).sum(), (cued_labels == k).sum())
        assert (clean_labels[i] == k).sum() == (cued_labels[j] == k).sum() == expected
    assert len(set(i)) == len(i) and len(set(j)) == len(j)  # without replacement


def test_dfr_retrains_the_head_alone(setup):
    model, variables, train, clean, cued = setup
    config = finetune.FinetuneConfig.of(dfr_subsets=2)
    tuned, info = finetune.dfr_finetune(model.apply, variables, train, clean, cued, 10, config)
    head = ("classifier", "dense")
    flat, flat_tuned = (
        {
            "/".join(str(getattr(p, "key", p)) for p in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(v)[0]
        }
        for v in (variables, tuned)
    )
    assert flat.keys() == flat_tuned.keys()
    changed = {k for k in flat if not np.array_equal(flat[k], flat_tuned[k])}
    assert changed == {f"params/{'/'.join(head)}/kernel", f"params/{'/'.join(head)}/bias"}
    labels = np.asarray(train.labels)
    per_class = [min((labels[clean] == k).sum(), (labels[cued] == k).sum()) for k in range(10)]
    assert info["balanced_samples"] == 2 * sum(per_class)


def test_l1_logistic_regression_fits_and_its_l1_term_zeroes_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)  # only feature 0 matters
    w, b = dfr.fit_l1_logistic(x, y, 2, c=1.0)
    assert ((x @ w + b).argmax(1) == y).mean() > 0.95
    w_strong, _ = dfr.fit_l1_logistic(x, y, 2, c=0.01)
    assert np.abs(w_strong[1:]).max() < 1e-6 < np.abs(w[0]).max()  # the noise features: 0


def test_jtt_upweights_exactly_the_erm_models_errors(setup, tmp_path):
    model, variables, train, clean, cued = setup
    arrays = groups.mixed_arrays(train, clean, cued)
    assert arrays["cue"].sum() == len(cued) and not arrays["cue"][: len(clean)].any()
    wrong = jtt.errors(model.apply, variables, arrays, train.cue)
    x = jnp.where(
        arrays["cue"][:, None, None, None],
        train.cue.add(data.normalize(arrays["images"]), arrays["labels"]),
        data.clean_inputs(train.cue, arrays["images"]),
    )
    predicted = np.asarray(model.apply(variables, x, train=False).argmax(-1))
    np.testing.assert_array_equal(wrong, np.flatnonzero(predicted != arrays["labels"]))
    up = jtt.upsampled(arrays, wrong, 5)
    assert len(up["labels"]) == len(arrays["labels"]) + 4 * len(wrong)
    _, info = finetune.jtt_finetune(
        model.apply,
        variables,
        train,
        clean,
        cued,
        finetune.FinetuneConfig.of(optim={"epochs": 1, "batch_size": 32}, jtt_upweight=5),
        tmp_path,
        progress=False,
    )
    assert info["errors"] == len(wrong)  # θ_C is the identification model (0 epochs)
    assert info["clean_errors"] == int((wrong < len(clean)).sum())
    with pytest.raises(InputError, match="whole number"):
        jtt.check_upweight(2.5)


def test_group_dro_weights_follow_the_exponentiated_gradient_update():
    q = jnp.array([0.25, 0.25, 0.25, 0.25])
    losses = jnp.array([1.0, 0.0, 2.0, 0.5])
    counts = jnp.array([100.0, 4.0, 25.0, 1.0])
    got = group_dro.update_weights(q, losses, counts, step_size=0.1, adjustment=2.0)
    expected = np.asarray(q) * np.exp(0.1 * (np.asarray(losses) + 2.0 / np.sqrt(counts)))
    np.testing.assert_allclose(got, expected / expected.sum(), rtol=1e-6)
    # Repeated steps on a fixed loss table move the weight to the worst group.
    for _ in range(500):
        q = group_dro.update_weights(q, losses, counts, step_size=0.1)
    assert int(np.argmax(q)) == 2 and float(q[2]) > 0.99


def test_a_group_dro_step_descends_the_weighted_group_losses(setup):
    model, variables, train, clean, cued = setup
    arrays = groups.mixed_arrays(train, clean, cued)
    counts = jnp.asarray(groups.group_counts(arrays, 10))
    batch = {k: v[40:104] for k, v in arrays.items()}  # clean and cued samples
    tx = optax.sgd(0.1)
    state = group_dro.GroupDROState.create(
        model.apply, variables, tx, jax.random.PRNGKey(0), num_groups=20
    )
    step = jax.jit(group_dro.make_step(train.cue, step_size=0.01, adjustment=0.0))
    new, metrics = step(state, batch, counts)
    x = training.cued_inputs(train.cue, batch)
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    g = 2 * batch["labels"] + batch["cue"]
    per_group = np.array([losses[g == i].mean() if (g == i).any() else 0.0 for i in range(20)])
    q = group_dro.update_weights(state.group_weights, per_group, counts, 0.01)
    chex.assert_trees_all_close(new.group_weights, q, atol=1e-6)
    assert float(metrics["robust_loss"]) == pytest.approx(float(q @ per_group), rel=1e-5)
    # The checkpoint stores the weights with the rest of the state.
    assert "group_weights" in training.checkpoint.state_fields(new)
