"""Train and eval throughput (images/s) of every model preset, and of both conv
implementations, measured in one run on this machine.

    python benchmarks/train_throughput.py [--quick] [--models cnn4,vgg13_small] [--batch 128]

Prints a markdown table and writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

import common
from mmc_jax import data, models, runtime, training


def _timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def measure(name: str, conv_impl: str, batch: int, dtype: str, repeats: int) -> dict:
    """Images/s of one jitted train step and one jitted eval forward pass."""
    model = models.create(name, 10, conv_impl=conv_impl, dtype=dtype)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    tx = training.sgd(0.01, 0.9, 1e-4)
    state = training.TrainState.create(model.apply, variables, tx, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch_data = jax.device_put({
        "images": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, 10, batch).astype(np.int32)})
    step = jax.jit(functools.partial(training.train_step, cue=data.box_cue(10)))
    forward = jax.jit(lambda v, x: model.apply(v, data.normalize(x), train=False))
    train_s = _timed(lambda: step(state, batch_data)[1]["loss"], repeats)
    eval_s = _timed(lambda: forward(state.variables, batch_data["images"]), repeats)
    return {"model": name, "conv_impl": conv_impl, "dtype": dtype, "batch": batch,
            "params": models.num_params(variables),
            "train_img_s": batch / train_s, "eval_img_s": batch / eval_s}


def main():
    runtime.tune_host_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small presets only, few repeats")
    parser.add_argument("--models", default="", help="comma-separated preset names")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--impls", default="",
                        help="conv implementations (default: hybrid,auto with --quick, "
                             "else xla,im2col,hybrid,auto)")
    args = parser.parse_args()
    args.impls = args.impls or ("hybrid,auto" if args.quick else "xla,im2col,hybrid,auto")
    names = args.models.split(",") if args.models else (
        ["cnn4", "vgg13_small"] if args.quick else list(models.PRESETS))
    repeats = 3 if args.quick else 10
    rows = [measure(n, impl, args.batch, dt, repeats) for n in names
            for dt in args.dtypes.split(",") for impl in args.impls.split(",")]
    print(f"\n{common.machine()}\n")
    print("| model | params | conv | dtype | batch | train img/s | eval img/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['conv_impl']} | {r['dtype']} | "
              f"{r['batch']} | {r['train_img_s']:,.0f} | {r['eval_img_s']:,.0f} |")
    common.save("train_throughput", {"rows": rows})


if __name__ == "__main__":
    main()
