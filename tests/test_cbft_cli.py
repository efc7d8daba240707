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
    result = _run(*TINY, f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert {"dataset", "model", "cue_proportion", "n_clean", "seconds", "methods"} <= set(out)
    assert set(out["methods"]) == {"cue_model", "naive_ft_small", "naive_ft_medium", "llrt",
                                   "lpft", "cbft"}
    for m in out["methods"].values():
        assert set(m["test"]) == {"nocue", "cue", "randcue", "randimg"}
        assert set(m["barrier_to_cue_model"]) == {"loss", "acc"}
    # θ_C's path to itself has no barrier.
    assert out["methods"]["cue_model"]["barrier_to_cue_model"]["loss"] == pytest.approx(0, abs=1e-5)
    assert (tmp_path / "paths.png").stat().st_size > 1000
    table = (tmp_path / "results.md").read_text()
    assert "cbft" in table and "RI ↓" in table and "cbft" in result.stdout


def test_cbft_cli_bad_input_is_one_line(tmp_path):
    result = _run("--config.cbft_mode=both", f"--workdir={tmp_path}")
    assert result.returncode == 2 and "unknown CBFT mode 'both'" in result.stderr
    assert "Traceback" not in result.stderr
