"""``python -m experiments.preview`` end to end, and its one-line errors."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import events


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "experiments.preview", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_preview_writes_grid_and_summary(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "mine.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(40) % 10,
        x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )
    workdir = tmp_path / "work"
    root = pathlib.Path(__file__).resolve().parents[1]
    result = _run(
        f"--config.data.name=npz:{npz}",
        "--config.data.cue_proportion=0.5",
        f"--workdir={workdir}",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((workdir / "results.json").read_text())
    assert summary["train_size"] == 40 and summary["cued_train_samples"] == 20
    assert (workdir / "counterfactuals.png").stat().st_size > 1000
    assert events.image_tags(workdir / "tensorboard") == ["counterfactuals"]
    assert "cued_train_samples" in (workdir / "results.md").read_text()


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.data.name=imagenet", "error: data.name must be one of shapes10"),
        (
            "--config.data.cue_proportion=1.5",
            "error: data.cue_proportion must be a number in [0, 1] or 'auto', got 1.5",
        ),
    ],
)
def test_preview_bad_input_is_one_line(tmp_path, flag, message):
    root = pathlib.Path(__file__).resolve().parents[1]
    result = _run(flag, f"--workdir={tmp_path}", cwd=root)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
