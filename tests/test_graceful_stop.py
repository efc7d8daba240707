"""Graceful stop: SIGTERM and SIGINT end a run at a step boundary with a checkpoint (or after
a saved part of a path evaluation), raise Interrupted with the signal and where it stopped,
and a rerun ends bit-identical to an uninterrupted run: parameters, the per-epoch history
(the interrupted epoch's mean metrics included) and results.json."""

import os
import re
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import programs
import pytest

from configs import tiny_train_config
from mmc_jax import data, finetune, paths
from mmc_jax.connectivity import path_eval
from mmc_jax.runtime import stopping
from mmc_jax.training import TrainState, calibration, load_data, loop
from mmc_jax.training.checkpoint import RunCheckpoints
from mmc_jax.training.steps import supervised_step

SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
AT_STEP = re.compile(r"stopped at epoch (\d+) step (\d+); rerun the same command to continue")
AFTER_PART = re.compile(
    r"stopped after part \d+ of \d+ of the path evaluation; rerun the same command to continue"
)


def _kill_self(sig):
    os.kill(os.getpid(), sig)


# -- stopping ---------------------------------------------------------------------------------


def test_interrupted_is_not_an_ordinary_error():
    """A stop is not swallowed by an ``except Exception`` meant for a library's errors."""
    stop = stopping.Interrupted("stopped; rerun the same command to continue", signal.SIGTERM)
    assert not isinstance(stop, Exception) and stop.exit_code == 143
    with pytest.raises(stopping.Interrupted):
        with stopping.raise_on_signals():
            try:
                _kill_self(signal.SIGINT)
            except Exception:
                pytest.fail("the stop was taken for an error")


@SIGNALS
def test_a_request_left_unanswered_raises_when_the_block_ends(sig):
    with pytest.raises(stopping.Interrupted, match=f"^{re.escape(stopping.STOPPED)}$") as info:
        with stopping.requests() as stop:
            _kill_self(sig)
            assert stop and stop.signum == sig  # recorded, not raised
    assert info.value.signum == sig and info.value.exit_code == 128 + sig
    with stopping.requests() as stop:  # nothing asked: nothing raised
        pass
    assert not stop


# -- run_epochs ------------------------------------------------------------------------------

SPE, EPOCHS = 6, 3  # 96 samples in batches of 16


def _linear_apply(variables, x, mutable=False, **kwargs):
    del kwargs
    logits = x @ variables["params"]["w"] + variables["params"]["b"]
    return (logits, {}) if mutable else logits


class _Training:
    """A linear classifier trained by ``run_epochs``; a run's ``signals`` arrive during given
    steps or epochs' ends, and ``crash_at`` raises an error during a step (as a kill would
    end the run: nothing saved then)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(96, 8)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
        self.iterator = data.EpochIterator({"x": x, "y": y}, batch_size=16, seed=0)
        assert self.iterator.steps_per_epoch == SPE
        self.step = jax.jit(lambda state, batch: supervised_step(state, batch["x"], batch["y"]))

    def state(self):
        variables = {"params": {"w": jnp.zeros((8, 3)), "b": jnp.zeros(3)}}
        schedule = optax.cosine_decay_schedule(0.5, EPOCHS * SPE)
        return TrainState.create(
            _linear_apply, variables, optax.sgd(schedule, 0.9), jax.random.PRNGKey(0)
        )

    def run(self, workdir, *, signals=(), crash_at=None):
        """``signals``: ``(sig, when)`` with ``when`` a step's number in this run (1-based)
        or ``("end", epoch)``."""
        calls = [0]
        during_step = {when: sig for sig, when in signals if isinstance(when, int)}
        at_end = {when[1]: sig for sig, when in signals if not isinstance(when, int)}

        def step_fn(state, batch):
            calls[0] += 1
            if calls[0] == crash_at:
                raise RuntimeError("killed")
            if calls[0] in during_step:
                _kill_self(during_step[calls[0]])
            return self.step(state, batch)

        def on_epoch_end(state, record):
            if record["epoch"] in at_end:
                _kill_self(at_end[record["epoch"]])
            return {**record, "w_norm": float(jnp.linalg.norm(state.params["w"]))}

        with RunCheckpoints(workdir, {"run": "linear"}) as checkpoints:
            return loop.run_epochs(
                self.state(),
                step_fn,
                self.iterator,
                checkpoints,
                EPOCHS,
                on_epoch_end,
                progress=False,
            )


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """The training, and its uninterrupted run ``(params, meta)``."""
    training = _Training()
    state, meta = training.run(tmp_path_factory.mktemp("linear_reference"))
    return training, jax.device_get(state.params), meta


def _assert_same(params, meta, expected_params, expected_meta):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), expected_params)
    assert meta["history"] == expected_meta["history"]  # floats compared exactly
    assert "partial_epoch" not in meta


def _saved_meta(workdir, step):
    with RunCheckpoints(workdir, {"run": "linear"}) as checkpoints:
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return checkpoints.manager.restore(step, args=args).meta


@SIGNALS
@pytest.mark.parametrize(
    "stops",
    [
        [(8, "epoch 2 step 8")],  # mid-epoch
        [(8, "epoch 2 step 8"), (3, "epoch 2 step 11")],  # twice in one epoch
        [(12, "epoch 2 step 12")],  # during an epoch's last step: after its record
        [(("end", 1), "epoch 1 step 6")],  # during on_epoch_end (its evaluation)
        [(("end", 3), "epoch 3 step 18")],  # the last: the rerun trains no more
    ],
    ids=["mid-epoch", "twice", "last-step", "epoch-end", "last-epoch-end"],
)
def test_stopped_run_epochs_resumes_bit_identically(linear, tmp_path, sig, stops):
    training, expected_params, expected_meta = linear
    started = time.perf_counter()
    for when, where in stops:
        with pytest.raises(stopping.Interrupted) as info:
            training.run(tmp_path, signals=[(sig, when)])
        assert info.value.signum == sig and info.value.exit_code == 128 + sig
        assert str(info.value) == f"stopped at {where}; rerun the same command to continue"
        step = int(where.rsplit(" ", 1)[1])
        saved = _saved_meta(tmp_path, step)  # the stop's checkpoint
        assert len(saved["history"]) == step // SPE
        if step % SPE:  # the unfinished epoch's sums travel with it
            assert saved["partial_epoch"]["step"] == step
            assert saved["partial_epoch"]["count"] == step % SPE
        else:
            assert "partial_epoch" not in saved
    state, meta = training.run(tmp_path)
    _assert_same(state.params, meta, expected_params, expected_meta)
    assert int(state.step) == EPOCHS * SPE
    # The epochs' time is summed over the runs: positive, and within their wall-clock time.
    assert 0 < meta["seconds"] < time.perf_counter() - started


def test_killed_run_epochs_resumes_from_the_epoch_end(linear, tmp_path):
    """A kill saves nothing: the rerun replays from the last epoch's checkpoint, which has
    no unfinished epoch's sums, and ends the same."""
    training, expected_params, expected_meta = linear
    with pytest.raises(RuntimeError, match="killed"):
        training.run(tmp_path, crash_at=9)
    assert "partial_epoch" not in _saved_meta(tmp_path, SPE)
    state, meta = training.run(tmp_path)
    _assert_same(state.params, meta, expected_params, expected_meta)


def test_a_run_that_stopped_early_stays_stopped(tmp_path):
    training = _Training()

    def run():
        def stop_after_one(state, record):
            return {**record, "stop": True}

        with RunCheckpoints(tmp_path, {"run": "linear"}) as checkpoints:
            return loop.run_epochs(
                training.state(),
                training.step,
                training.iterator,
                checkpoints,
                EPOCHS,
                stop_after_one,
                progress=False,
            )

    state, meta = run()
    again_state, again = run()
    assert int(again_state.step) == int(state.step) == SPE
    assert again == meta and again["stopped_at_epoch"] == 1


# -- training, fine-tuning and calibration: Interrupted goes through them unchanged ----------


def _signal_during_step(monkeypatch, n, sig):
    """Sends ``sig`` during the n-th training step from now (counted over every run_epochs)."""
    calls, accumulate = [0], loop._accumulate

    def counting(*args):
        calls[0] += 1
        if calls[0] == n:
            _kill_self(sig)
        return accumulate(*args)

    monkeypatch.setattr(loop, "_accumulate", counting)


@pytest.fixture(scope="module")
def tiny_finetune():
    from mmc_jax import models

    model = models.create("cnn4", 10, width=0.25)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    train = data.load("shapes10", "train", num_examples=200)
    clean, cued = finetune.draw_subsets(train, 64, 64, seed=0)
    iterator = finetune.paired_iterator(train, clean, cued, 32, seed=0)  # 2 steps per epoch
    config = finetune.FinetuneConfig.of(
        optim={"batch_size": 32, "epochs": 3, "learning_rate": 0.05}
    )
    return model, variables, train, iterator, config


def _cbft(setup, workdir):
    model, variables, train, iterator, config = setup
    return finetune.cbft(
        model.apply,
        variables,
        variables,
        iterator,
        train.cue,
        10,
        config,
        workdir,
        progress=False,
    )


@SIGNALS
def test_stopped_cbft_resumes_bit_identically(tiny_finetune, tmp_path, monkeypatch, sig):
    expected, expected_history = _cbft(tiny_finetune, tmp_path / "reference")
    _signal_during_step(monkeypatch, 3, sig)
    with pytest.raises(stopping.Interrupted) as info:
        _cbft(tiny_finetune, tmp_path / "resumed")
    assert type(info.value) is stopping.Interrupted and info.value.signum == sig
    assert str(info.value) == "stopped at epoch 2 step 3; rerun the same command to continue"
    monkeypatch.undo()
    variables, history = _cbft(tiny_finetune, tmp_path / "resumed")
    jax.tree.map(np.testing.assert_array_equal, variables, expected)
    assert history == expected_history


def test_stopped_calibration_trial_resumes_with_its_early_stopping(tmp_path, monkeypatch):
    """A trial's early stopping compares the probe randimg with its peak so far: a trial
    resumed after a stop remembers the peak of the epochs before, and stops where an
    uninterrupted one does (at epoch 2 here, the probe's randimg scripted 50 %, 30 %, 20 %)."""
    config = tiny_train_config(epochs=3)  # 4 steps per epoch
    datasets = load_data(config)
    randimg, epoch = {1: 0.5, 2: 0.3, 3: 0.2}, [0]
    early_stop, accumulate = calibration._early_stop, loop._accumulate

    def scripted_early_stop(*args):
        hook = early_stop(*args)

        def scripted(state, record):
            epoch[0] = record["epoch"]
            return hook(state, record)

        return scripted

    def probe(apply_fn, variables, probe_set, key, conditions):
        del apply_fn, variables, probe_set, key
        return {c: {"acc": randimg[epoch[0]] if c == "randimg" else 0.9} for c in conditions}

    monkeypatch.setattr(calibration, "_early_stop", scripted_early_stop)
    monkeypatch.setattr(calibration, "evaluate", probe)
    search = calibration.Search(stop_after=0.0, target_randimg=65.0, stop_margin=5.0)

    def trial(folder):
        record = calibration.run_trial(config, 0.9, folder, search, datasets, progress=False)
        return {k: v for k, v in record.items() if k != "seconds"}

    expected = trial(tmp_path / "reference")
    assert expected["stopped"] and expected["epochs"] == 2
    _signal_during_step(monkeypatch, 6, signal.SIGTERM)  # mid-epoch 2
    with pytest.raises(stopping.Interrupted, match="stopped at epoch 2 step 6; rerun"):
        trial(tmp_path / "resumed")
    monkeypatch.setattr(loop, "_accumulate", accumulate)
    trial_config = calibration.trial_config(config, 0.9)
    assert calibration._trained_peak(tmp_path / "resumed", trial_config) == 50.0
    assert trial(tmp_path / "resumed") == expected


# -- path evaluation -------------------------------------------------------------------------


def _evaluate(models, store, **kwargs):
    model, variables, train, test = models
    return path_eval.evaluate_path(
        model.apply,
        paths.linear(variables["a"], variables["b"]),
        paths.grid(5),
        test,
        conditions=("nocue",),
        bn="recompute",
        bn_set=train,
        bn_batches=1,
        batch_size=60,
        store=store,
        part_size=2,  # three parts
        **kwargs,
    )


@SIGNALS
def test_stopped_path_evaluation_resumes_after_its_saved_part(
    three_tiny_models, tmp_path, monkeypatch, sig
):
    expected = _evaluate(three_tiny_models, None)
    saves, save = [], path_eval._PartStore.save

    def counting(self, p, metrics):
        saves.append(p)
        if len(saves) == 1:  # during the first part, before it is saved
            _kill_self(sig)
        save(self, p, metrics)

    monkeypatch.setattr(path_eval._PartStore, "save", counting)
    store = tmp_path / "parts"
    with pytest.raises(stopping.Interrupted) as info:
        _evaluate(three_tiny_models, store)
    assert info.value.signum == sig
    assert str(info.value) == (
        "stopped after part 1 of 3 of the path evaluation; rerun the same command to continue"
    )
    assert sorted(p.name for p in store.glob("part_*")) == ["part_00000.npz"]
    resumed = _evaluate(three_tiny_models, store)
    assert saves == [0, 1, 2]  # the rerun computed only the parts not saved
    for k in ("loss", "acc"):
        np.testing.assert_array_equal(resumed.metrics["nocue"][k], expected.metrics["nocue"][k])


def test_path_evaluation_without_a_store_stops_at_once(three_tiny_models, monkeypatch):
    """Nothing is saved along the way, so the signal raises where it lands, even inside the
    evaluation's ``except Exception`` (here: reading the compiled program's memory)."""

    class Compiled:
        def memory_analysis(self):
            _kill_self(signal.SIGTERM)
            time.sleep(1)  # the handler runs first

    with stopping.raise_on_signals(), pytest.raises(stopping.Interrupted) as info:
        path_eval._working_bytes(Compiled())
    assert str(info.value) == stopping.STOPPED and info.value.exit_code == 143

    working_bytes = path_eval._working_bytes

    def interrupted(compiled):
        _kill_self(signal.SIGINT)
        return working_bytes(compiled)

    monkeypatch.setattr(path_eval, "_working_bytes", interrupted)
    path_eval._COMPILED.clear()
    with stopping.raise_on_signals(), pytest.raises(stopping.Interrupted) as info:
        _evaluate(three_tiny_models, None, chunk_size=1)
    assert str(info.value) == stopping.STOPPED and info.value.exit_code == 130


# -- the entry points, stopped by a signal at a random moment --------------------------------

TRAIN, TRAIN_SPE = programs.TRAIN, 6
CBFT = [
    *programs.CBFT,
    "--config.methods=('naive_ft_small', 'cbft_no_barrier')",
    "--config.path.targets=('cue_model',)",
]


def _stop(entry, args, workdir, sig, delay: float) -> str:
    """Starts the command, waits for its first checkpoint and ``delay`` seconds more, sends
    ``sig`` as a terminal's Ctrl-C or a scheduler's stop would (to the process group), and
    returns the standard error after checking the exit status."""
    process = subprocess.Popen(
        programs.command(entry, args, workdir),
        cwd=programs.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        while process.poll() is None and not (workdir.exists() and programs.checkpoints(workdir)):
            time.sleep(0.01)
        time.sleep(delay)
        assert process.poll() is None, "the run ended before the signal"
        os.killpg(process.pid, sig)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr


def _last_line(stderr: str) -> str:
    return stderr.rstrip("\n").split("\n")[-1]


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("train_reference") / "run"
    programs.run("train", TRAIN, workdir)
    return workdir


@pytest.mark.slow
@SIGNALS
def test_train_stopped_at_a_random_moment_then_rerun_equals_uninterrupted(
    train_reference, tmp_path, sig
):
    workdir = tmp_path / "run"
    rng = np.random.default_rng(sig)
    # After epoch 1's checkpoint, mostly within the other two epochs (0.2 s unloaded).
    stderr = _stop("train", TRAIN, workdir, sig, rng.uniform(0.0, 0.15))
    last = _last_line(stderr)
    stopped = AT_STEP.fullmatch(last)
    assert stopped or last == stopping.STOPPED, stderr[-3000:]
    rerun = programs.run("train", TRAIN, workdir)
    if stopped:
        epoch, step = int(stopped[1]), int(stopped[2])
        assert epoch == (step - 1) // TRAIN_SPE + 1
        assert (workdir / "checkpoints" / str(step)).is_dir()
        assert f"resuming from step {step} " in rerun
    programs.assert_same_run(workdir, train_reference)


@pytest.mark.slow
def test_cbft_stopped_by_sigint_then_rerun_equals_uninterrupted(tmp_path):
    """Ctrl-C at a random moment of θ_C's training, the fine-tuning or the path
    evaluation."""
    reference, workdir = tmp_path / "reference", tmp_path / "run"
    programs.run("cbft", CBFT, reference)
    delay = np.random.default_rng(2).uniform(0.0, 6.0)
    last = _last_line(_stop("cbft", CBFT, workdir, signal.SIGINT, delay))
    assert AT_STEP.fullmatch(last) or AFTER_PART.fullmatch(last) or last == stopping.STOPPED
    programs.run("cbft", CBFT, workdir)
    programs.assert_same_run(workdir, reference)


@SIGNALS
def test_a_stop_that_lands_in_a_gc_callback_is_raised_after_it(sig, capsys):
    """Python swallows an exception raised in a garbage-collection callback (JAX has one);
    the stop is sent again and raised outside it, with nothing printed."""
    import gc

    sent = []

    def callback(phase, info):
        if phase == "start" and not sent:
            sent.append(sig)
            os.kill(os.getpid(), sig)  # its handler runs inside this callback
            sum(range(1000))

    gc.callbacks.append(callback)
    try:
        with pytest.raises(stopping.Interrupted) as info, stopping.raise_on_signals():
            gc.collect()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sum(range(1000))
    finally:
        gc.callbacks.remove(callback)
    assert sent and info.value.signum == sig and str(info.value) == stopping.STOPPED
    assert "Traceback" not in capsys.readouterr().err
