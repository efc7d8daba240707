"""One computation over several processes (``jax.distributed``): two local CPU processes (gloo
collectives, a localhost coordinator) compute what one process with two devices computes."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import programs
import pytest

import events
from mmc_jax.runtime import distributed
from mmc_jax.runtime.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]

# θ_C trained (batches of 64 and a last one of 36 that two devices cannot split), one CBFT
# epoch from it, and the linear path between them evaluated with the points split over the
# devices (shard_map) and with the batches split (map); process 0 saves what they computed.
SCRIPT = r"""
import sys
import time
from mmc_jax.runtime import distributed
out, address, n, i = sys.argv[1], *sys.argv[2:]
if address:
    distributed.initialize(distributed.Cluster(
        coordinator_address=address, num_processes=int(n), process_id=int(i),
        heartbeat_timeout_s=20, initialization_timeout_s=60))
import jax, numpy as np
from experiments.configs import demo
from mmc_jax import finetune, paths, training
from mmc_jax.connectivity import path_eval
from mmc_jax.runtime import parallel

assert jax.device_count() == 2, jax.devices()
config = demo.get_config()
config.model.width, config.eval_batch_size = 0.25, 100
config.data.update(num_train=292, num_test=100, cue_proportion=0.9)
config.optim.update(batch_size=64, epochs=2)
run = training.train_and_evaluate(config, out + "/theta_c", progress=False)
state = run["state"]
train, test = training.load_data(config)
clean, cued = finetune.draw_subsets(train, 100, 200, 0)
iterator = finetune.paired_iterator(train, clean, cued, 32, 0)
ft = finetune.FinetuneConfig.of(optim={"epochs": 2, "batch_size": 32}, warmup_epochs=1)
cbft, _ = finetune.cbft(state.apply_fn, state.variables, state.variables, iterator, train.cue,
                        10, ft, out + "/cbft", progress=False)
saved = {f"theta_c_{k}": np.asarray(x) for k, x in enumerate(jax.tree.leaves(state.variables))}
saved.update({f"cbft_{k}": np.asarray(x) for k, x in enumerate(jax.tree.leaves(cbft))})
for strategy in ("shard_map", "map"):
    result = path_eval.evaluate_path(
        state.apply_fn, paths.linear(state.variables, cbft), paths.grid(3), test,
        bn_set=train, bn_batches=2, batch_size=50, strategy=strategy)
    for c, m in result.metrics.items():
        saved[f"path_{strategy}_{c}_loss"] = m["loss"]
        saved[f"path_{strategy}_{c}_acc"] = m["acc"]
saved["test_nocue_acc"] = run["result"]["test"]["nocue"]["acc"]
saved["history"] = [r["train_loss"] for r in run["history"]]
if distributed.is_main():
    np.savez(out + "/saved.npz", **saved)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}


def _processes(
    commands: list[list[str]], timeout: float = 600
) -> list[subprocess.CompletedProcess]:
    """Runs the commands side by side (one device each); their completed processes."""
    started = [
        subprocess.Popen(
            c, cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    done = []
    for process, command in zip(started, commands):
        out, err = process.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


def _one_process_two_devices(command: list[str]) -> None:
    """Runs ``command`` as one process with two CPU devices, the reference of the runs over
    two processes."""
    single = subprocess.run(
        command, cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600
    )
    assert single.returncode == 0, single.stderr[-3000:]


def test_cluster_flags_are_checked_in_one_line():
    assert not distributed.Cluster().check().wanted
    with pytest.raises(InputError, match="need --coordinator_address"):
        distributed.Cluster(num_processes=2).check()
    with pytest.raises(InputError, match="must be HOST:PORT"):
        distributed.Cluster(coordinator_address="localhost", num_processes=2, process_id=0).check()
    with pytest.raises(InputError, match="needs --num_processes"):
        distributed.Cluster(coordinator_address="localhost:1234", process_id=0).check()
    with pytest.raises(InputError, match=r"must be in 0\.\.1, got 2"):
        distributed.Cluster(coordinator_address="h:1", num_processes=2, process_id=2).check()
    # One process: nothing to join, process 0 writes.
    assert not distributed.initialize(distributed.Cluster())
    assert distributed.is_main() and distributed.process_count() == 1
    assert distributed.on_main("one", lambda: True) is True


def test_bad_cluster_flags_on_the_command_line_are_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--num_processes=2", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --num_processes and --process_id need --coordinator_address=HOST:PORT (or use "
        "--distributed to detect the cluster)"
    ]
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_two_processes_compute_what_one_process_with_two_devices_computes(tmp_path):
    address = f"localhost:{free_port()}"
    two = tmp_path / "two"
    two.mkdir()
    runs = _processes(
        [[sys.executable, "-c", SCRIPT, str(two), address, "2", str(i)] for i in (0, 1)]
    )
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    one = tmp_path / "one"
    one.mkdir()
    _one_process_two_devices([sys.executable, "-c", SCRIPT, str(one), "", "", ""])
    a, b = dict(np.load(two / "saved.npz")), dict(np.load(one / "saved.npz"))
    assert a.keys() == b.keys() and any(k.startswith("path_shard_map") for k in a)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


TRAIN = [
    "--config.model.width=0.25",
    "--config.data.num_train=256",
    "--config.data.num_test=100",
    "--config.data.cue_proportion=0.5",
    "--config.optim.batch_size=64",
    "--config.eval_batch_size=100",
]


def _train(workdir, address, *extra, n: int = 2):
    return [
        [
            sys.executable,
            "-m",
            "experiments.train",
            *TRAIN,
            *extra,
            f"--workdir={workdir}",
            f"--coordinator_address={address}",
            f"--num_processes={n}",
            f"--process_id={i}",
        ]
        for i in range(n)
    ]


@pytest.mark.slow
def test_experiments_train_over_two_processes_matches_one_process(tmp_path):
    """The acceptance command: two local processes write one results.json, equal to one
    process with two devices (first-step loss to 1e-5, accuracy to 1 point); process 1's
    output is in its log; the rerun resumes."""
    workdir = tmp_path / "two"
    runs = _processes(_train(workdir, f"localhost:{free_port()}", "--config.optim.epochs=1"))
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    assert "nocue" in runs[0].stdout and not runs[1].stdout and not runs[1].stderr
    log = (workdir / "logs" / "process_1.log").read_text()
    assert "process 1 of 2" in log and "train" in log
    assert not (workdir / ".lock").exists()
    _one_process_two_devices(
        [
            sys.executable,
            "-m",
            "experiments.train",
            *TRAIN,
            "--config.optim.epochs=1",
            f"--workdir={tmp_path / 'one'}",
        ]
    )
    a = json.loads((workdir / "results.json").read_text())
    b = json.loads((tmp_path / "one" / "results.json").read_text())
    for condition in b["test"]:
        assert a["test"][condition]["acc"] == pytest.approx(b["test"][condition]["acc"], abs=0.01)
    first = [events.scalars(w / "tensorboard")["step/loss"][0] for w in (workdir, tmp_path / "one")]
    assert first[0][0] == first[1][0] == 1
    assert first[0][1] == pytest.approx(first[1][1], abs=1e-5)
    # Rerun: both processes find the finished run.
    again = _processes(_train(workdir, f"localhost:{free_port()}", "--config.optim.epochs=1"))
    assert [r.returncode for r in again] == [0, 0], again[0].stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["test"] == a["test"]


@pytest.mark.slow
def test_a_killed_process_stops_the_other_in_one_line_and_the_rerun_resumes(tmp_path):
    """SIGKILL of process 1 once a checkpoint is written: process 0 stops with one line;
    both rerun resume from the last checkpoint and end as an uninterrupted run."""
    epochs = ["--config.optim.epochs=30", "--heartbeat_timeout=10"]
    whole = _processes(_train(tmp_path / "whole", f"localhost:{free_port()}", *epochs))
    assert [r.returncode for r in whole] == [0, 0], whole[0].stderr[-3000:]

    workdir = tmp_path / "killed"
    commands = _train(workdir, f"localhost:{free_port()}", *epochs)
    started = [
        subprocess.Popen(c, cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    deadline = time.monotonic() + 300
    while not programs.checkpoints(workdir) and time.monotonic() < deadline:
        assert started[0].poll() is None, started[0].stderr.read().decode()[-3000:]
        time.sleep(0.1)
    started[1].kill()
    killed_at = time.monotonic()
    _, err = started[0].communicate(timeout=120)
    assert time.monotonic() - killed_at < 10 + 20  # within the heartbeat timeout, and more
    assert started[0].returncode == 1
    lines = err.decode().strip().splitlines()
    # At its next collective, or (blocked in a checkpoint's barrier) when the heartbeat stops.
    assert lines[-1].startswith("error: process 0 of 2 stopped: ") and " gone (" in lines[-1]
    assert lines[-1].endswith("Rerun every process to resume from the last checkpoint")
    assert not (workdir / "results.json").exists()
    started[1].communicate(timeout=60)

    rerun = _processes(commands)
    assert [r.returncode for r in rerun] == [0, 0], rerun[0].stderr[-3000:]
    assert "resuming from step" in rerun[0].stderr
    a = json.loads((workdir / "results.json").read_text())
    b = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert a["test"] == b["test"]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


# Process 1 leaves without a word while process 0 waits for it in the coordination service
# (as in a checkpoint's barrier): the watch reports it once the heartbeat stops.
WATCHED = r"""
import os, sys, time
from mmc_jax.runtime import distributed
distributed.initialize(distributed.Cluster(
    coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]),
    heartbeat_timeout_s=3))
start = time.monotonic()
distributed.watch(lambda gone: (print("gone", gone, round(time.monotonic() - start)),
                                sys.stdout.flush(), os._exit(3)))
distributed.barrier("both here")
if int(sys.argv[2]) == 1:
    os._exit(0)
from jax._src import distributed as state  # what orbax's barriers wait on
state.global_state.client.blocking_key_value_get("never set", 60_000)
"""


@pytest.mark.slow
def test_the_watch_reports_a_process_that_is_gone_while_the_others_wait():
    address = f"localhost:{free_port()}"
    runs = _processes([[sys.executable, "-c", WATCHED, address, str(i)] for i in (0, 1)], 120)
    assert runs[1].returncode == 0
    assert runs[0].returncode == 3, runs[0].stderr[-2000:]
    words = runs[0].stdout.strip().splitlines()[-1].split()
    assert words[:2] == ["gone", "[1]"] and int(words[2]) < 3 + 20
