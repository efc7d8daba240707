"""``python -m experiments.cbft`` end to end on a tiny config (the api.md schema)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.cue_model.width=0.25", "--config.cue_model.num_train=256",
        "--config.cue_model.num_test=100", "--config.cue_model.batch_size=64",
        "--config.cue_model.epochs=1", "--config.cue_model.eval_batch_size=100",
        "--config.n_clean=128", "--config.n_cue=256", "--config.batch_size=64",
        "--config.epochs=2", "--config.llrt_epochs=2", "--config.path_points=3",
        "--config.bn_batches=2", "--config.eval_batch_size=100"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "experiments.cbft", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_cbft_cli_end_to_end(tmp_path):
    result = _run(*TINY, "--config.seeds=(0, 1)", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert {"dataset", "model", "cue_proportion", "n_clean", "seconds", "methods"} <= set(out)
    assert out["seeds"] == [0, 1]
    assert set(out["methods"]) == {"cue_model", "naive_ft_small", "naive_ft_medium", "llrt",
                                   "lpft", "cbft"}
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

    # The same command again reuses every finished seed.
    rerun = _run(*TINY, "--config.seeds=(0, 1)", f"--workdir={tmp_path}")
    assert rerun.returncode == 0 and rerun.stdout.count("reusing its results") == 2
    assert json.loads((tmp_path / "results.json").read_text())["methods"] == out["methods"]

    # θ_C reused from a training workdir: the same cue model, and no new θ_C training.
    reuse = tmp_path / "reuse"
    result = _run(*TINY, "--config.seeds=(0,)", f"--workdir={reuse}",
                  f"--config.cue_model_dir={tmp_path / 'seed_0' / 'cue_model'}")
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((reuse / "results.json").read_text())
    assert again["methods"]["cue_model"]["test"] == seeds[0]["methods"]["cue_model"]["test"]
    assert again["methods"]["cbft"]["test"] == seeds[0]["methods"]["cbft"]["test"]
    assert not (reuse / "seed_0" / "cue_model").exists()
