"""Cue-reliance diagnosis: known numbers give the documented verdicts and advice."""

import pytest

from mmc_jax.training import diagnosis


def _metrics(nocue, cue, randcue, randimg, loss=0.5):
    return {
        c: {"acc": a / 100, "loss": loss}
        for c, a in zip(("nocue", "cue", "randcue", "randimg"), (nocue, cue, randcue, randimg))
    }


def test_reliance_measures_and_thresholds():
    r = diagnosis.CueReliance.of(_metrics(62.9, 99.7, 27.2, 79.3))
    assert r.gap == pytest.approx(35.7) and r.reliant()
    assert not diagnosis.CueReliance.of(_metrics(96.8, 100, 82.2, 27.4)).reliant()
    # Each measure alone fails it: a large gap with a low randimg, and the reverse.
    assert not diagnosis.CueReliance.of(_metrics(80, 99, 50, 40)).reliant()
    assert not diagnosis.CueReliance.of(_metrics(60, 99, 45, 90)).reliant()
    with pytest.raises(ValueError, match="randimg"):
        diagnosis.CueReliance.of({"nocue": {"acc": 1.0}})


def test_warning_names_the_numbers_and_the_fix():
    weak = {"cue_model": {"test": _metrics(96.8, 100.0, 82.2, 27.4)}}
    out = diagnosis.diagnose(weak, 0.87, 5e-3, 10, prefix="cue_model.")
    (warning,) = out["warnings"]
    assert not out["cue_reliant"] and out["cue_reliance"]["gap"] == pytest.approx(14.6)
    for text in (
        "gap 14.6 < 20",
        "randimg 27.4 % < 50",
        "cue_model.cue_proportion (now 0.87",
        "auto",
        "cue_model.weight_decay",
    ):
        assert text in warning
    assert "Warning" in diagnosis.markdown(out) and "not cue-reliant" in diagnosis.markdown(out)
    good = {"cue_model": {"test": _metrics(62.9, 99.7, 27.2, 79.3)}}
    assert diagnosis.diagnose(good, 0.87, 5e-3, 10)["warnings"] == []


def test_a_cue_only_model_is_told_to_lower_p():
    out = diagnosis.diagnose(
        {"cue_model": {"test": _metrics(12.0, 100.0, 10.0, 99.0)}}, 0.99, 1e-2, 10
    )
    assert (
        "learned only the cue" in out["warnings"][0]
        and "lower cue_proportion" in out["warnings"][0]
    )


def test_small_lr_fine_tuning_that_drops_the_cue_suggests_a_smaller_clean_set():
    theta_c = _metrics(62.9, 99.7, 27.2, 79.3)
    kept = {
        "cue_model": {"test": theta_c},
        "naive_ft_small": {"test": _metrics(65.0, 98.0, 28.0, 70.0)},
    }
    out = diagnosis.diagnose(kept, 0.87, 5e-3, 10, n_clean=1000)
    assert out["warnings"] == [] and out["small_ft_randimg_drop"] == pytest.approx(9.3)
    dropped = {**kept, "naive_ft_small": {"test": _metrics(75.0, 90.0, 60.0, 40.0)}}
    (warning,) = diagnosis.diagnose(dropped, 0.87, 5e-3, 10, n_clean=1000)["warnings"]
    assert "−39.3 points" in warning and "n_clean (e.g. 500)" in warning


def test_a_model_that_learned_nothing_is_told_to_train_longer():
    out = diagnosis.diagnose(
        {"cue_model": {"test": _metrics(11.0, 12.0, 10.0, 10.0)}},
        0.995,
        5e-3,
        10,
        prefix="cue_model.",
    )
    assert "neither the objects nor the cue" in out["warnings"][0]
    assert "cue_model.epochs" in out["warnings"][0]


def test_a_fine_tuned_model_at_chance_is_flagged():
    methods = {
        "cue_model": {"test": _metrics(62.9, 99.7, 27.2, 79.3)},
        "lpft": {"test": _metrics(14.4, 14.7, 14.3, 10.7)},
        "cbft": {"test": _metrics(60.0, 58.0, 57.0, 9.0)},
    }
    (warning,) = diagnosis.diagnose(methods, 0.87, 5e-3, 10)["warnings"]
    assert warning.startswith("lpft ended near chance") and "finetune.llrt.learning_rate" in warning
    # Above chance + 10 points, but with a clean loss worse than a uniform guess (log 10).
    methods["lpft"] = {"test": _metrics(24.4, 23.2, 23.3, 10.4, loss=2.63)}
    (warning,) = diagnosis.diagnose(methods, 0.87, 5e-3, 10)["warnings"]
    assert "loss 2.63" in warning and "2.30" in warning
