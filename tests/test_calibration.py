"""Cue proportion calibration: bisection to the smallest cue-reliant p, resumable trials,
and the verdict when no p works (trials replaced by a model of reliance against p)."""

import math

import pytest

from experiments.configs import demo
from mmc_jax import data
from mmc_jax.training import calibration, loop

TINY = data.load("shapes10", "test", num_examples=20)
DATASETS = (TINY, TINY)


def _fake_training(threshold, calls, cue_only_from=1.0):
    """A stand-in for train_and_evaluate whose model is cue-reliant from p = threshold on:
    its gap and randimg grow with p (linear in log(1 - p)); from ``cue_only_from`` on it
    learns nothing but the cue (nocue and randcue at chance, randimg 100 %)."""

    def train_and_evaluate(config, workdir, *, progress=True, datasets=None, epoch_hook=None):
        p = config.data.cue_proportion
        calls.append((p, config.optim.epochs, workdir))
        if p >= cue_only_from:
            accs = {"nocue": 0.1, "cue": 1.0, "randcue": 0.1, "randimg": 1.0}
            return {"result": {"test": {c: {"acc": a, "loss": 0.0} for c, a in accs.items()}}}
        margin = math.log(1 - threshold) - math.log(1 - p)  # > 0: reliant
        target = calibration.Search()
        gap, randimg = target.target_gap + 10 * margin, target.target_randimg + 10 * margin
        accs = {"nocue": 0.9 - 0.1 * margin, "cue": 1.0}
        accs["randcue"] = accs["nocue"] - gap / 100
        accs["randimg"] = randimg / 100
        return {"result": {"test": {c: {"acc": a, "loss": 0.0} for c, a in accs.items()}}}

    return train_and_evaluate


@pytest.mark.parametrize("threshold", [0.62, 0.93, 0.985])
def test_bisection_finds_the_smallest_cue_reliant_proportion(tmp_path, monkeypatch, threshold):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", _fake_training(threshold, calls))
    config = demo.get_config()
    search = calibration.Search(trials=5, resolution=0.01)
    result = calibration.calibrate(config, tmp_path, search, datasets=DATASETS)
    chosen = result["cue_proportion"]
    assert result["reliant"] and chosen >= threshold
    # Within one final bisection step of log(1 - p) above the threshold: the first trial
    # (at search.start) picks the half of the range, the others halve it.
    u = lambda p: math.log(1 - p)  # noqa: E731
    half = (
        (u(search.low), u(search.start))
        if threshold < search.start
        else (u(search.start), u(search.high))
    )
    step = (half[0] - half[1]) / 2 ** (search.trials - 1)
    assert u(threshold) - u(chosen) <= step + 1e-9
    assert len(calls) == len(result["trials"]) == 5
    assert {epochs for _, epochs, _ in calls} == {config.optim.epochs}  # the recipe itself
    # Rerun: every trial is read back, nothing is trained again.
    again = []
    monkeypatch.setattr(loop, "train_and_evaluate", _fake_training(threshold, again))
    assert calibration.calibrate(config, tmp_path, search, datasets=DATASETS) == {
        **result,
        "seconds": pytest.approx(result["seconds"], abs=5),
    }
    assert again == []
    table = calibration.markdown(result)
    assert f"p = {chosen:g}" in table and table.count("\n| 0.") == 5


def test_no_reliant_proportion_ends_at_the_high_end_with_a_warning(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", _fake_training(0.999, calls))
    result = calibration.calibrate(
        demo.get_config(),
        tmp_path,
        calibration.Search(trials=3, resolution=0.01),
        datasets=DATASETS,
    )
    assert not result["reliant"] and result["cue_proportion"] == 0.995
    assert [p for p, _, _ in calls][-1] == 0.995  # the high end itself is tried last
    assert "weight_decay (now 0.005)" in calibration.warning(result, 5e-3)


def test_search_bounds_are_checked():
    with pytest.raises(ValueError, match="0 <= low < high < 1"):
        calibration.Search(low=0.9, high=0.5)
    with pytest.raises(ValueError, match="trials"):
        calibration.Search(trials=0)


def test_resolution_ends_the_search_early(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", _fake_training(0.9, calls))
    calibration.calibrate(
        demo.get_config(), tmp_path, calibration.Search(trials=10), datasets=DATASETS
    )
    # From 0.87, log(1 - p) spans 3.26 up to 0.995: three halvings bring it under 0.5.
    assert len(calls) == 4


def test_too_much_cue_sends_the_search_down(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", _fake_training(0.7, calls, 0.85))
    result = calibration.calibrate(
        demo.get_config(), tmp_path, calibration.Search(resolution=0.01), datasets=DATASETS
    )
    verdicts = {t["cue_proportion"]: t["verdict"] for t in result["trials"]}
    assert verdicts[0.87] == calibration.TOO_MUCH  # the first trial: too much cue
    assert result["reliant"] and 0.7 <= result["cue_proportion"] < 0.85


def test_too_much_cue_everywhere_tries_the_low_end_and_says_why(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", _fake_training(0.1, calls, 0.0))
    result = calibration.calibrate(
        demo.get_config(),
        tmp_path,
        calibration.Search(trials=3, resolution=0.01),
        datasets=DATASETS,
    )
    assert not result["reliant"] and calls[-1][0] == 0.5
    assert "learned the objects too little" in calibration.warning(result, 5e-3)
