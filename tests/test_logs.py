"""TensorBoard event files: what the library writes reads back with TensorBoard's own
reader; training logs its epochs and steps, the analyses their curves and figures."""

import numpy as np
import pytest

import events
from mmc_jax.reporting import plots, tensorboard


def test_scalars_trees_curves_and_figures_read_back(tmp_path):
    summary = {
        "ts": [0.0, 0.5, 1.0],
        "conditions": {
            "cue": {
                "loss": [0.1, 0.9, 0.2],
                "acc": [1.0, 0.5, 0.9],
                "barrier": {"loss": 0.75, "acc": 0.45},
            }
        },
    }
    with tensorboard.open_log(tmp_path) as log:
        log.scalars(3, {"a": 1.5, "b": np.float32(2.0), "skip": "text", "flag": True})
        log.tree(0, {"test": {"cue": {"acc": 0.25}}})
        tensorboard.path_curves(log, "linear", summary)
        tensorboard.save_figure(
            log, tmp_path / "curves.png", plots.path_curves({**summary, "path": "linear"}, "a path")
        )
    with tensorboard.open_log(tmp_path) as log:  # a second writer in the same second: its own file
        log.scalars(4, {"a": 2.5})
    got = events.scalars(tmp_path / tensorboard.FOLDER)
    assert got["a"] == [(3, 1.5), (4, 2.5)] and got["b"] == [(3, 2.0)]
    assert "skip" not in got and "flag" not in got
    assert got["test/cue/acc"] == [(0, 0.25)]
    assert got["path/linear/cue/loss"] == [
        (0, pytest.approx(0.1)),
        (50, pytest.approx(0.9)),
        (100, pytest.approx(0.2)),
    ]
    assert got["barrier/linear/cue/acc"] == [(0, pytest.approx(0.45))]
    assert events.image_tags(tmp_path / tensorboard.FOLDER) == ["curves"]
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_a_log_that_writes_nothing_leaves_nothing(tmp_path):
    with tensorboard.open_log(tmp_path):
        pass
    assert not (tmp_path / tensorboard.FOLDER).exists()


def test_training_logs_every_epoch_and_every_few_steps(tmp_path, monkeypatch):
    from configs import tiny_train_config
    from mmc_jax import training

    monkeypatch.setattr(tensorboard, "STEP_EVERY", 3)
    config = tiny_train_config(epochs=2, cue_proportion=0.5)
    out = training.train_and_evaluate(config, str(tmp_path), progress=False)
    got = events.scalars(tmp_path / tensorboard.FOLDER)
    assert [s for s, _ in got["epoch/train_loss"]] == [4, 8]
    assert [v for _, v in got["epoch/train_loss"]] == pytest.approx(
        [r["train_loss"] for r in out["history"]], rel=1e-6
    )
    assert [s for s, _ in got["epoch/test_nocue_acc"]] == [4, 8]
    assert [s for s, _ in got["step/loss"]] == [1, 3, 6]
