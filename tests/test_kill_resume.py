"""Kill anywhere, resume exactly: entry points interrupted (SIGTERM, then SIGKILLs) right after
checkpoints and at random moments, and rerun with the same command, end with bit-identical
parameters and results."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import programs
import pytest

TRAIN = programs.TRAIN
CBFT = [
    *programs.CBFT,
    "--config.finetune.llrt.epochs=3",
    # θ_NC, the from-scratch model and an ablation resume too.
    "--config.methods=('naive_ft_small', 'lpft', 'cbft_no_barrier', 'scratch')",
    "--config.path.targets=('cue_model', 'nocue_model')",
    "--config.baselines.scratch_epochs=2",
]


CONNECTIVITY = [
    "--path=quadratic",
    "--config.path.num_points=3",
    "--config.path.num_eval=60",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=60",
    "--config.curve.optim.epochs=3",
    "--config.curve.optim.batch_size=64",
]


def _interrupt(entry, args, workdir, sig: int, new_checkpoints: int, delay: float) -> bool:
    """Starts the command, waits until it has written ``new_checkpoints`` more checkpoints
    (0: not at all), then ``delay`` seconds more, and sends ``sig``; returns whether the job
    was still running then."""
    before = len(programs.checkpoints(workdir)) if workdir.exists() else 0
    process = subprocess.Popen(
        programs.command(entry, args, workdir),
        cwd=programs.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    while (
        process.poll() is None
        and new_checkpoints
        and (not workdir.exists() or len(programs.checkpoints(workdir)) < before + new_checkpoints)
    ):
        time.sleep(0.1)
    try:
        process.wait(timeout=delay)
        interrupted = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, sig)
        process.wait(timeout=120)
        interrupted = True
    stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr or sig == signal.SIGKILL, stderr[-3000:]
    return interrupted


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry,args,kills", [("train", TRAIN, 3), ("cbft", CBFT, 3), ("connectivity", CONNECTIVITY, 2)]
)
def test_killed_and_rerun_equals_uninterrupted(request, tmp_path, entry, args, kills):
    if entry == "connectivity":  # control-point training of the quadratic path
        trained = request.getfixturevalue("trained")
        args = args + [f"--model_a={trained / 'nc'}", f"--model_b={trained / 'c'}"]
    reference = tmp_path / "reference"
    programs.run(entry, args, reference)
    rng = np.random.default_rng(0)
    resumed = tmp_path / "resumed"
    # A polite SIGTERM right after a checkpoint, a SIGKILL at a random moment of startup,
    # compilation or restoring, then SIGKILLs right after the next checkpoints.
    schedule = [(signal.SIGTERM, 1), (signal.SIGKILL, 0)] + [(signal.SIGKILL, 1)] * (kills - 2)
    hits = 0
    for sig, after in schedule:
        delay = rng.uniform(0.0, 1.0) if after else rng.uniform(0.5, 4.0)
        hits += _interrupt(entry, args, resumed, sig, after, delay)
    assert hits >= 2  # the job was running when interrupted
    programs.run(entry, args, resumed)
    programs.assert_same_run(resumed, reference)


@pytest.mark.slow
def test_killed_plane_resumes_from_its_saved_parts(trained, third_trained, tmp_path):
    """The plane's grid in saved parts: killed after its first part, the rerun says it
    resumes and ends with the uninterrupted run's results."""
    args = [
        f"--models=NC={trained / 'nc'},C={trained / 'c'},half={third_trained}",
        "--config.path.num_points=4",
        "--config.path.num_eval=60",
        "--config.path.bn_batches=1",
        "--config.path.batch_size=60",
        "--config.path.conditions=nocue",
        "--config.path.part_size=2",
    ]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    programs.run("plane", args, reference)
    process = subprocess.Popen(
        programs.command("plane", args, resumed),
        cwd=programs.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while process.poll() is None and not list((resumed / "parts").glob("part_*.npz")):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=120)
    assert not (resumed / "results.json").exists()
    saved = len(list((resumed / "parts").glob("part_*.npz")))
    assert 1 <= saved < 10  # 16 + 3 points in parts of two
    rerun = subprocess.run(
        programs.command("plane", args, resumed),
        cwd=programs.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming: {saved} part(s)" in rerun.stderr
    assert json.loads((resumed / "results.json").read_text()) == json.loads(
        (reference / "results.json").read_text()
    )
    assert not (resumed / "parts").exists()
