"""Bad input to every entry point: one line on stderr starting with ``error:``, exit status
2, no traceback, and nothing written or deleted before the check."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest

from configs import train_config
from mmc_jax import models, training

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A workdir as experiments.train leaves it (config + checkpoint of an untrained model),
    and a copy whose config names a wider model than its checkpoint holds."""
    root = tmp_path_factory.mktemp("saved")
    config = train_config(width=0.25, num_train=64, num_test=20)
    state = training.create_state(config, models.create("cnn4", 10, width=0.25), (32, 32, 3), 1)
    with training.RunCheckpoints(root / "a", config.to_dict()) as checkpoints:
        checkpoints.save(state, {})
    shutil.copytree(root / "a", root / "wider")
    stored = json.loads((root / "wider" / "config.json").read_text())
    stored["model"]["width"] = 0.5
    (root / "wider" / "config.json").write_text(json.dumps(stored))
    # A fine-tuned model folder (as experiments.cbft writes them) of another architecture.
    config.model.update(name="vgg13_small", width=0.0)
    model = models.create("vgg13_small", 10)
    training.save_model(
        root / "vgg", config, models.init(model, jax.random.key(0), (32, 32, 3)), 10, (32, 32, 3)
    )
    return root


CASES = [
    # experiments.train: impossible values, unknown names, bad flags and fields.
    ("train", ["--config.optim.learning_rate=-1"], "optim.learning_rate must be > 0, got -1"),
    ("train", ["--config.model.name=vgg19"], "unknown model 'vgg19'"),
    ("train", ["--config.data.cue_proportion=2"], "cue proportion must be in [0, 1], got 2"),
    ("train", ["--config.data.name=imagenet"], "unknown dataset 'imagenet'"),
    ("train", ["--config.data.num_train=100000000"], "num_train 100000000 exceeds"),
    ("train", ["--config.optim.epochs=0"], "optim.epochs must be >= 1"),
    ("train", ["--config.optim.grad_clip_norm=-1"], "optim.grad_clip_norm must be >= 0"),
    ("train", ["--config.foo=1"], "unknown config field 'foo' (--config.foo)"),
    (
        "train",
        ["--config.cue_proportion=0.87"],
        "config field 'cue_proportion' is now "
        "'data.cue_proportion' (--config.data.cue_proportion=...)",
    ),
    (
        "train",
        ["--config.model=vgg13"],
        "config field 'model' is now a section; set 'model.name' (--config.model.name=...)",
    ),
    ("cbft", ["--config.path_points=3"], "config field 'path_points' is now 'path.num_points'"),
    ("train", ["--config.optim.epochs=abc"], "--config.optim.epochs=abc: invalid literal"),
    ("train", ["--nosuchflag"], "Unknown command line flag 'nosuchflag'"),
    ("train", ["--restart", "--workdir={tmp}/notes"], "does not look like an mmc_jax workdir"),
    # experiments.cbft.
    ("cbft", ["--config.finetune.cbft_mode=both"], "unknown CBFT mode 'both'"),
    ("cbft", ["--config.seeds=(1, 1)"], "seeds must be distinct"),
    ("cbft", ["--config.seeds=()"], "seeds must be non-negative integers"),
    ("cbft", ["--config.data.n_clean=100000000"], "n_clean must be in [1, 20000]"),
    ("cbft", ["--config.optim.medium_lr=-0.1"], "learning_rate must be > 0, got -0.1"),
    ("cbft", ["--config.finetune.t_dist=cauchy"], "unknown t_dist 'cauchy'"),
    ("cbft", ["--config.path.bn=reset"], "unknown BN policy 'reset'"),
    ("cbft", ["--config.path.num_points=1"], "path.num_points must be >= 2"),
    ("cbft", ["--config.cue_model.data.cue_proportion=1.5"], "cue proportion must be in [0, 1]"),
    ("cbft", ["--config.cue_model.fooo=1"], "unknown config field 'fooo'"),
    ("cbft", ["--config.cue_model_dir={tmp}/none"], "cue_model_dir: {tmp}/none holds no model"),
    ("cbft", ["--config.nocue_model_dir={tmp}/notes"], "nocue_model_dir: {tmp}/notes holds no"),
    ("cbft", ["--config.methods=('cbft', 'dfr')"], "unknown method(s) 'dfr'"),
    ("cbft", ["--config.methods=()"], "unknown method(s) (none given)"),
    ("cbft", ["--config.path.targets=('theta_0',)"], "unknown path target(s) 'theta_0'"),
    ("cbft", ["--config.path.conditions=clean"], "unknown condition 'clean'"),
    ("cbft", ["--config.path.random_from=epoch"], "unknown random_from 'epoch'"),
    ("cbft", ["--config.finetune.barrier_weight=-1"], "barrier_weight must be >= 0"),
    (
        "cbft",
        ["--config.cue_model.model.init_from={tmp}/notes"],
        "cue_model.model.init_from: {tmp}/notes holds no",
    ),
    # experiments.connectivity.
    ("connectivity", ["--model_a={tmp}/none", "--model_b={tmp}/none"], "holds no model"),
    (
        "connectivity",
        ["--model_a={tmp}/notes", "--model_b={saved}/a"],
        "notes holds no model (expected an experiments.train workdir",
    ),
    (
        "connectivity",
        ["--model_a={saved}/a", "--model_b={saved}/vgg"],
        "have different architectures (model.name 'cnn4' vs 'vgg13_small'",
    ),
    (
        "connectivity",
        ["--model_a={saved}/a", "--model_b={saved}/a", "--config.permutation.method=zipit"],
        "unknown permutation method 'zipit'",
    ),
    (
        "connectivity",
        ["--model_a={saved}/a", "--model_b={saved}/a", "--config.path.bn=reset"],
        "unknown BN policy 'reset'",
    ),
    (
        "connectivity",
        ["--model_a={saved}/a", "--model_b={saved}/a", "--config.path.strategy=pmap"],
        "unknown strategy 'pmap'",
    ),
    (
        "connectivity",
        ["--model_a={saved}/a", "--model_b={saved}/a", "--path=cubic"],
        "--path=cubic: value should be one of",
    ),
    (
        "connectivity",
        ["--model_a={saved}/a", "--model_b={saved}/wider"],
        "does not match the model",
    ),
]


@pytest.mark.parametrize(
    "entry,args,message", CASES, ids=[f"{e}:{' '.join(a)}" for e, a, _ in CASES]
)
def test_bad_input_is_one_line(tmp_path, saved_model, entry, args, message):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("not a run")
    args = [a.format(tmp=tmp_path, saved=saved_model) for a in args]
    message = message.format(tmp=tmp_path, saved=saved_model)
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={tmp_path}/run")
    result = subprocess.run(
        [sys.executable, "-m", f"experiments.{entry}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert (tmp_path / "notes" / "keep.txt").read_text() == "not a run"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_workdir_held_by_a_live_run_is_refused_until_that_run_is_killed(tmp_path):
    """Two runs, one workdir: the second is one line (and --restart deletes nothing); once
    the first is killed, its lock is gone with it."""
    import os
    import signal

    work = tmp_path / "work"
    (work / "results.json").parent.mkdir()
    (work / "results.json").write_text("{}")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from experiments import cli; "
            f"h = cli.hold_workdir({str(work)!r}); h.__enter__(); print('held', flush=True); "
            "time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--restart"]):
            second = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "experiments.similarity",
                    "--models=a,b",
                    f"--workdir={work}",
                    *extra,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert second.returncode == 2
            assert second.stderr.strip() == (
                f"error: {work} is in use by another run "
                f"(pid {holder.pid}); wait for it to end or "
                "choose another --workdir"
            )
        assert (work / "results.json").read_text() == "{}"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    after = subprocess.run(
        [sys.executable, "-m", "experiments.similarity", "--models=a,b", f"--workdir={work}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert after.returncode == 2 and "in use" not in after.stderr
    assert "holds no model" in after.stderr
