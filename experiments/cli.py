"""What every entry point shares: absl flags, the config flag, the workdir, error handling.

User errors (:class:`mmc_jax.InputError`) are printed as one line and exit with status 2;
everything else keeps its traceback.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from mmc_jax import runtime
from mmc_jax.errors import InputError


def define_flags(default_config: str, default_workdir: str):
    """Defines ``--config`` (an ml_collections config file) and ``--workdir``."""
    config = config_flags.DEFINE_config_file(
        "config", default_config, "Experiment configuration file (fields override with "
        "--config.field=value).", lock_config=True)
    workdir = flags.DEFINE_string("workdir", default_workdir,
                                  "Folder for checkpoints and results.")
    return config, workdir


def config_path(module_file: str, name: str) -> str:
    """Path of ``experiments/configs/<name>.py`` next to an entry point module."""
    return str(pathlib.Path(module_file).resolve().parent / "configs" / f"{name}.py")


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with :mod:`mmc_jax.runtime`'s settings (compilation cache,
    host allocator), turning InputError into a one-line message and exit code 2."""

    def guarded(argv):
        logging.set_verbosity(logging.WARNING)  # absl's INFO lines bury the progress bars
        try:
            main(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runtime.tune_host_allocator()
    runtime.enable_compilation_cache()
    app.run(guarded)

