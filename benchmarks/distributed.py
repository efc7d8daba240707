"""The demo model's data-parallel train step over two processes (``jax.distributed``, gloo
collectives, a localhost coordinator) against one process, measured in one run.

    python benchmarks/distributed.py [--quick] [--batch 128] [--steps 30]

Three settings of the same global batch: one process with one CPU device, one process with
two devices (``JAX_NUM_CPU_DEVICES=2``), two processes with one device each. Each runs the
step of :mod:`mmc_jax.training.loop` (state replicated, batch split over the mesh) and reports
its time per step (the best of three rounds) and its first-step loss (the same in all three up
to float summation order). On one machine the two processes share its cores and exchange the
gradients through TCP: the difference to one process is the overhead of the collectives,
which several hosts pay to add their devices.

Prints a markdown table and writes ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time

# One setting (the script runs itself): argv = --worker BATCH STEPS [ADDRESS N I]
if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    from mmc_jax.runtime import distributed

    batch_size, steps = int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:
        address, n, i = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        distributed.initialize(
            distributed.Cluster(coordinator_address=address, num_processes=n, process_id=i)
        )
    import jax
    import numpy as np

    from experiments.configs import demo
    from mmc_jax import data, training
    from mmc_jax.runtime import parallel

    config = training.TrainConfig.of(demo.get_config())
    model = training.create_model(config, 10)
    state = training.create_state(config, model, (32, 32, 3), 100)
    mesh = parallel.data_mesh()
    state = parallel.replicate(state, mesh)
    rng = np.random.default_rng(0)
    batch = {
        "images": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, 10, batch_size).astype(np.int32),
        "cue": np.ones(batch_size, bool),
    }
    batch = parallel.place(batch, parallel.batch_sharding(batch, mesh))
    step = jax.jit(functools.partial(training.train_step, cue=data.box_cue(10)))
    new, metrics = step(state, batch)
    first_loss = float(metrics["loss"])
    jax.block_until_ready(step(new, batch))  # warm
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            new, metrics = step(new, batch)
        jax.block_until_ready(metrics)
        best = min(best, (time.perf_counter() - start) / steps)
    if distributed.is_main():
        print(json.dumps({"ms_per_step": 1000 * best, "first_loss": first_loss}))
    sys.exit(0)

import common  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(processes: int, devices: int, batch: int, steps: int) -> dict:
    """One setting: ``processes`` processes of ``devices`` CPU devices each."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
    base = [sys.executable, __file__, "--worker", str(batch), str(steps)]
    address = f"localhost:{_free_port()}"
    commands = (
        [base]
        if processes == 1
        else [[*base, address, str(processes), str(i)] for i in range(processes)]
    )
    started = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outs = [p.communicate(timeout=900) for p in started]
    for process, (_, err) in zip(started, outs):
        if process.returncode:
            raise SystemExit(f"a benchmark process failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> None:
    args = common.parser(__doc__, "fewer steps per round")
    args.add_argument("--batch", type=int, default=128, help="global batch size")
    args.add_argument("--steps", type=int, default=30, help="steps per timed round")
    args = args.parse_args()
    steps = 5 if args.quick else args.steps
    settings = {
        "1 process × 1 device": (1, 1),
        "1 process × 2 devices": (1, 2),
        "2 processes × 1 device": (2, 1),
    }
    rows = {name: _run(p, d, args.batch, steps) for name, (p, d) in settings.items()}
    reference = rows["1 process × 1 device"]["ms_per_step"]
    print(f"\nDemo model train step, global batch {args.batch}, {os.cpu_count()} cores\n")
    print("| setting | ms/step | vs 1 process × 1 device | first-step loss |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        row["vs_one_process"] = row["ms_per_step"] / reference
        print(
            f"| {name} | {row['ms_per_step']:.1f} | {row['vs_one_process']:.2f}× | "
            f"{row['first_loss']:.6f} |"
        )
    path = common.save("distributed", {"batch": args.batch, "steps": steps, "settings": rows})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
