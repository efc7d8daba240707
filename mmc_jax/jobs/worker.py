"""One unit in a process of its own (:func:`launch`; :func:`main` runs in it).

The ``processes`` and ``ray`` executors start each unit this way (:func:`launch`), so a unit
runs with the same settings wherever it runs: pinned to the cores it was given, with XLA's
thread pool of the size the job chose (``NPROC``; XLA's CPU results depend on its thread
pool's size, not on the cores the threads run on, so a fixed size keeps results
bit-identical between executors), the persistent compilation cache and the tuned host
allocator. Its output goes to the unit's log; the process dies with the one that started it.

Exit status: 0 done (the record written), 2 bad input (one ``error:`` line), 128 + signal
stopped, 1 anything else (with its traceback).
"""

from __future__ import annotations

import ctypes
import json
import logging as std_logging
import os
import pathlib
import signal
import subprocess
import sys
import traceback
from typing import Mapping, Optional, Sequence

#: The environment variable naming the size of XLA's CPU thread pool.
POOL_SIZE = "NPROC"
_PR_SET_PDEATHSIG = 1
#: What a worker process runs (``-m`` would import this module twice: its package imports it).
_MAIN = "import sys; from mmc_jax.jobs import worker; sys.exit(worker.main(sys.argv))"


def pool_size() -> int:
    """The size of XLA's CPU thread pool in this process: ``$NPROC``, else the cores this
    process may run on (what XLA itself would choose)."""
    given = os.environ.get(POOL_SIZE, "")
    return int(given) if given.isdigit() and int(given) > 0 else len(cores())


def cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def command(unit, folders: Mapping[str, str], cores: Optional[Sequence[int]] = None) -> list:
    """The command line that runs ``unit`` (``folders``: the folders of its inputs) on
    ``cores`` (all this process's when None)."""
    spec = {
        "unit": unit.spec(),
        "folders": {name: str(folders[name]) for name in unit.inputs},
        "cores": list(cores) if cores else None,
        "parent": os.getpid(),
    }
    return [sys.executable, "-c", _MAIN, json.dumps(spec)]


def package_root(job) -> str:
    """The folder holding the packages of ``job``'s unit functions (for ``PYTHONPATH``)."""
    import importlib

    files = {
        pathlib.Path(importlib.import_module(u.target.partition(":")[0].split(".")[0]).__file__)
        for u in job
    }
    roots = {str(f.parents[1] if f.name == "__init__.py" else f.parent) for f in files}
    return os.pathsep.join(sorted(roots))


def environment(pool: int, root: str = "") -> dict:
    """A worker's environment: this one's, with ``root``'s packages importable, XLA's pool
    size fixed to ``pool``, and progress bars that refresh rarely (they go to a file)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env[POOL_SIZE] = str(pool)
    env.setdefault("TQDM_MININTERVAL", "5")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def launch(
    unit, folders: Mapping[str, str], cores=None, pool: Optional[int] = None, root: str = ""
):
    """Starts ``unit`` in a new process writing its log (on ``cores``, XLA's pool of size
    ``pool``, ``root`` on its ``PYTHONPATH``); returns the ``subprocess.Popen``."""
    log = pathlib.Path(unit.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            command(unit, folders, cores),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment(pool or pool_size(), root),
        )


def _follow_parent(parent: int) -> None:
    """This process is killed when the process that started it dies (Linux)."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def _show_progress(roots: Sequence[str]) -> None:
    """INFO from the project's own code (``roots``), warnings from everywhere, timestamped."""
    from absl import flags, logging

    flags.FLAGS.mark_as_parsed()  # no flags here; absl would warn on the first line
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(
        lambda r: r.levelno >= std_logging.WARNING or r.pathname.startswith(tuple(roots))
    )


def main(argv: Sequence[str]) -> int:
    """Runs the unit of ``argv[1]``; returns the exit status."""
    spec = json.loads(argv[1])
    _follow_parent(spec["parent"])
    if spec.get("cores"):
        os.sched_setaffinity(0, spec["cores"])
    from mmc_jax.jobs import units
    from mmc_jax.runtime import settings, stopping
    from mmc_jax.runtime.errors import InputError

    unit = units.Unit.of_spec(spec["unit"])
    package = __import__(unit.target.partition(":")[0].split(".")[0])
    _show_progress(
        [
            str(pathlib.Path(units.__file__).resolve().parents[1]),  # mmc_jax
            str(pathlib.Path(package.__file__).resolve().parent),  # the unit's package
        ]
    )
    settings.tune_host_allocator()
    settings.enable_compilation_cache()
    print(f"unit {unit.name}: pid {os.getpid()}, cores {spec.get('cores') or 'all'}", flush=True)
    try:
        with stopping.raise_on_signals():
            inputs = units.input_records(unit, spec["folders"])
            units.run_here(unit, inputs, log=False)
    except InputError as err:
        print(f"error: {err}", flush=True)
        return 2
    except stopping.Interrupted as stop:
        print(stop, flush=True)
        return stop.exit_code
    except Exception:  # the log keeps the traceback; the driver names the log
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
