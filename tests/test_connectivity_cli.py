"""``python -m experiments.connectivity`` end to end on two tiny trained models."""

import json
import pathlib
import subprocess
import sys

import pytest

from experiments.configs import demo
from mmc_jax import training

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.num_points=3", "--config.num_eval=60", "--config.bn_batches=2",
        "--config.batch_size=60"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, p in (("nc", 0.0), ("c", 1.0)):
        config = demo.get_config()
        config.update(width=0.25, num_train=256, num_test=60, batch_size=64, epochs=1,
                      eval_batch_size=60, cue_proportion=p)
        training.train_and_evaluate(config, str(root / name), progress=False)
    return root


def _run(*args):
    return subprocess.run([sys.executable, "-m", "experiments.connectivity", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("path,extra", [
    ("linear", []), ("permuted_linear", []),
    ("quadratic", ["--config.curve_epochs=1", "--config.curve_batch_size=64"])])
def test_connectivity_cli(trained, tmp_path, path, extra):
    result = _run(f"--model_a={trained / 'nc'}", f"--model_b={trained / 'c'}", f"--path={path}",
                  f"--workdir={tmp_path}", *TINY, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["path"] == path and summary["ts"] == [0.0, 0.5, 1.0]
    assert set(summary["conditions"]) == {"nocue", "cue", "randcue", "randimg"}
    for m in summary["conditions"].values():
        assert len(m["acc"]) == 3 and m["barrier"]["loss"] >= -1e-6
        assert m["barrier"]["acc"] >= -1e-6
    assert (tmp_path / "paths.png").stat().st_size > 1000
    assert "acc barrier" in (tmp_path / "results.md").read_text()


def test_connectivity_cli_errors(tmp_path):
    missing = _run(f"--model_a={tmp_path}", f"--model_b={tmp_path}", f"--workdir={tmp_path}")
    assert missing.returncode == 2 and "no training run in" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = _run(f"--model_a={tmp_path}", f"--model_b={tmp_path}", "--config.bn=reset",
               f"--workdir={tmp_path}")
    assert bad.returncode == 2 and "unknown BN policy 'reset'" in bad.stderr
