"""``python -m experiments.cbft`` end to end on a tiny config (the api.md schema)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

import events

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config.cue_model.model.width=0.25",
    "--config.cue_model.data.num_train=256",
    "--config.cue_model.data.num_test=100",
    "--config.cue_model.optim.batch_size=64",
    "--config.cue_model.optim.epochs=1",
    "--config.cue_model.eval_batch_size=100",
    "--config.data.n_clean=128",
    "--config.data.n_cue=256",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=2",
    "--config.finetune.llrt.epochs=2",
    "--config.path.num_points=3",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=100",
]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.cbft", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_cbft_cli_end_to_end(tmp_path):
    result = _run(
        *TINY, "--config.seeds=(0, 1)", f"--workdir={tmp_path}", "--config.executor=processes"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert {"dataset", "model", "cue_proportion", "n_clean", "seconds", "methods"} <= set(out)
    assert out["seeds"] == [0, 1]
    assert set(out["methods"]) == {
        "cue_model",
        "naive_ft_small",
        "naive_ft_medium",
        "llrt",
        "lpft",
        "cbft",
    }
    for m in out["methods"].values():
        assert set(m["test"]) == {"nocue", "cue", "randcue", "randimg"}
        assert set(m["barrier_to_cue_model"]) == {"loss", "acc"}
    # θ_C's path to itself has no barrier.
    assert out["methods"]["cue_model"]["barrier_to_cue_model"]["loss"] == 0
    # Each seed has its own run (θ_C included); the top level is their mean ± std.
    seeds = [json.loads((tmp_path / f"seed_{s}" / "results.json").read_text()) for s in (0, 1)]
    for name, method in out["methods"].items():
        accs = [s["methods"][name]["test"]["randcue"]["acc"] for s in seeds]
        assert method["test"]["randcue"]["acc"] == pytest.approx(sum(accs) / 2)
        assert method["test_std"]["randcue"]["acc"] == pytest.approx(abs(accs[0] - accs[1]) / 2)
    assert seeds[0]["methods"]["cue_model"]["test"] != seeds[1]["methods"]["cue_model"]["test"]
    for folder in (tmp_path, tmp_path / "seed_0", tmp_path / "seed_1"):
        assert (folder / "paths_to_cue_model.png").stat().st_size > 1000
    table = (tmp_path / "results.md").read_text()
    assert "cbft" in table and "RI ↓" in table and " ± " in table and "cbft" in result.stdout
    # Where the time went: every phase, compile time within it, the aggregate summing seeds.
    # (The data is loaded once for the sweep, before the seeds: no phase of its own.)
    phases = [
        "reference models",
        *out["methods"].keys() - {"cue_model"},
        "evaluation",
        "paths",
    ]
    for results in seeds:
        assert set(results["timings"]) == set(phases)
        assert all(
            0 <= t["compile_seconds"] <= t["seconds"] + 0.1 for t in results["timings"].values()
        )
        assert sum(t["seconds"] for t in results["timings"].values()) <= results["seconds"] + 1
    assert out["timings"]["cbft"]["seconds"] == pytest.approx(
        sum(s["timings"]["cbft"]["seconds"] for s in seeds), abs=0.11
    )
    assert "Where the time went" in table

    # How the job ran: its units on two worker processes, and what that cost.
    execution = out["execution"]
    assert execution["executor"] == "processes" and execution["units"] == 16
    assert execution["ideal_seconds"] >= execution["critical_path_seconds"] > 0
    assert (tmp_path / "seed_0" / "cbft" / "unit.log").read_text().startswith("unit seed_0/cbft")

    # One process after another (inline) and Ray tasks: the same numbers, bit for bit (two
    # methods, θ_C and the references: a method's data order and keys depend on the seed alone).
    executors = ["inline", *(["ray"] if importlib.util.find_spec("ray") else [])]
    for executor in executors:
        other = tmp_path / executor
        done = _run(
            *TINY,
            "--config.seeds=(0, 1)",
            "--config.methods=('lpft', 'cbft')",
            f"--workdir={other}",
            f"--config.executor={executor}",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        for s in (0, 1):
            mine = json.loads((other / f"seed_{s}" / "results.json").read_text())["methods"]
            assert set(mine) == {"cue_model", "lpft", "cbft"}
            assert mine == {m: seeds[s]["methods"][m] for m in mine}, executor

    # The same command again reuses every finished seed.
    rerun = _run(*TINY, "--config.seeds=(0, 1)", f"--workdir={tmp_path}")
    assert rerun.returncode == 0 and rerun.stderr.count("reusing its results") == 2
    assert json.loads((tmp_path / "results.json").read_text())["methods"] == out["methods"]

    # θ_C reused from a training workdir: the same cue model, and no new θ_C training (one
    # method suffices: each method's data order and keys depend on the seed alone).
    reuse = tmp_path / "reuse"
    result = _run(
        *TINY,
        "--config.seeds=(0,)",
        "--config.methods=('cbft',)",
        f"--workdir={reuse}",
        f"--config.cue_model_dir={tmp_path / 'seed_0' / 'cue_model'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((reuse / "results.json").read_text())
    assert again["methods"]["cue_model"]["test"] == seeds[0]["methods"]["cue_model"]["test"]
    assert again["methods"]["cbft"]["test"] == seeds[0]["methods"]["cbft"]["test"]
    assert not (reuse / "seed_0" / "cue_model").exists()


@pytest.mark.parametrize("name", ["fig5", "cbft_paths", "ablations"])
@pytest.mark.parametrize("arg", ["", "cifar10,vgg13,0.9"])
def test_paper_experiment_configs(name, arg):
    """Each paper experiment's config names known methods, targets and conditions; its
    paper variant keeps the paper's fine-tuning data sizes."""
    import importlib

    from experiments import comparison, methods

    config = importlib.import_module(f"experiments.configs.{name}").get_config(arg)
    methods.check_methods(config.methods)
    assert methods.check_targets(config.path.targets)[0] == "cue_model"
    comparison.check_path(config.path)
    assert (config.data.n_clean, config.cue_model.data.name) == (
        (2500, "cifar10") if arg else (1000, "shapes10")
    )


@pytest.mark.slow
def test_fig5_config_and_any_model_folder_in_connectivity(tmp_path):
    """Fig. 5 from its config (three learning rates, four conditions, one figure), and the
    line between two of its model folders in experiments.connectivity."""
    result = _run("--config=experiments/configs/fig5.py", *TINY, f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert list(out["methods"]) == [
        "cue_model",
        "naive_ft_small",
        "naive_ft_medium",
        "naive_ft_large",
    ]
    for name in ("naive_ft_small", "naive_ft_medium", "naive_ft_large"):
        path = out["methods"][name]["paths"]["cue_model"]
        assert set(path["conditions"]) == {"nocue", "cue", "randcue", "randimg"}
        assert out["methods"][name]["barrier_to_cue_model"] == path["conditions"]["cue"]["barrier"]
    assert (tmp_path / "paths_to_cue_model.png").stat().st_size > 10_000
    logged = events.scalars(tmp_path / "tensorboard")
    assert "naive_ft_small/test/cue/acc" in logged
    assert len(logged["path/naive_ft_small_to_cue_model/cue/loss"]) == len(path["ts"])
    assert "epoch/train_loss" in events.scalars(
        tmp_path / "seed_0" / "naive_ft_small" / "tensorboard"
    )
    assert "Barriers on the line from θ_C" in (tmp_path / "results.md").read_text()
    seed = tmp_path / "seed_0"
    conn = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.connectivity",
            f"--model_a={seed / 'cue_model'}",
            f"--model_b={seed / 'naive_ft_large'}",
            f"--workdir={tmp_path / 'line'}",
            "--config.path.num_points=3",
            "--config.path.bn_batches=2",
            "--config.path.batch_size=100",
            "--config.seed=1",
        ],  # experiments.cbft evaluates seed s with key s + 1
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert conn.returncode == 0, conn.stderr[-3000:]
    line = json.loads((tmp_path / "line" / "results.json").read_text())
    # The same line as experiments.cbft evaluated (same points, data, BN policy and key).
    expected = out["methods"]["naive_ft_large"]["paths"]["cue_model"]["conditions"]
    for c in ("nocue", "cue", "randcue", "randimg"):
        assert line["conditions"][c]["acc"] == pytest.approx(expected[c]["acc"], abs=1e-6)
