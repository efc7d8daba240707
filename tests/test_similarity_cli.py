"""``python -m experiments.similarity`` end to end on tiny trained models: matrices equal
to connectivity's single-line barriers, a model and its duplicate in one cluster, reruns
reused, bad input as one line."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import events

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config.path.num_points=3",
    "--config.path.num_eval=60",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=60",
    "--config.path.conditions=nocue,cue",
]


def _one_line_error(stderr: str, message: str) -> bool:
    """The run ended on one ``error:`` line holding ``message`` (after the progress lines
    it logged), without a traceback."""
    lines = stderr.strip().splitlines()
    return (
        "Traceback" not in stderr
        and lines[-1].startswith("error: ")
        and message in lines[-1]
        and sum(line.startswith("error") for line in lines) == 1
    )


def _run(module, *args):
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_similarity_cli(trained, tmp_path):
    models = f"--models=NC={trained / 'nc'},C={trained / 'c'},C_again={trained / 'c'}"
    work = tmp_path / "similarity"
    result = _run("similarity", models, f"--workdir={work}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((work / "results.json").read_text())
    assert out["names"] == ["NC", "C", "C_again"] and out["ts"] == [0.0, 0.5, 1.0]
    for c in ("nocue", "cue"):
        loss = np.asarray(out["conditions"][c]["loss_barrier"])
        np.testing.assert_array_equal(loss, loss.T)
        np.testing.assert_array_equal(np.diag(loss), 0.0)
        assert loss[1, 2] == pytest.approx(0.0, abs=1e-5)
        assert out["clusters"][c]["C"] == out["clusters"][c]["C_again"]
        order = out["order"][c]
        assert abs(order.index("C") - order.index("C_again")) == 1
    # The NC–C entry is connectivity's barrier of the same line.
    line = tmp_path / "line"
    single = _run(
        "connectivity",
        f"--model_a={trained / 'nc'}",
        f"--model_b={trained / 'c'}",
        f"--workdir={line}",
        *TINY,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    summary = json.loads((line / "results.json").read_text())
    for c in ("nocue", "cue"):
        assert out["conditions"][c]["loss_barrier"][0][1] == pytest.approx(
            summary["conditions"][c]["barrier"]["loss"], abs=1e-4
        )
        assert out["conditions"][c]["acc_barrier"][0][1] == pytest.approx(
            summary["conditions"][c]["barrier"]["acc"], abs=1e-6
        )
    assert (work / "similarity_loss.png").stat().st_size > 1000
    logged = events.scalars(work / "tensorboard")
    assert logged["loss_barrier/cue/NC_vs_C"] == [(0, pytest.approx(loss[0, 1]))]
    assert "Clusters" in (work / "results.md").read_text()
    rerun = _run("similarity", models, f"--workdir={work}", *TINY)
    assert rerun.returncode == 0 and "reusing its results" in rerun.stderr


@pytest.mark.slow
def test_permuted_similarity_with_repair(trained, tmp_path):
    """--config.permuted aligns each pair (the library test checks the numbers against
    single permuted paths), and BN policies such as repair reach every line."""
    work = tmp_path / "permuted"
    result = _run(
        "similarity",
        f"--models=NC={trained / 'nc'},C={trained / 'c'},C_again={trained / 'c'}",
        f"--workdir={work}",
        "--config.permuted=true",
        "--config.path.bn=repair",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((work / "results.json").read_text())
    assert out["config"]["path"]["bn"] == "repair"
    assert (
        "Weight-permuted linear-path barriers between 3 models, BN repair"
        in (work / "results.md").read_text()
    )
    for c in ("nocue", "cue"):
        assert out["conditions"][c]["loss_barrier"][1][2] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--models=a"], "at least 2 model folders"),
        (
            ["--models=a,b", "--config.permutation.method=magic"],
            "permutation.method must be one of weight",
        ),
        (["--models=a,b", "--config.path.num_points=1"], "path.num_points must be an integer >= 2"),
        (["--models=x=a,x=b"], "two models are named 'x'"),
    ],
)
def test_similarity_bad_input_is_one_line(tmp_path, args, message):
    result = _run("similarity", *args, f"--workdir={tmp_path}")
    assert result.returncode == 2
    assert _one_line_error(result.stderr, message)


@pytest.mark.slow
def test_layerwise_cli(trained, tmp_path):
    """Per-layer barriers from θ_NC to θ_C: one row per module, a model against itself has
    none, reruns are reused, a missing model is one line."""
    work = tmp_path / "layerwise"
    args = [f"--model_a={trained / 'nc'}", f"--model_b={trained / 'c'}", f"--workdir={work}", *TINY]
    result = _run("layerwise", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((work / "results.json").read_text())
    assert out["groups"][:2] == ["bn0", "conv0"] and out["groups"][-1] == "classifier"
    for c in ("nocue", "cue"):
        assert len(out["conditions"][c]["loss_barrier"]) == len(out["groups"])
        assert min(out["conditions"][c]["loss_barrier"]) >= -1e-6
    assert (work / "layerwise.png").stat().st_size > 1000
    assert "loss_barrier/cue/conv0" in events.scalars(work / "tensorboard")
    assert "| conv0 |" in (work / "results.md").read_text()
    assert "reusing its results" in _run("layerwise", *args).stderr
    same = tmp_path / "same"
    result = _run(
        "layerwise",
        f"--model_a={trained / 'c'}",
        f"--model_b={trained / 'c'}",
        f"--workdir={same}",
        "--config.groups=conv1,classifier",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((same / "results.json").read_text())
    assert out["groups"] == ["conv1", "classifier"]
    assert all(abs(v) < 1e-5 for c in out["conditions"].values() for v in c["loss_barrier"])
    missing = _run("layerwise", f"--model_a={trained / 'c'}", f"--workdir={tmp_path / 'x'}")
    assert missing.returncode == 2 and "give both --model_a and --model_b" in missing.stderr


def test_plane_cli_refuses_two_models_and_three_on_a_line(trained, tmp_path):
    two = _run("plane", f"--models={trained / 'nc'},{trained / 'c'}", f"--workdir={tmp_path}")
    assert two.returncode == 2 and "at least 3 model folders" in two.stderr
    line = _run(
        "plane",
        f"--models=A={trained / 'nc'},B={trained / 'c'},C={trained / 'c'}",
        f"--workdir={tmp_path / 'line'}",
        *TINY,
    )
    assert line.returncode == 2 and _one_line_error(line.stderr, "on one line")


def test_plane_grid_of_one_point_is_one_line(trained, tmp_path):
    result = _run(
        "plane",
        f"--models={trained / 'nc'},{trained / 'c'},x={trained / 'nc'}",
        "--config.path.num_points=1",
        f"--workdir={tmp_path}",
    )
    assert result.returncode == 2 and _one_line_error(
        result.stderr, "path.num_points must be an integer >= 2"
    )


def test_plane_curve_needs_a_quadratic_paths_workdir(trained, tmp_path):
    result = _run("plane", f"--curve={trained / 'c'}", f"--workdir={tmp_path}")
    assert result.returncode == 2 and "holds no quadratic path" in result.stderr
    both = _run(
        "plane", f"--curve={trained / 'c'}", f"--models={trained / 'c'}", f"--workdir={tmp_path}"
    )
    assert both.returncode == 2 and "either --models or --curve" in both.stderr


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["similarity", "plane"])
def test_shared_parts_on_worker_processes_equal_one_process(
    trained, third_trained, tmp_path, entry
):
    """--config.executor=processes: one unit per worker evaluates every n-th saved part, the
    driver joins them; the results equal one process's, bit for bit."""
    models = f"--models=NC={trained / 'nc'},C={trained / 'c'},half={third_trained}"
    args = [models, *TINY, "--config.path.part_size=2"]
    if entry == "plane":
        args = [a for a in args if "num_points" not in a] + ["--config.path.num_points=4"]
    results = {}
    for executor in ("inline", "processes"):
        work = tmp_path / executor
        done = _run(
            entry, *args, f"--workdir={work}", f"--config.executor={executor}", "--config.workers=2"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads((work / "results.json").read_text())
        results[executor] = {k: v for k, v in out.items() if k != "config"}
    shares = sorted(p.name for p in (tmp_path / "processes" / "units").iterdir())
    assert shares == ["parts_1_of_2", "parts_2_of_2"]
    log = (tmp_path / "processes" / "units" / "parts_2_of_2" / "unit.log").read_text()
    assert "cores [" in log
    assert results["processes"] == results["inline"]
