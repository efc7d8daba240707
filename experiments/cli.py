"""What every entry point shares: absl flags, the config flag, the workdir, error handling.

User errors (:class:`mmc_jax.InputError`) are printed as one line and exit with status 2;
a run stopped by SIGINT/SIGTERM (after saving a checkpoint) exits with status 130;
everything else keeps its traceback. A run holds its workdir: a second process started on it
is refused with one line until the first ends (or is killed: the lock goes with it).
What a run is doing goes through absl logging (INFO, standard error, no prefixes); the
results tables go to standard output.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import pathlib
import re
import shutil
import sys
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

from absl import app, flags, logging
from ml_collections import config_flags

import experiments
import mmc_jax
from mmc_jax import runtime, stopping
from mmc_jax.errors import InputError, WriteError
from mmc_jax.stopping import Interrupted

#: What an entry point leaves in its workdir; ``--restart`` deletes only folders holding one.
WORKDIR_MARKERS = ("config.json", "checkpoints", "results.json")
#: Exit status of a run whose command line or input is wrong (nothing was written).
EXIT_INPUT = 2
#: Exit status of a run that could not write a file (disk full, no permission).
EXIT_WRITE = 74
#: The file a live run holds locked in its workdir.
LOCK_FILE = ".lock"

RESTART = flags.DEFINE_bool(
    "restart",
    False,
    "Delete --workdir (a previous run's "
    "checkpoints and results) and start over instead of resuming.",
)


def define_flags(default_config: str, default_workdir: str):
    """Defines ``--config`` (an ml_collections config file) and ``--workdir``."""
    try:  # config_flags reads the --config.field overrides right here
        config = config_flags.DEFINE_config_file(
            "config",
            default_config,
            "Experiment configuration file (fields override with --config.field=value).",
            lock_config=True,
        )
    except (AttributeError, KeyError) as err:
        _exit_with(_unknown_field(err, sys.argv, default_config))
    workdir = flags.DEFINE_string("workdir", default_workdir, "Folder for checkpoints and results.")
    return config, workdir


def clear_workdir(workdir: str) -> None:
    """Deletes a previous run's workdir (``--restart``); refuses folders that no entry point
    wrote, so a mistyped ``--workdir`` cannot delete anything else."""
    path = pathlib.Path(workdir).expanduser().resolve()
    entries = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.exists() else []
    if not entries:
        return
    runs = [p for p in path.rglob("*") if p.name in WORKDIR_MARKERS]
    if not runs:
        raise InputError(
            f"--restart: {path} does not look like an mmc_jax workdir (no "
            f"{', '.join(WORKDIR_MARKERS)} inside); delete it yourself"
        )
    for entry in entries:  # the lock stays: this run holds it
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


@contextlib.contextmanager
def hold_workdir(workdir: str) -> Iterator[pathlib.Path]:
    """Holds ``workdir`` for this process (an exclusive ``flock`` on ``workdir/.lock``, which
    the kernel releases when the process ends, killed or not).

    Raises:
      InputError: another live process holds it.
    """
    path = pathlib.Path(workdir).expanduser().resolve()
    if fcntl is None:
        yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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
        yield path
    finally:
        os.close(fd)  # releases the lock


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


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with :mod:`mmc_jax.runtime`'s settings (compilation cache,
    host allocator), turning InputError into a one-line message and exit code 2."""

    def guarded(argv):
        show_own_progress()
        try:
            with stopping.raise_on_signals(), hold_workdir(flags.FLAGS.workdir) as workdir:
                logging.info(f"workdir: {workdir}")
                if RESTART.value:
                    clear_workdir(flags.FLAGS.workdir)
                main(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as stop:  # SIGINT/SIGTERM: what was computed is saved
            print(stop, file=sys.stderr)
            sys.exit(stop.exit_code)
        except WriteError as err:  # disk full, no permission: earlier files are intact
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_WRITE)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runtime.tune_host_allocator()
    runtime.enable_compilation_cache()
    app.run(guarded, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every command-line mistake (unknown flag or config field,
    a value of the wrong type) reported as one line and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        _exit_with(_section_given_a_value(str(err), argv) or str(err))
    except (AttributeError, KeyError) as err:
        _exit_with(_unknown_field(err, argv, flags.FLAGS["config"].default_unparsed))


def _unknown_field(err: Exception, argv: list[str], default: str | None = None) -> str:
    """The message for an override of a config field that does not exist, naming where a
    field of the flat configs now lives (the configs have sections: data, model, optim...)."""
    given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    text = str(err).strip("\"' ")
    name = text.split("Attempting to lookup: ")[-1] if "lookup:" in text else text
    match = [g for g in given if g.endswith(name)] or given
    if match:
        moved = new_places(match[0][len("--config.") :], _config_of(argv, default))
        if moved:
            return f"config field {match[0][len('--config.') :]!r} is now " + " or ".join(
                f"{m!r} (--config.{m}=...)" for m in moved
            )
    where = f" ({match[0]})" if match else ""
    return f"unknown config field {name!r}{where}; see the config file for the fields"


#: Fields of the flat configs whose name changed when they moved into a section.
RENAMED = {
    "dataset": "data.name",
    "data_seed": "data.seed",
    "path_points": "path.num_points",
    "path_targets": "path.targets",
    "path_conditions": "path.conditions",
    "eval_batch_size": "path.batch_size",
    "permutation": "permutation.method",
    "model": "model.name",
}


#: Sections that hold a whole config of their own (θ_C's training config in experiments.cbft),
#: which held the same fields before the configs had sections.
NESTED_CONFIGS = ("cue_model",)


def _section_given_a_value(message: str, argv: list[str]) -> str | None:
    """The message for a value given to what is now a section (``--config.model=vgg13``)."""
    found = re.search(r"--config\.([\w.]+)=.*as a ConfigDict", message)
    if not found:
        return None
    moved = new_places(found.group(1), _config_of(argv, flags.FLAGS["config"].default_unparsed))
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
    without a ``curve_`` prefix) one section deeper."""
    if config is None:
        return []
    parent, _, last = old.rpartition(".")
    base = f"{parent}." if parent else ""
    if last in RENAMED:
        return [base + RENAMED[last]] if base + RENAMED[last] in _leaves(config) else []
    names = {last, last.removeprefix("curve_")}
    places = [
        f
        for f in _leaves(config)
        if f.startswith(base)
        and f.count(".") == old.count(".") + 1
        and f.rpartition(".")[2] in names
        and f.split(".")[old.count(".")] not in NESTED_CONFIGS
    ]
    exact = [f for f in places if f.endswith(f".{last}")]
    return (exact if len(exact) == 1 else places)[:3]


def _leaves(config, prefix: str = "") -> list[str]:
    """Dotted names of a ConfigDict's fields (not its sections)."""
    out = []
    for key, value in config.items():
        if hasattr(value, "items"):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _config_of(argv: list[str], default: str | None):
    """The config that ``--config`` (or the entry point's default) names, or None."""
    import importlib.util

    flag = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), default)
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


def _exit_with(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
