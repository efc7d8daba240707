"""Bad input to every entry point: one line on stderr starting with ``error:``, exit status
2, no traceback, and nothing written or deleted before the check."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import programs
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


#: Mistakes found only once the data or a checkpoint is read (the command line's own checks,
#: generated in test_bad_input.py, cannot see them): one line, exit status 2, nothing
#: left in the workdir but what the run had written before.
CASES = [
    ("train", ["--config.data.num_train=100000000"], "num_train 100000000 exceeds"),
    ("cbft", ["--config.data.n_clean=100000000"], "n_clean must be in [1, 20000]"),
    (
        "connectivity",
        ["--model_a={saved}/wider", "--model_b={saved}/wider"],
        "does not match the model",
    ),
    ("train", ["--restart", "--workdir={tmp}/notes"], "does not look like an mmc_jax workdir"),
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
    assert message in programs.refused(entry, args)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "not a run"
    assert not (tmp_path / "run").exists()


def test_a_workdir_held_by_a_live_run_is_refused_until_that_run_is_killed(tmp_path):
    """Two runs, one workdir: the second is one line (and --restart deletes nothing); once
    the first is killed, its lock is gone with it."""
    import os
    import signal

    work = tmp_path / "work"
    (tmp_path / "bad.npz").write_bytes(b"not an npz file")
    preview = [
        sys.executable,
        "-m",
        "experiments.preview",
        f"--config.data.name=npz:{tmp_path / 'bad.npz'}",
    ]
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
                [*preview, f"--workdir={work}", *extra],
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
        [*preview, f"--workdir={work}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert after.returncode == 2 and "in use" not in after.stderr
    assert "bad.npz" in after.stderr.strip().splitlines()[-1]
