"""The command line of a run over several processes (every entry point): the flags that join
them (:mod:`mmc_jax.runtime.distributed`), and where each process's output goes.

    srun python -m experiments.train --distributed ...                  # SLURM, TPU pod, ...
    python -m experiments.train --coordinator_address=HOST:PORT \\
        --num_processes=N --process_id=I ...                              # explicit, per process

They are flags, not config fields: they differ per process and do not change what a
workdir's config says. Process 0 holds the workdir, prints, shows progress and writes the
files; process I > 0 writes its output (logs, progress) to ``WORKDIR/logs/process_I.log``.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Callable, Optional

from absl import flags, logging

from mmc_jax.runtime import distributed
from mmc_jax.runtime.errors import InputError

#: The flags that join processes.
CLUSTER_FLAGS = (
    "distributed",
    "coordinator_address",
    "num_processes",
    "process_id",
    "heartbeat_timeout",
)


def define(flag_values: flags.FlagValues) -> None:
    """Defines :data:`CLUSTER_FLAGS` on ``flag_values``."""
    flags.DEFINE_bool(
        "distributed",
        False,
        "Join the other processes of this job with jax.distributed's own cluster detection "
        "(SLURM, Open MPI, Kubernetes, Cloud TPU).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "coordinator_address",
        "",
        "HOST:PORT of process 0, to join N processes explicitly (with --num_processes and "
        "--process_id).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_processes",
        0,
        "Processes in the job (with --coordinator_address).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "process_id",
        -1,
        "This process's index, 0..N-1 (with --coordinator_address).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "heartbeat_timeout",
        100,
        "Seconds after which the other processes stop when one of them is gone (killed, "
        "crashed, unreachable).",
        flag_values=flag_values,
    )


def of(args: flags.FlagValues) -> distributed.Cluster:
    """The :class:`~mmc_jax.runtime.distributed.Cluster` of the parsed flags (checked).

    Raises:
      InputError: inconsistent flags, as one line.
    """
    return distributed.Cluster(
        auto=args.distributed,
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        heartbeat_timeout_s=args.heartbeat_timeout,
    ).check()


def join(args: flags.FlagValues) -> Optional[Callable[[], None]]:
    """Joins the other processes the flags name (before anything touches a device); in a
    process other than 0, sends its standard output and error (logs, progress bars) to
    ``WORKDIR/logs/process_<i>.log``; watches the others (one line and exit when one is
    gone). Returns the function that stops watching, or None for a single process.

    Raises:
      InputError: inconsistent flags, or the processes could not join.
    """
    if not distributed.initialize(of(args)):
        return None
    import jax

    if not distributed.is_main():
        path = pathlib.Path(args.workdir).expanduser().resolve()
        log = path / "logs" / f"process_{jax.process_index()}.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as err:
            raise InputError(f"cannot write this process's log {log}: {err.strerror}") from None
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(fd, 1), os.dup2(fd, 2)
        os.close(fd)
    logging.info(
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} of {jax.device_count()} devices here"
    )
    return distributed.watch(lambda gone: leave(_gone_line(gone)))


def _gone_line(gone: list[int]) -> str:
    import jax

    several = len(gone) > 1
    return (
        f"process {jax.process_index()} of {jax.process_count()} stopped: "
        f"process{'es' if several else ''} {', '.join(map(str, gone))} of this run "
        f"{'are' if several else 'is'} gone (no heartbeat); "
        "its log says why. Rerun every process to resume from the last checkpoint"
    )


#: Exit status of a process whose partners are gone (rerun every process to resume).
EXIT_LOST = 1


def lost_partner(err: BaseException) -> str | None:
    """The one line for a run over several processes that ``err`` ended because another
    process is gone (a collective or the coordination service failed), or None."""
    import jax

    if jax.process_count() == 1 or not isinstance(err, jax.errors.JaxRuntimeError):
        return None
    text = str(err)
    words = ("Gloo", "Connection closed", "heartbeat", "UNAVAILABLE", "NCCL", "coordination")
    if not any(w.lower() in text.lower() for w in words):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    why = first.rpartition("Error dispatching computation: ")[2][:160]
    return (
        f"process {jax.process_index()} of {jax.process_count()} stopped: another process of "
        f"this run is gone ({why}); its log says why. Rerun every process to resume from the "
        "last checkpoint"
    )


def leave(line: str, code: int = EXIT_LOST) -> None:
    """Prints ``line`` and ends this process at once, without waiting for the processes that
    are gone (JAX's orderly shutdown would wait for them, then abort)."""
    from tqdm import tqdm

    below = "\n" if getattr(tqdm, "_instances", None) else ""  # a progress bar is showing
    print(f"{below}error: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)
