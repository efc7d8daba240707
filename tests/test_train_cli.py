"""``python -m experiments.train`` end to end, resume on rerun; paper configs."""

import json
import pathlib
import subprocess
import sys

import pytest

import events
from experiments.configs import paper
from mmc_jax import training

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config.model.width=0.25",
    "--config.data.num_train=256",
    "--config.data.num_test=100",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=2",
    "--config.eval_batch_size=100",
]


def _train(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_train_cli_writes_results_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    first = _train(*TINY, "--config.data.cue_proportion=0.5", f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr
    result = json.loads((workdir / "results.json").read_text())
    assert {"dataset", "model", "cue_proportion", "epochs", "seconds", "test"} <= set(result)
    assert result["dataset"] == "shapes10" and result["cue_proportion"] == 0.5
    assert set(result["test"]) == {"nocue", "cue", "randcue", "randimg"}
    assert all(0 <= m["acc"] <= 1 and m["loss"] > 0 for m in result["test"].values())
    assert len(result["history"]) == 2
    assert (workdir / "curves.png").stat().st_size > 1000
    logged = events.scalars(workdir / "tensorboard")  # what tensorboard --logdir reads
    assert "epoch/train_loss" in logged and "test/nocue/acc" in logged
    assert "NC ↑" in (workdir / "results.md").read_text() and "NC ↑" in first.stdout
    # The cue-reliance diagnosis: in results.json and results.md, its warnings on stderr.
    diagnosis = result["diagnosis"]
    assert set(diagnosis["cue_reliance"]) == {"nocue", "cue", "randcue", "randimg", "gap"}
    assert "## Diagnosis" in (workdir / "results.md").read_text()
    for warning in diagnosis["warnings"]:
        assert f"warning: {warning}" in first.stderr
    # A rerun finds the finished run and reproduces its numbers without training again.
    again = _train(*TINY, "--config.data.cue_proportion=0.5", f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr
    assert "resuming from step 8" in again.stderr
    assert json.loads((workdir / "results.json").read_text())["test"] == result["test"]
    # The same workdir with another config is refused, naming the field.
    other = _train(*TINY, "--config.data.cue_proportion=0.9", f"--workdir={workdir}")
    assert other.returncode == 2
    assert "cue_proportion: 0.5 -> 0.9" in other.stderr and "Traceback" not in other.stderr
    assert "--restart" in other.stderr
    # --restart discards the previous run and trains the new config from scratch.
    restarted = _train(
        *TINY, "--config.data.cue_proportion=0.9", f"--workdir={workdir}", "--restart"
    )
    assert restarted.returncode == 0, restarted.stderr
    assert "resuming" not in restarted.stderr
    assert json.loads((workdir / "results.json").read_text())["cue_proportion"] == 0.9


@pytest.mark.slow
def test_train_cli_calibrates_the_cue_proportion(tmp_path):
    workdir = tmp_path / "auto"
    run = _train(*TINY, "--config.data.cue_proportion=auto", f"--workdir={workdir}")
    assert run.returncode == 0, run.stderr
    result = json.loads((workdir / "results.json").read_text())
    calibrated = result["calibration"]
    assert result["cue_proportion"] == calibrated["cue_proportion"]
    assert 1 <= len(calibrated["trials"]) <= 5 and calibrated["trials"][0]["epochs"] <= 2
    assert "## Cue proportion calibration" in (workdir / "results.md").read_text()
    logged = [line for line in run.stderr.splitlines() if line.startswith("calibration trial ")]
    assert len(logged) == len(calibrated["trials"])
    for trial in calibrated["trials"]:
        assert (workdir / "calibration" / f"p_{trial['cue_proportion']:g}" / "trial.json").is_file()
    # A rerun reads every trial back (none is written again) and gives the same result.
    stamps = {p: p.stat().st_mtime_ns for p in (workdir / "calibration").rglob("trial.json")}
    again = _train(*TINY, "--config.data.cue_proportion=auto", f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr
    assert json.loads((workdir / "results.json").read_text())["test"] == result["test"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize(
    "arg",
    ["cifar10,vgg13,0.9", "cifar10,resnet18,0.0", "cifar100,vgg13,0.6", "dominoes,resnet18,1.0"],
)
def test_paper_configs_are_valid(arg):
    config = paper.get_config(arg)
    training.TrainConfig.of(config)
    o = config.optim
    assert (
        o.learning_rate,
        o.batch_size,
        o.epochs,
        o.schedule,
        o.step_every_epochs,
        o.weight_decay,
    ) == (0.1, 256, 100, "step", 40, 1e-4)


def test_paper_config_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="dataset,model,p"):
        paper.get_config("imagenet,vgg13,0.9")
