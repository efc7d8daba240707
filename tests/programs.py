"""The entry points as programs, for the tests that stop, kill and rerun them: tiny command
lines, running one to completion, and comparing two runs' results and final arrays."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: experiments.train on 384 images, 3 epochs of 6 steps.
TRAIN = [
    "--config.model.width=0.25",
    "--config.data.num_train=384",
    "--config.data.num_test=100",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=3",
    "--config.eval_batch_size=100",
    "--config.data.cue_proportion=0.8",
]
#: experiments.cbft with a tiny θ_C and fine-tuning sets (the methods are the test's).
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
    "--config.path.num_points=3",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=100",
]


#: experiments.train for a model of one's own: 256 images, one epoch (any model name).
OWN_MODEL_TRAIN = [
    "--config.data.num_train=256",
    "--config.data.num_test=100",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=1",
    "--config.eval_batch_size=100",
]


#: The path section of a model of one's own's tiny runs: 3 points, 2 BN batches of 100.
OWN_MODEL_PATH = [
    "--config.path.num_points=3",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=100",
]


def own_model_cbft(methods: tuple[str, ...]) -> list[str]:
    """experiments.cbft's tiny arguments for a model of one's own running ``methods``
    (θ_C trained as :data:`OWN_MODEL_TRAIN`; the model named by the caller)."""
    return [
        *[f"--config.cue_model.{a[len('--config.') :]}" for a in OWN_MODEL_TRAIN],
        "--config.data.n_clean=128",
        "--config.data.n_cue=256",
        "--config.optim.batch_size=64",
        "--config.optim.epochs=1",
        "--config.finetune.llrt.epochs=1",
        *OWN_MODEL_PATH,
        f"--config.methods={methods!r}",
    ]


def completed(entry: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m experiments.<entry> *args`` run to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{entry}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def command(entry: str, args: list[str], workdir) -> list[str]:
    """``python -m experiments.<entry> <args> --workdir=<workdir>``."""
    return [sys.executable, "-m", f"experiments.{entry}", *args, f"--workdir={workdir}"]


def run(entry: str, args: list[str], workdir) -> str:
    """Runs the command to completion (asserting success); returns its standard error."""
    result = subprocess.run(
        command(entry, args, workdir), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def checkpoints(workdir: pathlib.Path) -> list[pathlib.Path]:
    """Every checkpoint folder (of any run) under ``workdir``, which a live run may be
    writing: a temporary folder renamed while it is walked is walked again."""
    for _ in range(100):
        try:
            return [p for p in workdir.rglob("checkpoints/*") if p.name.isdigit()]
        except FileNotFoundError:
            continue
    return []


def final_arrays(workdir: pathlib.Path) -> dict:
    """Every run's latest checkpointed arrays under ``workdir``, by run folder."""
    out = {}
    for folder in sorted(workdir.rglob("checkpoints")):
        steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        state = ocp.StandardCheckpointer().restore(folder / str(max(steps)) / "state")
        out[str(folder.parent.relative_to(workdir))] = jax.device_get(state)
    return out


def numbers(results: dict) -> dict:
    """results.json without its wall-clock fields (seconds, per-phase timings, how the job's
    units ran)."""
    return {
        k: v
        for k, v in results.items()
        if "seconds" not in k and "timings" not in k and k != "execution"
    }


def assert_same_run(workdir: pathlib.Path, reference: pathlib.Path) -> None:
    """The two workdirs hold the same results.json numbers and the same final arrays."""
    results = json.loads((workdir / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert numbers(results) == numbers(expected)
    arrays, expected_arrays = final_arrays(workdir), final_arrays(reference)
    assert arrays.keys() == expected_arrays.keys() and arrays
    jax.tree.map(np.testing.assert_array_equal, arrays, expected_arrays)


def refused(entry: str, args: list[str], only_line: bool = False) -> str:
    """Runs a command line that must be refused: exit status 2, no traceback, the last line
    on standard error ``error: ...`` (with ``only_line``, the only one: refused before any
    work), nothing on standard output; returns that line."""
    result = subprocess.run(
        [sys.executable, "-m", f"experiments.{entry}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stdout == "", result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and (len(lines) == 1 or not only_line), lines[-20:]
    return lines[-1]
