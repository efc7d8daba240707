"""``python -m experiments.sweep``: the grid, confidence intervals over seeds, and a sweep of
each entry point end to end on a tiny config (the points are ordinary workdirs)."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

from experiments import sweep
from mmc_jax.reporting import tables
from mmc_jax.runtime.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "--config.base.model.width=0.25",
    "--config.base.data.num_train=256",
    "--config.base.data.num_test=100",
    "--config.base.optim.batch_size=64",
    "--config.base.optim.epochs=1",
    "--config.base.eval_batch_size=100",
]
TINY_CBFT = [
    "--config.base.cue_model.model.width=0.25",
    "--config.base.cue_model.data.num_train=256",
    "--config.base.cue_model.data.num_test=100",
    "--config.base.cue_model.optim.batch_size=64",
    "--config.base.cue_model.optim.epochs=1",
    "--config.base.cue_model.eval_batch_size=100",
    "--config.base.data.n_clean=128",
    "--config.base.data.n_cue=128",
    "--config.base.optim.batch_size=64",
    "--config.base.optim.epochs=1",
    "--config.base.path.num_points=3",
    "--config.base.path.bn_batches=1",
    "--config.base.path.batch_size=100",
]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_grid_is_parsed_as_literals_and_checked():
    grid = sweep.parse_grid("cue_model.data.cue_proportion=0.6,0.95  model.name=cnn4 seed=0,1")
    assert grid == {
        "cue_model.data.cue_proportion": (0.6, 0.95),
        "model.name": ("cnn4",),
        "seed": (0, 1),
    }
    for bad, message in [
        ("", "grid is empty"),
        ("seed", "not field=value"),
        ("a=1 a=2", "appears twice"),
        ("a=1,1", "repeats a value"),
        ("seed=-1", "non-negative integers"),
    ]:
        with pytest.raises(InputError, match=message):
            sweep.parse_grid(bad)


def test_the_confidence_interval_is_students_t_over_seeds():
    mean, half = tables.mean_ci([1.0, 2.0, 3.0])
    t_975_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 97.5 % quantile
    assert mean == 2.0 and half == pytest.approx(t_975_2 * 1.0 / math.sqrt(3))
    assert tables.mean_ci([5.0]) == (5.0, 0.0)
    assert tables.mean_ci([4.0, 4.0])[1] == 0.0


@pytest.mark.slow
def test_a_sweep_of_train_aggregates_its_points_seeds(tmp_path):
    result = _run(
        "--config=experiments/configs/sweep.py:train",
        "--config.grid=data.cue_proportion=0.0,1.0 seed=0,1",
        "--config.executor=processes",
        f"--workdir={tmp_path}",
        *TINY_TRAIN,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert [p["name"] for p in out["points"]] == ["cue_proportion=0.0", "cue_proportion=1.0"]
    assert out["execution"]["units"] == 4
    for point in out["points"]:
        per_seed = [
            json.loads((pathlib.Path(point["workdir"]) / f"seed_{s}" / "results.json").read_text())
            for s in (0, 1)
        ]
        for condition in ("nocue", "randimg"):
            cell = point["rows"]["model"][condition]
            mean, half = tables.mean_ci([100 * r["test"][condition]["acc"] for r in per_seed])
            assert (cell["mean"], cell["ci95"], cell["n"]) == (mean, half, 2)
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    table = (tmp_path / "results.md").read_text()
    assert " ± " in table and "95 % confidence interval" in table and table in result.stdout

    # Rerun: nothing left to run; a new value of the grid runs only its own point.
    more = _run(
        "--config=experiments/configs/sweep.py:train",
        "--config.grid=data.cue_proportion=0.0,0.5,1.0 seed=0,1",
        "--config.executor=processes",
        f"--workdir={tmp_path}",
        *TINY_TRAIN,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert "2 of 6 units to run" in more.stderr


@pytest.mark.slow
def test_a_sweep_of_cbft_writes_each_points_results(tmp_path):
    result = _run(
        "--config.grid=cue_model.data.cue_proportion=0.5,1.0 seed=0",
        "--config.base.methods=('naive_ft_small', 'cbft')",
        "--config.executor=inline",
        f"--workdir={tmp_path}",
        *TINY_CBFT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    for point in out["points"]:
        own = json.loads((pathlib.Path(point["workdir"]) / "results.json").read_text())
        assert set(point["rows"]) == {"cue_model", "naive_ft_small", "cbft"}
        for method, row in point["rows"].items():
            m = own["methods"][method]
            assert row["randcue"]["mean"] == 100 * m["test"]["randcue"]["acc"]
            assert row["barrier"]["mean"] == m["barrier_to_cue_model"]["loss"]
            assert row["barrier"]["ci95"] == 0.0  # one seed: no interval
    assert (tmp_path / "sweep.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config.grid=cue_model.data.nope=1,2"], "no field 'cue_model.data.nope'"),
        (["--config.grid=seed"], "not field=value"),
        (["--config.grid=cue_model.data.cue_proportion=2.0"], "cue_proportion"),
        (["--config.plot.metrics=('nope',)"], "plot.metrics"),
        (["--config.executor=threads"], "unknown executor 'threads'"),
    ],
)
def test_bad_sweeps_are_one_line(tmp_path, args, message):
    result = _run(*args, f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "w").exists()
