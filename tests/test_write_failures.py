"""Full disks and unwritable folders: a write the OS refuses ends with one WriteError naming
the file and the cause, the files written before stay whole and readable, nothing half
written is left, and rerunning once the disk has room ends as a run that never failed.

Faults are injected through an audit hook (:class:`Faults`) that refuses the N-th write under
a folder (and, for a disk that stays full, the later ones), from any thread: files opened for
writing, folders created, renames into place. It reaches every Python-level write, orbax's
background threads included, for every N of a checkpoint, a model export, the parts of a
path evaluation, and (sampled by hypothesis) a whole training run. tensorstore's array writes
(C++) are refused for real: by a file-size limit, and by a full tmpfs where mounting is
allowed. A read-only workdir is a read-only bind mount or immutable folders where allowed,
else simulated.
"""

import contextlib
import errno
import hashlib
import inspect
import json
import os
import pathlib
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events
from configs import tiny_train_config
from mmc_jax import models, training
from mmc_jax.reporting import files, plots, tensorboard
from mmc_jax.runtime.errors import WriteError

ROOT = pathlib.Path(__file__).resolve().parents[1]
FULL = "No space left on device"

# A failed save abandons orbax's coroutines; the library silences what Python says about them
# for the rest of a run, which pytest resets for each test.
pytestmark = [
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <coroutine:pytest.PytestUnraisableExceptionWarning"
    ),
]


class Faults:
    """An audit hook that counts the writes under ``root`` (from every thread) and refuses
    the ``at``-th of those matching ``match`` (a regex on the path relative to ``root``)
    with ``OSError(code)``, and later writes too unless ``once``. A write is a file opened
    for writing, a folder created, a rename into place. After a full disk (ENOSPC), the
    later writes refused are those that take space (files and folders; a rename within a
    folder does not); after any other refusal (a read-only folder), every later write.

    At the refused write it records a snapshot of the finished files under ``root`` (not
    temporary files, orbax's unfinished folders or event files), which must be what the
    folder holds once the error has been handled.
    """

    WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root, at=None, code=errno.ENOSPC, once=False, match=""):
        self.root = os.path.realpath(root)
        self.at, self.code, self.once, self.match = at, code, once, re.compile(match)
        self.writes, self.refused, self.snapshot = [], [], None
        self._matching = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def _written(self, event, args):
        """The path under ``root`` that an audited event writes, or None."""
        if event == "open":
            path, mode, flags = args
            if mode is not None:
                writing = any(c in str(mode) for c in "wax+")
            else:
                writing = bool((flags or 0) & self.WRITING)
            if not writing or isinstance(path, int) or path is None:
                return None
        elif event == "os.mkdir":
            path = args[0]
            if os.path.lexists(path):  # exists already: the OS answers EEXIST, not a write
                return None
        elif event == "os.rename":  # os.rename and os.replace
            path = args[1]
        else:
            return None
        path = os.fsdecode(os.fspath(path))
        path = os.path.join(os.getcwd(), path) if not os.path.isabs(path) else path
        if path != self.root and not path.startswith(self.root + os.sep):
            return None
        return path

    def __call__(self, event, args):
        if getattr(self._local, "busy", False):
            return
        path = self._written(event, args)
        if path is None:
            return
        relative = os.path.relpath(path, self.root)
        with self._lock:
            self.writes.append((event, relative))
            refuse = False
            if self.at is not None and self.match.search(relative):
                self._matching += 1
                later = not self.once and self._matching > self.at
                if later and self.code == errno.ENOSPC:
                    later = event != "os.rename"
                refuse = self._matching == self.at or later
            if refuse:
                if self.snapshot is None:
                    self._local.busy = True
                    try:
                        self.snapshot = finished_files(self.root)
                    finally:
                        self._local.busy = False
                self.refused.append((event, relative))
        if refuse:
            raise OSError(self.code, os.strerror(self.code), path)


_ACTIVE = []


def _dispatch(event, args):
    if _ACTIVE:
        _ACTIVE[-1](event, args)


@contextlib.contextmanager
def refusing(root, at=None, **options):
    """:class:`Faults` active for the ``with`` block (``at=None``: only counting)."""
    if not getattr(_dispatch, "installed", False):
        sys.addaudithook(_dispatch)  # audit hooks cannot be removed: it dispatches to _ACTIVE
        _dispatch.installed = True
    faults = Faults(root, at, **options)
    _ACTIVE.append(faults)
    try:
        yield faults
    finally:
        _ACTIVE.remove(faults)


def unfinished(path: pathlib.Path) -> bool:
    """Whether a path is a temporary file or part of an unfinished orbax write."""
    return any(p.startswith(".") or ".orbax-checkpoint-tmp" in p for p in path.parts)


def finished_files(root) -> dict:
    """``{relative path: sha256}`` of the finished files under ``root`` (event files aside:
    they are appended to)."""
    root = pathlib.Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not unfinished(relative) and tensorboard.FOLDER not in relative.parts:
            out[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(root) -> list[str]:
    """Temporary files and unfinished orbax folders under ``root`` (the lock file aside)."""
    root = pathlib.Path(root)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if unfinished(p.relative_to(root)) and p.name != ".lock"
    )


def stranded(before) -> list[str]:
    """Threads started since ``before`` (a set of threads) that are still alive and that
    Python would wait for at exit (orbax's timeout is minutes)."""
    late = [t for t in threading.enumerate() if t not in before and not t.daemon]
    for thread in late:
        threading.Thread.join(thread, timeout=2.0)
    return [t.name for t in late if t.is_alive()]


def assert_refused(err: WriteError, faults: Faults, root):
    """One refused write: the error names a path under ``root`` and the cause; the folder
    holds what it held at the fault, nothing unfinished."""
    assert re.fullmatch(
        rf"cannot write {re.escape(str(root))}/\S+: {os.strerror(faults.code)}", str(err)
    )
    assert faults.refused, "the error was not caused by the injected fault"
    assert leftovers(root) == []
    assert finished_files(root) == faults.snapshot


# --- atomic files ------------------------------------------------------------------------


@pytest.mark.parametrize("at", [1, 2])
def test_a_refused_result_file_keeps_the_old_one(tmp_path, at):
    path = tmp_path / "results.json"
    files.write_json(path, {"run": 1})
    with refusing(tmp_path, at) as faults, pytest.raises(WriteError) as raised:
        files.write_json(path, {"run": 2})
    assert str(raised.value) == f"cannot write {path}: {FULL}"
    assert isinstance(raised.value.cause, OSError) and raised.value.errno == errno.ENOSPC
    assert faults.refused[0][0] == ("open", "os.rename")[at - 1]
    assert json.loads(path.read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_refused_fsync_or_folder_is_a_write_error(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, FULL)

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'a.md'}: {FULL}"):
        files.write_atomic(tmp_path / "a.md", "text")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    with refusing(tmp_path, 1, code=errno.EROFS), pytest.raises(WriteError) as raised:
        files.save_figure(tmp_path / "new" / "curves.png", plots.training_curves([], "empty"))
    assert str(raised.value) == (
        f"cannot write {tmp_path / 'new' / 'curves.png'}: Read-only file system"
    )


# --- checkpoints ---------------------------------------------------------------------------


def _state(config, shift: float, step: int):
    model = models.create("cnn4", 10, width=0.25)
    state = training.create_state(config, model, (32, 32, 3), 4)
    return state.replace(
        params=jax.tree.map(lambda x: x + shift, state.params), step=jnp.asarray(step, jnp.int32)
    )


def _restorable(workdir, config, like):
    """The latest checkpoint of ``workdir``, restored by a fresh manager, warning-free."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with training.RunCheckpoints(workdir, config.to_dict()) as checkpoints:
            return checkpoints.restore(like)


@pytest.mark.parametrize("once", [False, True], ids=["disk_stays_full", "one_write"])
def test_a_refused_checkpoint_keeps_the_previous_one(tmp_path, once):
    config = tiny_train_config()
    first, second = _state(config, 0.5, 4), _state(config, 1.5, 8)
    template = tmp_path / "template"
    with training.RunCheckpoints(template, config.to_dict(), min_interval_s=0) as checkpoints:
        checkpoints.save(first, {"epoch": 1})
    count = tmp_path / "count"
    shutil.copytree(template, count)
    with training.RunCheckpoints(count, config.to_dict()) as checkpoints:
        with refusing(count) as counted:
            checkpoints.save(second, {"epoch": 2}, force=True)
    total = len(counted.writes)
    assert total >= 10, counted.writes  # folders, metadata, JSON, commit files, renames
    for at in range(1, total + 1):
        workdir = tmp_path / f"at_{at}"
        shutil.copytree(template, workdir)
        before, threads = finished_files(workdir), set(threading.enumerate())
        with training.RunCheckpoints(workdir, config.to_dict()) as checkpoints:
            with refusing(workdir, at, once=once) as faults, pytest.raises(WriteError) as raised:
                checkpoints.save(second, {"epoch": 2}, force=True)
        assert stranded(threads) == [], faults.refused
        assert str(raised.value) == f"cannot write {workdir / 'checkpoints' / '8'}: {FULL}", (
            faults.refused
        )
        assert leftovers(workdir) == [], faults.refused
        assert finished_files(workdir) == before, faults.refused
        restored, meta = _restorable(workdir, config, second)
        assert int(restored.step) == 4 and meta == {"epoch": 1}
        chex.assert_trees_all_equal(restored.params, first.params)
        # Once the disk has room, the same save goes through.
        with training.RunCheckpoints(workdir, config.to_dict()) as checkpoints:
            checkpoints.save(second, {"epoch": 2}, force=True)
        restored, meta = _restorable(workdir, config, first)
        assert int(restored.step) == 8 and meta == {"epoch": 2}
        chex.assert_trees_all_equal(restored.params, second.params)
        shutil.rmtree(workdir)


def test_a_run_folder_that_cannot_be_created_is_a_write_error(tmp_path):
    config = tiny_train_config()
    with refusing(tmp_path, 1, code=errno.EACCES), pytest.raises(WriteError) as raised:
        training.RunCheckpoints(tmp_path / "run", config.to_dict())
    assert re.fullmatch(rf"cannot write {tmp_path}/run/\S+: Permission denied", str(raised.value))


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Files may not grow beyond ``limit`` bytes in this process (writes fail with EFBIG,
    the signal that would end the process is ignored)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_refused_array_write_of_tensorstore_is_a_write_error(tmp_path):
    """tensorstore writes the arrays from C++ and reports a refusal as a ValueError with
    the OS error code; a file-size limit makes the OS refuse them for real."""
    config = tiny_train_config()
    first, second = _state(config, 0.5, 4), _state(config, 1.5, 8)
    with training.RunCheckpoints(tmp_path, config.to_dict(), min_interval_s=0) as checkpoints:
        checkpoints.save(first, {"epoch": 1})
        before = finished_files(tmp_path)
        with _file_size_limit(4096), pytest.raises(WriteError) as raised:
            checkpoints.save(second, {"epoch": 2})
    assert str(raised.value) == f"cannot write {tmp_path / 'checkpoints' / '8'}: File too large"
    assert raised.value.errno == errno.EFBIG
    assert leftovers(tmp_path) == [] and finished_files(tmp_path) == before
    restored, _ = _restorable(tmp_path, config, second)
    chex.assert_trees_all_equal(restored.params, first.params)


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_a_full_disk_for_real(tmp_path):
    """A 2 MiB tmpfs: the first checkpoint fits, a larger second one does not (needs the
    right to mount, as root has outside most containers)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)):
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        config = tiny_train_config()
        first = _state(config, 0.5, 4)
        with training.RunCheckpoints(disk, config.to_dict(), min_interval_s=0) as checkpoints:
            checkpoints.save(first, {"epoch": 1})
            before = finished_files(disk)
            noise = jax.random.normal(jax.random.key(0), (1_000_000,))  # incompressible
            second = first.replace(step=jnp.asarray(8, jnp.int32), batch_stats={"noise": noise})
            with pytest.raises(WriteError) as raised:
                checkpoints.save(second, {"epoch": 2})
        assert str(raised.value) == f"cannot write {disk / 'checkpoints' / '8'}: {FULL}"
        assert leftovers(disk) == [] and finished_files(disk) == before
        restored, _ = _restorable(disk, config, first)
        assert int(restored.step) == 4
        chex.assert_trees_all_equal(restored.params, first.params)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --- model exports -------------------------------------------------------------------------


def test_a_refused_model_export_keeps_the_previous_export(tmp_path):
    config = tiny_train_config()
    old, new = _state(config, 0.5, 4).variables, _state(config, 2.5, 8).variables
    template = tmp_path / "template"
    training.save_model(template, config, old, 10, (32, 32, 3))
    count = tmp_path / "count"
    shutil.copytree(template, count)
    with refusing(count) as counted:
        training.save_model(count, config, new, 10, (32, 32, 3))
    total = len(counted.writes)
    for at in range(1, total + 1):
        folder = tmp_path / f"at_{at}"
        shutil.copytree(template, folder)
        before, threads = finished_files(folder), set(threading.enumerate())
        with refusing(folder, at) as faults, pytest.raises(WriteError) as raised:
            training.save_model(folder, config, new, 10, (32, 32, 3))
        assert stranded(threads) == [], faults.refused
        assert str(raised.value) in (
            f"cannot write {folder / 'model'}: {FULL}",
            f"cannot write {folder / 'model.json'}: {FULL}",
        ), faults.refused
        assert leftovers(folder) == [] and finished_files(folder) == before, faults.refused
        _, variables, _ = training.load_model(folder)
        chex.assert_trees_all_equal(variables["params"], old["params"])
        training.save_model(folder, config, new, 10, (32, 32, 3))
        _, variables, _ = training.load_model(folder)
        chex.assert_trees_all_equal(variables["params"], new["params"])
        shutil.rmtree(folder)


# --- saved parts of a path evaluation --------------------------------------------------------


def test_a_refused_part_of_a_path_evaluation_keeps_the_saved_parts(tmp_path, three_tiny_models):
    """Parts are written atomically (``files.write_atomic``): a refused part is a WriteError
    naming it, the parts saved before stay, and the rerun ends with the numbers of one call."""
    from mmc_jax import paths
    from mmc_jax.connectivity import path_eval

    model, variables, _, test = three_tiny_models
    path, ts = paths.linear(variables["a"], variables["b"]), paths.grid(5)
    kwargs = dict(conditions=("nocue",), batch_size=60, bn="interpolate")
    whole = path_eval.evaluate_path(model.apply, path, ts, test, **kwargs)
    with refusing(tmp_path / "count") as counted:
        path_eval.evaluate_path(
            model.apply, path, ts, test, store=tmp_path / "count", part_size=2, **kwargs
        )
    assert len(counted.writes) >= 8  # the folder, points.npy, three parts
    for at in range(1, len(counted.writes) + 1):
        store = tmp_path / f"at_{at}"
        with refusing(store, at) as faults, pytest.raises(WriteError) as raised:
            path_eval.evaluate_path(model.apply, path, ts, test, store=store, part_size=2, **kwargs)
        assert_refused(raised.value, faults, store)
        assert re.fullmatch(
            rf"cannot write {store}/(points.npy|part_0000\d.npz): {FULL}", str(raised.value)
        )
        again = path_eval.evaluate_path(
            model.apply, path, ts, test, store=store, part_size=2, **kwargs
        )
        np.testing.assert_allclose(
            again.metrics["nocue"]["loss"], whole.metrics["nocue"]["loss"], atol=1e-6
        )


# --- TensorBoard ---------------------------------------------------------------------------


@pytest.mark.parametrize("at", [1, 2], ids=["folder", "file"])
def test_refused_event_writes_warn_once_and_the_run_goes_on(tmp_path, at, caplog):
    """Event files are a view of the run: a refused write (creating the folder or the file)
    is one warning, and later events are skipped without another."""
    with refusing(tmp_path, at, match="tensorboard"), caplog.at_level("WARNING"):
        with tensorboard.open_log(tmp_path) as log:
            log.scalars(1, {"a": 1.0})
            log.scalars(2, {"a": 2.0})
            log.figure("curves", plots.training_curves([], "empty"))
            log.scalars(3, {"a": 3.0})
    warned = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warned) == 1, warned
    assert re.fullmatch(
        rf"TensorBoard events cannot be written to {tmp_path}/tensorboard\S*: {FULL}; "
        "the run goes on without them",
        warned[0],
    )


def test_a_refused_event_append_is_a_warning(tmp_path, monkeypatch, caplog):
    """An append refused after the file was created: one warning, the events before it
    stay readable."""
    with tensorboard.open_log(tmp_path) as log:
        log.scalars(1, {"a": 1.0})
        file = log._file

        class Full:
            def write(self, data):
                raise OSError(errno.ENOSPC, FULL)

            def close(self):
                file.close()

        log._file = Full()
        with caplog.at_level("WARNING"):
            log.scalars(2, {"a": 2.0})
            log.scalars(3, {"a": 3.0})
    assert sum("TensorBoard" in r.getMessage() for r in caplog.records) == 1
    assert events.scalars(tmp_path / tensorboard.FOLDER)["a"] == [(1, 1.0)]


# --- a whole run ---------------------------------------------------------------------------


RUN = training.TrainConfig.of(tiny_train_config(epochs=2, cue_proportion=0.5, num_train=128))


def _run(workdir):
    """A tiny ``experiments.train`` run in-process: train (two epochs, two checkpoints),
    then its outputs, as the entry point writes them; returns the results.json dict and the
    final train state."""
    out = training.train_and_evaluate(RUN, str(workdir), progress=False)
    result = {**out["result"], "history": out["history"]}
    files.write_json(workdir / "results.json", result)
    files.write_atomic(workdir / "results.md", f"# {result['model']}\n")
    with tensorboard.open_log(workdir) as log:
        log.tree(result["epochs"], {"test": result["test"]})
        tensorboard.save_figure(
            log, workdir / "curves.png", plots.training_curves(out["history"], "a")
        )
    return result, out["state"]


def _same(result):
    return {k: v for k, v in result.items() if k != "seconds"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A run that never failed: its results, final state, and every write it made."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    with refusing(workdir) as counted:
        result, state = _run(workdir)
    return _same(result), state, counted.writes


@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_run_refused_at_any_write_resumes_as_if_it_never_failed(
    data, uninterrupted, tmp_path_factory
):
    expected, expected_state, writes = uninterrupted
    at = data.draw(st.integers(1, len(writes)), label="refused write")
    once = data.draw(st.booleans(), label="only that write")
    workdir, threads = tmp_path_factory.mktemp("refused"), set(threading.enumerate())
    with refusing(workdir, at, once=once) as faults:
        try:
            _run(workdir)
            failed = None
        except WriteError as err:
            failed = err
    event, path = faults.refused[0]
    if failed is None:  # only an event file was refused: one warning, the run went on
        assert once and path.startswith(tensorboard.FOLDER), faults.refused
    else:
        assert_refused(failed, faults, workdir)
    assert stranded(threads) == [], faults.refused
    saved = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    if saved:  # the latest checkpoint left restores, without falling back to an earlier one
        restored, _ = _restorable(workdir, RUN, expected_state)
        assert int(restored.step) == max(saved), faults.refused
    again, state = _run(workdir)
    assert _same(again) == expected
    chex.assert_trees_all_equal(state.params, expected_state.params)


# --- the entry point -----------------------------------------------------------------------

TRAIN = [
    "--config.model.width=0.25",
    "--config.data.num_train=128",
    "--config.data.num_test=60",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=2",
    "--config.eval_batch_size=60",
]


def _hook_site(folder: pathlib.Path) -> pathlib.Path:
    """A ``sitecustomize.py`` that installs :class:`Faults` from the environment of the
    process (``FAULT_ROOT``, ``FAULT_AT``, ``FAULT_MATCH``, ``FAULT_ERRNO``)."""
    folder.mkdir()
    source = textwrap.dedent(
        """
        import errno, hashlib, os, pathlib, re, sys, threading

        class tensorboard:
            FOLDER = "tensorboard"
        """
    )
    for helper in (Faults, unfinished, finished_files):
        source += "\n\n" + inspect.getsource(helper)
    source += textwrap.dedent(
        """

        if os.environ.get("FAULT_ROOT"):
            sys.addaudithook(
                Faults(
                    os.environ["FAULT_ROOT"],
                    int(os.environ["FAULT_AT"]),
                    code=int(os.environ.get("FAULT_ERRNO", errno.ENOSPC)),
                    match=os.environ.get("FAULT_MATCH", ""),
                )
            )
        """
    )
    (folder / "sitecustomize.py").write_text(source)
    return folder


@pytest.mark.slow
def test_train_cli_on_a_full_disk_says_one_line_and_exits_74(tmp_path):
    site = _hook_site(tmp_path / "site")
    workdir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "FAULT_ROOT": str(workdir),
        "FAULT_MATCH": r"^checkpoints/",
        "FAULT_AT": "20",  # inside the second checkpoint (about 16 writes each)
    }
    command = [sys.executable, "-m", "experiments.train", *TRAIN, f"--workdir={workdir}"]
    refused = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 74, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr, refused.stderr[-3000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot write {workdir / 'checkpoints' / '4'}: {FULL}", last
    assert leftovers(workdir) == [] and not (workdir / "results.json").exists()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
    # With room on the disk again, the same command resumes and finishes.
    env = {k: v for k, v in env.items() if not k.startswith("FAULT_")}
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from step 2" in again.stderr
    assert json.loads((workdir / "results.json").read_text())["history"][-1]["step"] == 4


def _limit_file_size():
    """In the child process: files may not grow beyond 4 KiB (EFBIG instead of a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@pytest.mark.slow
def test_train_cli_refused_by_tensorstore_says_one_line(tmp_path):
    """The arrays of a checkpoint are refused inside tensorstore's threads, while orbax has
    more writes in flight: still one line, and none of their late reports."""
    command = [sys.executable, "-m", "experiments.train", *TRAIN]
    warm = subprocess.run(  # the data and compilation caches, which the limit would refuse
        [*command, f"--workdir={tmp_path / 'warm'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert warm.returncode == 0, warm.stderr[-3000:]
    workdir = tmp_path / "run"
    refused = subprocess.run(
        [*command, f"--workdir={workdir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=120,  # no thread of the failed save may hold the exit (orbax waits minutes)
    )
    assert refused.returncode == 74, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr and "never retrieved" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot write {workdir / 'checkpoints' / '2'}: File too large", last
    assert leftovers(workdir) == [] and list((workdir / "checkpoints").iterdir()) == []


# --- a read-only workdir -------------------------------------------------------------------


@contextlib.contextmanager
def _read_only(folder: pathlib.Path, kind: str):
    """``folder`` read-only for root too (tests run as root, which chmod does not stop):
    ``mount``, a read-only bind mount; ``immutable``, the immutable attribute on it and
    every folder below; ``simulated``, every write under it refused with EROFS. Yields the
    errno a write meets; skips when this machine does not allow ``mount`` or ``immutable``."""
    if kind == "simulated":
        with refusing(folder, 1, code=errno.EROFS):
            yield errno.EROFS
    elif kind == "mount":
        if not _mount("--bind", str(folder), str(folder)):
            pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN)")
        try:
            if not _mount("-o", "remount,bind,ro", str(folder)):
                pytest.skip("cannot remount a bind mount read-only here")
            yield errno.EROFS
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True)
    else:
        folders = [str(folder), *(str(p) for p in folder.rglob("*") if p.is_dir())]
        made = subprocess.run(["chattr", "+i", *folders], capture_output=True)
        try:
            if made.returncode:
                pytest.skip(f"cannot set the immutable attribute here ({made.stderr.strip()!r})")
            yield errno.EPERM
        finally:
            subprocess.run(["chattr", "-i", *folders], capture_output=True)


@pytest.mark.parametrize("kind", ["mount", "immutable", "simulated"])
def test_a_read_only_workdir_is_one_write_error_and_stays_as_it_was(uninterrupted, tmp_path, kind):
    workdir = tmp_path / "run"
    training.train_and_evaluate(RUN, str(workdir), progress=False)
    (workdir / "results.json").write_text('{"previous": true}\n')
    before = finished_files(workdir)
    with _read_only(workdir, kind) as code:
        with pytest.raises(WriteError) as raised:
            _run(workdir)
        assert raised.value.errno == code
        assert re.fullmatch(rf"cannot write {workdir}/\S+: {os.strerror(code)}", str(raised.value))
        assert finished_files(workdir) == before and leftovers(workdir) == []
        _, variables, _ = training.load_model(workdir)  # still readable
    restored = _restorable(workdir, RUN, uninterrupted[1])[0]
    assert int(restored.step) == 4
    assert json.loads((workdir / "results.json").read_text()) == {"previous": True}
    chex.assert_trees_all_equal(variables["params"], restored.params)
