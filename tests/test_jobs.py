"""Jobs of work units and their executors: the graph, completion records, the same results
bit for bit on every executor, one-line failures that keep finished work, and kills."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from mmc_jax import jobs
from mmc_jax.jobs import units, worker
from mmc_jax.runtime.errors import InputError

HERE = pathlib.Path(__file__).resolve().parent


def _unit(root, name, function="draw", inputs=(), light=False, **kwargs):
    folder = str(root / name)
    return jobs.Unit(
        name, f"job_units:{function}", folder, {"folder": folder, **kwargs}, inputs, light
    )


def diamond(root, sleep=0.0, seeds=(0, 1, 2)):
    """a0, a1, a2 → b (a0, a1) → report r (b, a2), which runs in the driver; a0 waits
    ``sleep`` seconds first."""
    out = [_unit(root, f"a{i}", seed=s, sleep=sleep * (i == 0)) for i, s in enumerate(seeds)]
    out.append(_unit(root, "b", seed=9, inputs=("a0", "a1")))
    out.append(_unit(root, "r", "report", inputs=("b", "a2"), light=True))
    return jobs.Job(out)


def values(records):
    return {name: r["result"]["value"] for name, r in records.items()}


def test_a_job_orders_inputs_first_and_refuses_cycles_and_unknown_inputs(tmp_path):
    job = jobs.Job(
        [
            _unit(tmp_path, "c", inputs=("a", "b")),
            _unit(tmp_path, "b", inputs=("a",)),
            _unit(tmp_path, "a"),
        ]
    )
    assert list(job.units) == ["a", "b", "c"]
    assert job.critical_path({"a": 1.0, "b": 2.0, "c": 4.0}) == 7.0
    with pytest.raises(ValueError, match="cycle: x → y → x"):
        jobs.Job([_unit(tmp_path, "x", inputs=("y",)), _unit(tmp_path, "y", inputs=("x",))])
    with pytest.raises(ValueError, match="unknown unit"):
        jobs.Job([_unit(tmp_path, "x", inputs=("nope",))])
    with pytest.raises(ValueError, match="repeat"):
        jobs.Job([_unit(tmp_path, "x"), _unit(tmp_path, "x")])


def test_prefixed_units_keep_their_fingerprints(tmp_path):
    job = diamond(tmp_path)
    renamed = units.prefixed(job, "p/")
    assert [u.name for u in renamed] == ["p/a0", "p/a1", "p/a2", "p/b", "p/r"]
    assert renamed[3].inputs == ("p/a0", "p/a1")
    assert [u.fingerprint() for u in renamed] == [u.fingerprint() for u in job]
    back = units.prefixed(renamed, "", strip="p/")
    assert [u.name for u in back] == list(job.units)


def test_a_complete_unit_is_skipped_until_its_arguments_change(tmp_path):
    job = diamond(tmp_path)
    first = jobs.execute(job)
    assert values(first)["r"] == pytest.approx(sum(values(first)[n] for n in ("b", "a2")))
    assert job.pending() == []
    again = jobs.execute(job)  # nothing runs: the records say so
    assert {n: r["result"]["pid"] for n, r in again.items() if n != "r"} == {
        n: r["result"]["pid"] for n, r in first.items() if n != "r"
    }
    changed = jobs.Job([_unit(tmp_path, "a0", seed=5), *list(job)[1:]])
    assert [u.name for u in changed.pending()] == ["a0"]


def test_executors_give_bit_identical_results(tmp_path):
    """inline, processes (units pinned to one core each) and ray: the same bits, although
    XLA's CPU results change with the size of its thread pool (checked: a worker whose pool
    has another size draws another number)."""
    pytest.importorskip("ray")
    results = {}
    for name in ("inline", "processes", "ray"):
        execution = jobs.Execution(executor=name, workers=2)
        results[name] = values(jobs.execute(diamond(tmp_path / name), execution))
    assert results["processes"] == results["inline"]
    assert results["ray"] == results["inline"]
    other = tmp_path / "other_pool"
    unit = _unit(other, "a0", seed=0)
    pool = 1 if worker.pool_size() > 1 else 2
    process = worker.launch(unit, {}, pool=pool, root=worker.package_root([unit]))
    assert process.wait(timeout=120) == 0
    assert unit.record()["result"]["value"] != results["inline"]["a0"]


def test_processes_run_ready_units_side_by_side(tmp_path):
    job = diamond(tmp_path, sleep=2.0)
    records = jobs.execute(job, jobs.Execution(executor="processes", workers=2))
    starts = {n: os.path.getmtime(tmp_path / n / "started") for n in ("a0", "a1", "a2")}
    assert abs(starts["a0"] - starts["a1"]) < 1.5  # both started at once, each on its core
    assert len({records[n]["result"]["pid"] for n in ("a0", "a1", "a2", "b")}) == 4
    log = (tmp_path / "a0" / units.LOG).read_text()
    assert "unit a0: pid" in log and "cores [" in log


@pytest.mark.parametrize("executor", ["inline", "processes", "ray"])
def test_a_failing_unit_is_one_line_the_others_finish_and_the_rerun_resumes(tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    gate = tmp_path / "gate"
    job = jobs.Job(
        [
            _unit(tmp_path, "a0", seed=0),
            _unit(tmp_path, "broken", "gated", gate=str(gate)),
            _unit(tmp_path, "after", "gated", gate=str(gate), inputs=("broken",)),
            _unit(tmp_path, "a1", seed=1, inputs=("a0",)),
        ]
    )
    execution = jobs.Execution(executor=executor, workers=2)
    if executor == "inline":  # inline stops at the first failure, as the entry points did
        with pytest.raises(RuntimeError, match="gate is missing"):
            jobs.execute(job, execution)
    else:
        with pytest.raises(jobs.UnitFailed) as failed:
            jobs.execute(job, execution)
        message = str(failed.value)
        assert "\n" not in message and "broken (exit status 1" in message
        assert str(tmp_path / "broken" / units.LOG) in message and "after" not in message
        assert "RuntimeError" in (tmp_path / "broken" / units.LOG).read_text()
        assert [u.name for u in job.pending()] == ["broken", "after"]  # a0, a1 kept
    gate.write_text("fixed")
    done = jobs.execute(job, execution)
    assert values(done)["after"] == 2.0 and job.pending() == []


def test_bad_executor_settings_are_one_line(tmp_path):
    with pytest.raises(InputError, match="unknown executor 'threads'; choose from auto, inline"):
        jobs.Execution.of({"executor": "threads"})
    with pytest.raises(InputError, match="workers must be >= 0"):
        jobs.Execution.of({"workers": -1})
    pytest.importorskip("ray")
    with pytest.raises(InputError, match="cannot reach a Ray cluster at 127.0.0.1:9"):
        jobs.execute(diamond(tmp_path), jobs.Execution(executor="ray", ray_address="127.0.0.1:9"))
    with pytest.raises(InputError, match="HOST:PORT"):
        jobs.execute(diamond(tmp_path), jobs.Execution(executor="ray", ray_address="nowhere"))


_DRIVER = """
import sys
sys.path.insert(0, {here!r})
from mmc_jax import jobs
from test_jobs import diamond
import pathlib
execution = jobs.Execution(executor={executor!r}, workers=2)
jobs.execute(diamond(pathlib.Path({root!r}), sleep={sleep}), execution)
"""


def _driver(root, executor, sleep):
    code = _DRIVER.format(here=str(HERE), root=str(root), sleep=sleep, executor=executor)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(") ")[1][0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_a_killed_driver_takes_its_workers_and_the_rerun_gives_the_same_results(tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    reference = values(jobs.execute(diamond(tmp_path / "reference")))
    root = tmp_path / "killed"
    driver = _driver(root, executor, sleep=30.0)
    _wait_for(root / "a0" / "started", driver)
    unit_pid = int((root / "a0" / "started").read_text())
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(unit_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(unit_pid)  # the unit's process went with the driver
    assert not (root / "a0" / units.RECORD).exists()
    rerun = jobs.execute(diamond(root), jobs.Execution(executor=executor, workers=2))
    assert values(rerun) == reference


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_a_killed_worker_is_one_line_and_the_rerun_gives_the_same_results(tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    reference = values(jobs.execute(diamond(tmp_path / "reference")))
    root = tmp_path / "killed"
    driver = _driver(root, executor, sleep=30.0)
    _wait_for(root / "a0" / "started", driver)
    os.kill(int((root / "a0" / "started").read_text()), signal.SIGKILL)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode != 0
    last = stderr.decode().strip().splitlines()[-1]
    assert "a0 (killed by signal 9" in last and str(root / "a0" / units.LOG) in last
    assert json.loads((root / "a1" / units.RECORD).read_text())["result"]["value"]  # kept
    rerun = jobs.execute(diamond(root), jobs.Execution(executor=executor, workers=2))
    assert values(rerun) == reference


@pytest.mark.slow
def test_a_one_unit_command_runs_on_any_executor_with_the_same_results(tmp_path):
    """experiments.train is one unit: inline by default, in a worker process or as a Ray
    task when asked, with the same numbers; its table is printed by the driver."""
    import programs

    executors = ["inline", "processes", *(["ray"] if _has_ray() else [])]
    results = {}
    for executor in executors:
        workdir = tmp_path / executor
        done = subprocess.run(
            programs.command("train", [*programs.TRAIN, f"--config.executor={executor}"], workdir),
            cwd=programs.ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Test accuracy in %" in done.stdout  # the table, printed by the driver
        results[executor] = json.loads((workdir / "results.json").read_text())["test"]
        assert (workdir / units.RECORD).exists() == (executor != "inline")
    for executor in executors:
        assert results[executor] == results["inline"], executor


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None
