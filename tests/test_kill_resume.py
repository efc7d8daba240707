"""Kill anywhere, resume exactly: entry points interrupted (SIGTERM, then SIGKILLs) right after
checkpoints and at random moments, and rerun with the same command, end with bit-identical
parameters and results."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

TRAIN = [
    "--config.model.width=0.25",
    "--config.data.num_train=384",
    "--config.data.num_test=100",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=3",
    "--config.eval_batch_size=100",
    "--config.data.cue_proportion=0.8",
]
CBFT = [
    "--config.cue_model.model.width=0.25",
    "--config.cue_model.data.num_train=256",
    "--config.cue_model.data.num_test=100",
    "--config.cue_model.optim.batch_size=64",
    "--config.cue_model.optim.epochs=2",
    "--config.cue_model.eval_batch_size=100",
    "--config.data.n_clean=128",
    "--config.data.n_cue=256",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=2",
    "--config.finetune.llrt_epochs=3",
    "--config.path.num_points=3",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=100",
    # θ_NC, the from-scratch model and an ablation resume too.
    "--config.methods=('naive_ft_small', 'lpft', 'cbft_no_barrier', 'scratch')",
    "--config.path.targets=('cue_model', 'nocue_model')",
    "--config.finetune.scratch_epochs=2",
]


CONNECTIVITY = [
    "--path=quadratic",
    "--config.path.num_points=3",
    "--config.path.num_eval=60",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=60",
    "--config.curve.epochs=3",
    "--config.curve.batch_size=64",
]


def _command(entry, args, workdir):
    return [sys.executable, "-m", f"experiments.{entry}", *args, f"--workdir={workdir}"]


def _run(entry, args, workdir) -> None:
    """Runs to completion."""
    result = subprocess.run(
        _command(entry, args, workdir), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _checkpoints(workdir: pathlib.Path) -> int:
    """How many checkpoints (of any run) the workdir holds."""
    return sum(1 for p in workdir.rglob("checkpoints/*") if p.name.isdigit())


def _interrupt(entry, args, workdir, sig: int, new_checkpoints: int, delay: float) -> bool:
    """Starts the command, waits until it has written ``new_checkpoints`` more checkpoints
    (0: not at all), then ``delay`` seconds more, and sends ``sig``; returns whether the job
    was still running then."""
    before = _checkpoints(workdir) if workdir.exists() else 0
    process = subprocess.Popen(
        _command(entry, args, workdir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    while (
        process.poll() is None
        and new_checkpoints
        and (not workdir.exists() or _checkpoints(workdir) < before + new_checkpoints)
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


def _final_arrays(workdir: pathlib.Path) -> dict:
    """Every run's latest checkpointed arrays under ``workdir``, by run folder."""
    out = {}
    for folder in sorted(workdir.rglob("checkpoints")):
        steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        state = ocp.StandardCheckpointer().restore(folder / str(max(steps)) / "state")
        out[str(folder.parent.relative_to(workdir))] = state
    return out


def _assert_same_arrays(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_arrays(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_arrays(x, y, f"{where}/{i}")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


def _numbers(results: dict) -> dict:
    """results.json without its wall-clock fields (seconds, per-phase timings)."""
    return {k: v for k, v in results.items() if "seconds" not in k and k != "timings"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry,args,kills", [("train", TRAIN, 3), ("cbft", CBFT, 3), ("connectivity", CONNECTIVITY, 2)]
)
def test_killed_and_rerun_equals_uninterrupted(request, tmp_path, entry, args, kills):
    if entry == "connectivity":  # midpoint training of the quadratic path
        trained = request.getfixturevalue("trained")
        args = args + [f"--model_a={trained / 'nc'}", f"--model_b={trained / 'c'}"]
    reference = tmp_path / "reference"
    _run(entry, args, reference)
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
    _run(entry, args, resumed)
    expected = json.loads((reference / "results.json").read_text())
    assert _numbers(json.loads((resumed / "results.json").read_text())) == _numbers(expected)
    reference_arrays, resumed_arrays = _final_arrays(reference), _final_arrays(resumed)
    assert reference_arrays.keys() == resumed_arrays.keys() and reference_arrays
    _assert_same_arrays(resumed_arrays, reference_arrays)


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
    _run("plane", args, reference)
    process = subprocess.Popen(
        _command("plane", args, resumed),
        cwd=ROOT,
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
        _command("plane", args, resumed), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming: {saved} part(s)" in rerun.stderr
    assert json.loads((resumed / "results.json").read_text()) == json.loads(
        (reference / "results.json").read_text()
    )
    assert not (resumed / "parts").exists()
