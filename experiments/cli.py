"""What every entry point shares: absl flags, the config flag, the workdir, error handling.

An entry point is an :class:`Entry`; :func:`run` parses its command line (:func:`parse`),
checks it (:func:`check`: every config field by :mod:`experiments.fields`, the workdir,
the entry point's own checks) before anything is written, then holds the workdir and runs
it. Exit status: 2 for a bad command line or input (one ``error: ...`` line, nothing
written), 74 for a file that could not be written (one line, the previous files intact),
128 + signal for a run stopped by Ctrl-C or SIGTERM (one line; rerun to continue), 1 for
a job whose units failed (one line naming them and their logs; rerun to resume) and for
anything else (with its traceback). A run holds its workdir: a second process started on it
is refused with one line until the first ends (or is killed: the lock goes with it).
What a run is doing goes through absl logging (INFO, standard error, no prefixes); the
results tables go to standard output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as std_logging
import os
import pathlib
import re
import shutil
import sys
from typing import Any, Callable, Iterator, Sequence

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

from absl import app, flags, logging
from ml_collections import config_flags

import experiments
import mmc_jax
from experiments import cluster
from mmc_jax import runtime
from mmc_jax.jobs.outcomes import UnitFailed
from mmc_jax.reporting import files, plots
from mmc_jax.runtime import distributed, stopping
from mmc_jax.runtime.errors import InputError, WriteError
from mmc_jax.runtime.stopping import Interrupted

#: What an entry point leaves in its workdir; ``--restart`` deletes only folders holding one.
WORKDIR_MARKERS = ("config.json", "checkpoints", "results.json", files.LAYOUT_FILE)
#: Exit status of a run whose command line or input is wrong (nothing was written).
EXIT_INPUT = 2
#: Exit status of a run that could not write a file (disk full, no permission).
EXIT_WRITE = 74
#: Exit status of a job whose units failed (the others completed; their logs say why).
EXIT_UNITS = 1
#: The file a live run holds locked in its workdir.
LOCK_FILE = ".lock"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry point: its default config and workdir, its own flags, the checks of its
    command line (run before anything is written) and its work.

    Attributes:
      name: the module's name under ``experiments`` (``train``, ``cbft``, ...).
      main: ``main(args, checked)`` does the work; ``args`` are the parsed flags
        (``args.config``, ``args.workdir`` and the entry point's own), ``checked`` what
        ``check`` returned (e.g. the typed config or the named model folders).
      config: the default config file (``path[:argument]``).
      workdir: the default ``--workdir``.
      define: ``define(flag_values)`` defines the entry point's own flags.
      check: ``check(args)`` raises :class:`mmc_jax.InputError` for what the fields' rules
        (:mod:`experiments.fields`) cannot see: folders that must hold a model, pairs of
        models that must match, flags that exclude each other.
    """

    name: str
    main: Callable[[flags.FlagValues, Any], Any]
    config: str
    workdir: str
    define: Callable[[flags.FlagValues], None] = lambda flag_values: None
    check: Callable[[flags.FlagValues], Any] = lambda args: None
    #: ``main`` runs a job of units on the execution flags' executor (cbft, sweep); otherwise
    #: the whole command is one unit (:func:`run_as_unit`).
    runs_units: bool = False


def parse(entry: Entry, argv: Sequence[str], flag_values: flags.FlagValues | None = None):
    """Defines ``entry``'s flags on ``flag_values`` (default: a new, private set) and parses
    ``argv`` (``argv[0]`` is the program) into them; returns the flag values.

    Raises:
      InputError: any mistake of the command line (unknown flag or config field, a value of
        the wrong type, a config file that is missing or fails), as one line.
    """
    flag_values = flags.FlagValues() if flag_values is None else flag_values
    argv = [_execution_flag(a) for a in argv]
    try:
        with _absl_warnings_off():
            config_flags.DEFINE_config_file(
                "config",
                entry.config,
                "Experiment configuration file (fields override with --config.field=value).",
                flag_values=flag_values,
                lock_config=True,
                sys_argv=argv,
            )
            flags.DEFINE_string(
                "workdir",
                entry.workdir,
                "Folder for checkpoints and results.",
                flag_values=flag_values,
            )
            flags.DEFINE_bool(
                "restart",
                False,
                "Delete --workdir (a previous run's checkpoints and results) and start over "
                "instead of resuming.",
                flag_values=flag_values,
            )
            define_execution(flag_values)
            cluster.define(flag_values)
            entry.define(flag_values)
            rest = flag_values(argv)
            config = flag_values.config
            config.get("")  # a config file that failed to load raises here
    except flags.Error as err:
        raise InputError(_flag_error(str(err), argv, entry.config)) from None
    except (AttributeError, KeyError) as err:
        raise InputError(_unknown_field(err, argv, entry.config)) from None
    except (OSError, TypeError, ValueError) as err:  # the config file's own failure
        raise InputError(_config_file_error(err, argv, entry.config)) from None
    if len(rest) > 1:
        raise InputError(
            f"unexpected argument {rest[1]!r}; flags are written --name=value "
            f"(python -m experiments.{entry.name} --help lists them)"
        )
    return flag_values


#: The execution flags: where a job's units run, not what they compute, so they are flags
#: rather than config fields (a workdir's config does not depend on them). Each is also
#: accepted as ``--config.<name>``.
EXECUTION_FLAGS = ("executor", "workers", "ray_address")


def define_execution(flag_values: flags.FlagValues) -> None:
    """Defines the execution flags (:data:`EXECUTION_FLAGS`) on ``flag_values``."""
    flags.DEFINE_string(
        "executor",
        "auto",
        "Where the units of the job run: auto (processes on a CPU-only machine with 2+ cores, "
        "else inline) | inline | processes | ray. Also --config.executor.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "workers",
        0,
        "Units at a time for --executor=processes, CPUs of a local Ray (0: the number of "
        "cores). Also --config.workers.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "ray_address",
        "",
        "--executor=ray: the cluster to join (auto or HOST:PORT); empty: a local Ray. Also "
        "--config.ray_address.",
        flag_values=flag_values,
    )


def _execution_flag(arg: str) -> str:
    """``--config.executor=...`` (and the other execution flags) as the flag it is."""
    found = re.match(r"^--config\.(\w+)(=.*)?$", arg)
    if found and found.group(1) in EXECUTION_FLAGS:
        return f"--{found.group(1)}{found.group(2) or ''}"
    return arg


def execution(args: flags.FlagValues):
    """The :class:`mmc_jax.jobs.Execution` of the parsed execution flags.

    Raises:
      InputError: an unknown executor or a negative number of workers, as one line.
    """
    from mmc_jax import jobs

    return jobs.Execution.of({name: args[name].value for name in EXECUTION_FLAGS})


def run_as_unit(entry: Entry, argv: Sequence[str], workdir: pathlib.Path, where) -> None:
    """The whole command as one unit on ``where``'s executor (``processes``: a process of its
    own; ``ray``: a Ray task, e.g. on a cluster's GPU node): its output goes to
    ``workdir/unit.log``, its results table is printed here. ``auto`` and ``inline`` run a
    one-unit command in this process (another process would only add its start-up)."""
    from mmc_jax import jobs

    skip = re.compile(r"^--(no)?(executor|workers|ray_address|restart|workdir)(=|$)")
    command = [a for a in map(_execution_flag, argv[1:]) if not skip.match(a)]
    unit = jobs.Unit(
        entry.name,
        "experiments.cli:unit_main",
        str(workdir),
        {"entry": entry.name, "argv": command, "workdir": str(workdir)},
    )
    jobs.execute(jobs.Job([unit]), where)
    table = workdir / "results.md"
    if table.is_file():
        print(table.read_text())


def unit_main(entry: str, argv: list[str], workdir: str) -> dict:
    """Unit of :func:`run_as_unit`: ``python -m experiments.<entry> ARGV --workdir=WORKDIR``
    in this process (its checks, then its work; the driver holds the workdir)."""
    import importlib

    module = importlib.import_module(f"experiments.{entry}")
    args = parse(module.ENTRY, [entry, *argv, f"--workdir={workdir}"])
    module.ENTRY.main(args, check(module.ENTRY, args))
    return {}


def check(entry: Entry, args: flags.FlagValues) -> Any:
    """Every check of a parsed command line that needs no long work: each config field by
    its rule, the workdir, then the entry point's own checks, whose result it returns.

    Raises:
      InputError: the first problem, as one line naming the field, flag or path.
    """
    from experiments import fields  # its rules name experiments.methods' methods, which warn here

    fields.check_config(args.config)
    execution(args)
    check_workdir(args.workdir, args.restart)
    return entry.check(args)


def check_workdir(value: str, restart: bool = False) -> pathlib.Path:
    """``--workdir``: a folder or a place where one can be made (and, with ``--restart``,
    a folder that an entry point wrote); returns its resolved path."""
    accepted = "--workdir must be a folder (made when missing)"
    if not value:
        raise InputError(f"{accepted}, got ''")
    path = pathlib.Path(value).expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{accepted}, got {value!r}: {existing} is a file")
    if restart and path.exists():
        check_restartable(path)
    elif path.is_dir():  # a run to resume: written by a layout this mmc_jax reads
        files.check_layout(path, restart_hint=True)
    return path


def check_restartable(path: pathlib.Path) -> None:
    """Raises InputError unless ``--restart`` may delete ``path``: empty, or written by an
    entry point (so a mistyped ``--workdir`` cannot delete anything else)."""
    entries = [p for p in path.iterdir() if p.name != LOCK_FILE]
    if entries and not any(p.name in WORKDIR_MARKERS for p in path.rglob("*")):
        raise InputError(
            f"--restart: {path} does not look like an mmc_jax workdir (no "
            f"{', '.join(WORKDIR_MARKERS)} inside); delete it yourself"
        )


@contextlib.contextmanager
def _absl_warnings_off():
    """absl's own logging of flag problems stays quiet: the one error line says it all."""
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def clear_workdir(workdir: str) -> None:
    """Deletes a previous run's workdir (``--restart``), except the lock this run holds;
    refuses folders that no entry point wrote (:func:`check_restartable`)."""
    path = pathlib.Path(workdir).expanduser().resolve()
    if not path.exists():
        return
    check_restartable(path)
    for entry in path.iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


@contextlib.contextmanager
def hold_workdir(workdir: str) -> Iterator[pathlib.Path]:
    """Holds ``workdir`` for this process (an exclusive ``flock`` on ``workdir/.lock``, which
    the kernel releases when the process ends, killed or not). When the block ends, the lock
    file goes, and so do the folders it made that hold nothing else than the layout
    version: a run refused early leaves nothing behind.

    Raises:
      InputError: another live process holds it.
    """
    path = pathlib.Path(workdir).expanduser().resolve()
    if fcntl is None:
        yield path
        return
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(path, err) from err
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        _remove_empty(made)
        raise WriteError(path / LOCK_FILE, err) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InputError(
                f"{path} is in use by another run (pid {owner}); wait for it to "
                "end or choose another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield path
        finally:
            (path / LOCK_FILE).unlink(missing_ok=True)  # still held: no other run has it
            if made and {p.name for p in path.iterdir()} == {files.LAYOUT_FILE}:
                (path / files.LAYOUT_FILE).unlink()  # a run that wrote nothing else
            _remove_empty(made)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _shared_workdir(workdir: str) -> Iterator[pathlib.Path]:
    """The workdir of a process other than 0 in a run over several processes: process 0 holds
    it (:func:`hold_workdir`)."""
    yield pathlib.Path(workdir).expanduser().resolve()


def _remove_empty(folders: list[pathlib.Path]) -> None:
    """Removes the folders (deepest first) that are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def config_path(module_file: str, name: str) -> str:
    """Path of ``experiments/configs/<name>.py`` next to an entry point module."""
    return str(pathlib.Path(module_file).resolve().parent / "configs" / f"{name}.py")


class _OwnInfo(std_logging.Filter):
    """Passes warnings and errors from everywhere, INFO only from this project's packages
    (the libraries' own INFO lines, orbax's among them, would bury the progress bars)."""

    ROOTS = tuple(str(pathlib.Path(m.__file__).resolve().parent) for m in (mmc_jax, experiments))

    def filter(self, record) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(self.ROOTS)


class _Plain(std_logging.Formatter):
    """The message alone for INFO (what a run is doing), ``warning: ...`` above it."""

    def format(self, record) -> str:
        text = record.getMessage()
        return (
            text
            if record.levelno < std_logging.WARNING
            else (f"{record.levelname.lower()}: {text}")
        )


def show_own_progress() -> None:
    """absl logging at INFO, on standard error, without prefixes, for this project's
    messages (``logging.info("resuming ...")``); other packages' at WARNING and above."""
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    handler.setFormatter(_Plain())
    if not any(isinstance(f, _OwnInfo) for f in handler.filters):
        handler.addFilter(_OwnInfo())


def run(entry: Entry) -> None:
    """Runs ``entry`` as a program: ``absl.app.run`` with :mod:`mmc_jax.runtime`'s settings
    (compilation cache, host allocator). The command line is parsed and checked before the
    workdir is touched; the workdir is held while the work runs.

    Exit status: 0 done; 2 (:data:`EXIT_INPUT`) a bad command line or input, one
    ``error: ...`` line, nothing written; 74 (:data:`EXIT_WRITE`) a file could not be
    written, one line, earlier files intact; 128 + signal (130 Ctrl-C, 143 SIGTERM) stopped,
    one line, rerun to continue; 1 anything else, with its traceback.
    """

    given: list[str] = []

    def parse_or_exit(argv):
        given.extend(argv)
        try:
            parse(entry, argv, flags.FLAGS)
        except InputError as err:
            _exit_with(str(err))
        return argv[:1]

    def guarded(argv):
        del argv
        show_own_progress()
        plots.load()  # before SIGINT/SIGTERM can stop the run (see plots.load)
        args = flags.FLAGS
        stop_watching = None
        try:
            stop_watching = cluster.join(args)
            several = stop_watching is not None
            checked = check(entry, args)
            main = distributed.is_main()
            held = hold_workdir(args.workdir) if main else _shared_workdir(args.workdir)
            with stopping.raise_on_signals(), held as workdir:
                logging.info(f"workdir: {workdir}")
                if main and args.restart:
                    clear_workdir(args.workdir)
                if main:
                    files.mark_layout(workdir)
                distributed.barrier("workdir ready")  # process 0 holds and prepared it
                where = execution(args)
                if several and where.executor not in ("auto", "inline"):
                    raise InputError(
                        f"--executor={where.executor} runs units in processes of their own; "
                        "a run over several processes (--coordinator_address, --distributed) "
                        "runs them inline"
                    )
                if entry.runs_units or where.executor in ("auto", "inline"):
                    entry.main(args, checked)
                else:
                    run_as_unit(entry, given, workdir, where)
                distributed.barrier("finished")  # no process is left waiting for another
        except UnitFailed as err:  # the traceback is in the unit's log
            _exit_with(str(err), EXIT_UNITS)
        except InputError as err:
            _exit_with(str(err))
        except Interrupted as stop:  # SIGINT/SIGTERM: what was computed is saved
            print(stop, file=sys.stderr)
            sys.exit(stop.exit_code)
        except WriteError as err:  # disk full, no permission: earlier files are intact
            _exit_with(str(err), EXIT_WRITE)
        except Exception as err:  # noqa: BLE001 - a process of the run is gone: one line
            line = cluster.lost_partner(err)
            if line is None:
                raise
            cluster.leave(line)
        finally:
            if stop_watching is not None:
                stop_watching()
                distributed.shutdown()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runtime.tune_host_allocator()
    runtime.enable_compilation_cache()
    app.run(guarded, flags_parser=parse_or_exit)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _flag_error(message: str, argv: list[str], config_file: str) -> str:
    """One line for absl's flag errors (unknown flag, a value of the wrong type)."""
    if "Error whilst parsing config file" in message:
        return _config_file_error(ValueError(message), argv, config_file)
    moved = _section_given_a_value(message, argv, config_file)
    if moved:
        return moved
    found = re.match(r"flag --config\.([\w.]+)=(.*?): ", message, re.DOTALL)
    if found:  # a value of the wrong type for a field: what the field accepts
        from experiments import fields

        try:
            rule = fields.rule_of(found.group(1))
        except KeyError:
            return _one_line(message)
        return f"{found.group(1)} must be {rule.accepted()}, got {found.group(2)!r}"
    return _one_line(message)


def _config_file_error(err: Exception, argv: list[str], config_file: str) -> str:
    """One line for a config file that is missing or raised while building its config."""
    given = _config_flag(argv, config_file)
    flag, path = f"--config={given}", given.partition(":")[0]
    if not pathlib.Path(path).expanduser().is_file():
        return f"{flag}: no such config file (give experiments/configs/<name>.py[:argument])"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    return f"{flag}: {last.partition(': ')[2] or last}"


def _config_flag(argv: list[str], default: str | None) -> str | None:
    """The value of the first ``--config=`` in ``argv``, else ``default``."""
    return next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), default)


def _overrides(argv: list[str]) -> list[str]:
    """The config fields that ``argv`` overrides (``--config.a.b=1``, ``--noconfig.flag``)."""
    found = (re.match(r"^--?(?:no)?config\.([^=\s]+)", a) for a in argv[1:])
    return [m.group(1) for m in found if m]


def _unknown_field(err: Exception, argv: list[str], config_file: str) -> str:
    """The message for an override of a config field that does not exist: where a field of
    the flat configs now lives (the configs have sections: data, model, optim...), else the
    fields its section has."""
    from experiments import fields

    fallback = f"unknown config field {str(err).strip(chr(34) + chr(39) + ' ')!r}"
    config = _config_of(argv, config_file)
    if config is None:
        return fallback
    known = fields.leaves(config)
    sections = {
        ".".join(name.split(".")[:i]) for name in known for i in range(1, name.count(".") + 1)
    }
    for given in _overrides(argv):
        if given in known or given in sections:
            continue
        moved = new_places(given, config)
        if moved:
            return f"config field {given!r} is now " + " or ".join(
                f"{m!r} (--config.{m}=...)" for m in moved
            )
        parent = given.rpartition(".")[0]
        while parent and parent not in sections:
            parent = parent.rpartition(".")[0]
        start = len(parent) + 1 if parent else 0
        here = sorted(
            {n[start:].split(".")[0] for n in known if not parent or n.startswith(parent + ".")}
        )
        where = f"section {parent!r} has" if parent else "the config has"
        return f"unknown config field {given!r} (--config.{given}); {where} {', '.join(here)}"
    return fallback


#: Fields whose name changed when they moved into a section: the one table of old names
#: (by the field's last name, or by its full dotted name).
RENAMED = {
    "dataset": "data.name",
    "data_seed": "data.seed",
    "path_points": "path.num_points",
    "path_targets": "path.targets",
    "path_conditions": "path.conditions",
    "eval_batch_size": "path.batch_size",
    "permutation": "permutation.method",
    "model": "model.name",
    "llrt_epochs": "finetune.llrt.epochs",
    "llrt_learning_rate": "finetune.llrt.learning_rate",
    # experiments.cbft's fine-tuning sections, by their full name:
    "optim.medium_lr": "optim.learning_rate",
    "optim.small_lr": "baselines.small_learning_rate",
    "optim.large_lr": "baselines.large_learning_rate",
    "finetune.llrt_epochs": "finetune.llrt.epochs",
    "finetune.llrt_learning_rate": "finetune.llrt.learning_rate",
    "finetune.llrt_weight_decay": "finetune.llrt.weight_decay",
    "finetune.scratch_epochs": "baselines.scratch_epochs",
}


#: Sections that hold a whole config of their own (θ_C's training config in experiments.cbft),
#: which held the same fields before the configs had sections.
NESTED_CONFIGS = ("cue_model",)


def _section_given_a_value(message: str, argv: list[str], config_file: str) -> str | None:
    """The message for a value given to what is now a section (``--config.model=vgg13``)."""
    found = re.search(r"--config\.([\w.]+)=.*as a ConfigDict", message)
    if not found:
        return None
    moved = new_places(found.group(1), _config_of(argv, config_file))
    return (
        (
            f"config field {found.group(1)!r} is now a section; set {moved[0]!r} "
            f"(--config.{moved[0]}=...)"
        )
        if moved
        else None
    )


def new_places(old: str, config) -> list[str]:
    """Where the field ``old`` (dotted) of a flat config lives in ``config``'s sections:
    the field of :data:`RENAMED`, else the fields below the same parent with its name (or
    without a ``curve_`` prefix) in the nearest deeper sections."""
    from experiments import fields

    if config is None:
        return []
    if old in RENAMED:
        return [RENAMED[old]] if RENAMED[old] in fields.leaves(config) else []
    parent, _, last = old.rpartition(".")
    base = f"{parent}." if parent else ""
    if last in RENAMED:
        return [base + RENAMED[last]] if base + RENAMED[last] in fields.leaves(config) else []
    names = {last, last.removeprefix("curve_")}
    places = [
        f
        for f in fields.leaves(config)
        if f.startswith(base)
        and f.count(".") > old.count(".")
        and f.rpartition(".")[2] in names
        and f.split(".")[old.count(".")] not in NESTED_CONFIGS
    ]
    places = [f for f in places if f.count(".") == min(p.count(".") for p in places)]
    exact = [f for f in places if f.endswith(f".{last}")]
    return (exact if len(exact) == 1 else places)[:3]


def _config_of(argv: list[str], default: str | None):
    """The config that ``--config`` (or the entry point's default) names, or None."""
    import importlib.util

    flag = _config_flag(argv, default)
    if not flag:
        return None
    path, _, arg = str(flag).partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_config_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # the config file's own error is reported elsewhere
        return None


def warn(warnings) -> None:
    """Prints each warning on standard error, where it stands out from the progress bars
    and tables (the run goes on: what was computed is kept)."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _exit_with(message: str, code: int = EXIT_INPUT):
    print(f"error: {_one_line(message)}", file=sys.stderr)
    sys.exit(code)
