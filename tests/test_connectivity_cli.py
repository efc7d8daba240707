"""``python -m experiments.connectivity`` end to end on two tiny trained models."""

import json
import pathlib
import subprocess
import sys

import pytest

import events

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config.path.num_points=3",
    "--config.path.num_eval=60",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=60",
]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.connectivity", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "path,extra",
    [
        ("linear", []),
        ("permuted_linear", []),
        ("quadratic", ["--config.curve.optim.epochs=1", "--config.curve.optim.batch_size=64"]),
    ],
)
def test_connectivity_cli(trained, tmp_path, path, extra):
    result = _run(
        f"--model_a={trained / 'nc'}",
        f"--model_b={trained / 'c'}",
        f"--path={path}",
        f"--workdir={tmp_path}",
        *TINY,
        *extra,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["path"] == path and summary["ts"] == [0.0, 0.5, 1.0]
    assert set(summary["conditions"]) == {"nocue", "cue", "randcue", "randimg"}
    for m in summary["conditions"].values():
        assert len(m["acc"]) == 3 and m["barrier"]["loss"] >= -1e-6
        assert m["barrier"]["acc"] >= -1e-6
    assert (tmp_path / "paths.png").stat().st_size > 1000
    logged = events.scalars(tmp_path / "tensorboard")
    assert [s for s, _ in logged[f"path/{path}/cue/loss"]] == [0, 50, 100]
    assert "acc barrier" in (tmp_path / "results.md").read_text()
    if path != "quadratic":
        assert summary["control"] is None
        return
    # The control point is a model folder; the plane through it and the endpoints holds the
    # whole curve, and at t = 1/2 of the curve the plane's grid point is the path's midpoint.
    plane_dir = tmp_path / "plane"
    plane = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.plane",
            f"--curve={tmp_path}",
            f"--workdir={plane_dir}",
            "--config.path.num_points=3",
            "--config.path.conditions=nocue",
            *TINY[1:],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert plane.returncode == 0, plane.stderr[-3000:]
    out = json.loads((plane_dir / "results.json").read_text())
    assert sorted(events.image_tags(plane_dir / "tensorboard")) == ["plane_acc", "plane_loss"]
    assert out["curve"] is not None and out["names"][2] == "control"
    coords = out["coords"]
    assert out["curve"][0] == pytest.approx(coords[0]) and out["curve"][-1] == pytest.approx(
        coords[1]
    )
    # The plane's values at A and B are connectivity's values at t = 0 and t = 1.
    at = out["conditions"]["nocue"]["models"]["loss"]
    line = summary["conditions"]["nocue"]["loss"]
    assert at[0] == pytest.approx(line[0], abs=1e-4) and at[1] == pytest.approx(line[-1], abs=1e-4)


@pytest.mark.slow
def test_rotating_streams_needs_a_model_with_one(trained, tmp_path):
    result = _run(
        f"--model_a={trained / 'nc'}",
        f"--model_b={trained / 'c'}",
        "--path=permuted_linear",
        "--config.permutation.orthogonal=weight",
        f"--workdir={tmp_path}",
        *TINY,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: permutation.orthogonal: the model has no residual stream to rotate"
    )


@pytest.mark.slow
def test_rotating_an_rms_vits_stream_from_the_command_line(tmp_path):
    """``permutation.orthogonal`` on two ``vit_tiny_rms`` models (fresh initialisations saved
    as model folders): the run records it, and the aligned endpoint is b's function."""
    import jax

    from configs import tiny_train_config
    from mmc_jax import models, training

    config = tiny_train_config(**{"model.name": "vit_tiny_rms", "width": 0.25})
    model = training.create_model(config, 10)
    for seed in (0, 1):
        variables = models.init(model, jax.random.key(seed), (32, 32, 3))
        training.save_model(tmp_path / f"m{seed}", config, variables, 10, (32, 32, 3))
    runs = {}
    for rotation in ("none", "weight"):
        result = _run(
            f"--model_a={tmp_path / 'm0'}",
            f"--model_b={tmp_path / 'm1'}",
            "--path=permuted_linear",
            f"--config.permutation.orthogonal={rotation}",
            f"--workdir={tmp_path / rotation}",
            *TINY,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[rotation] = json.loads((tmp_path / rotation / "results.json").read_text())
        assert runs[rotation]["orthogonal"] == rotation
    # Both alignments are symmetries of b: the path's end is b's function either way.
    for condition in ("nocue", "cue"):
        ends = [runs[r]["conditions"][condition]["loss"][-1] for r in runs]
        assert ends[0] == pytest.approx(ends[1], rel=1e-4)
