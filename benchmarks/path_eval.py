"""Path evaluation: mmc_jax's one-call evaluator against the paper code's algorithm and
against the floor, measured in one run on this machine.

    python benchmarks/path_eval.py [--quick] [--model cnn4] [--points 11]

* **evaluator**: ``path_eval.evaluate_path`` (BN statistics once per point, shared by the four
  conditions; one jitted call for all points);
* **sequential**: the paper code's algorithm — a Python loop over points *and* conditions,
  settling BN statistics again for every (point, condition), each step jitted;
* **floor**: the forward passes the work needs (BN passes in train mode + four evaluation
  passes per point) at the model's measured jitted forward throughput.

Prints a markdown table and writes ``benchmarks/results/path_eval.json``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from mmc_jax import data, models, path_eval, paths, runtime


def _seconds(fn) -> float:
    return _timed(fn)[0]


def _timed(fn):
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def forward_rates(model, variables, images: jax.Array) -> dict[str, float]:
    """Images/s of jitted eval-mode and train-mode (BN update) forward passes."""
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    rates = {}
    for name, fn in (("eval", evaluate), ("train", train)):
        jax.block_until_ready(fn(variables, images))
        reps = 5
        seconds = _seconds(lambda: [fn(variables, images) for _ in range(reps)])
        rates[name] = reps * images.shape[0] / seconds
    return rates


def sequential(model, path, ts, test, train, bn, bn_batches, batch_size, key):
    """The paper code's loop: for each point, for each condition, settle BN, evaluate."""
    stacked = path_eval.stack_batches(train, batch_size, bn_batches, pad=False)
    bn_images = data.normalize(jnp.asarray(stacked["images"]))
    eval_batches = jax.device_put(path_eval.stack_batches(test, batch_size))
    settle = jax.jit(lambda v: path_eval.settle_batch_stats(model.apply, v, bn_images, bn))
    point = jax.jit(path.__call__)
    sums = {c: jax.jit(functools.partial(path_eval.condition_sums, model.apply, cue=test.cue,
                                         conditions=(c,), key=key))
            for c in data.CONDITIONS}
    out = []
    for t in ts:
        out.append(jnp.concatenate([sums[c](settle(point(t)), eval_batches)
                                    for c in data.CONDITIONS]))
    return jnp.stack(out)


def main():
    runtime.tune_host_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller evaluation set")
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--points", type=int, default=11)
    args = parser.parse_args()
    num_eval, bn_batches, batch_size = (1000, 10, 250) if args.quick else (5000, 20, 500)
    full_train_size = 5000 if args.quick else 20000
    model = models.create(args.model, 10)
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    path = paths.linear(a, b)
    ts = paths.grid(args.points)
    train = data.load("shapes10", "train", num_examples=bn_batches * batch_size)
    test = data.load("shapes10", "test", num_examples=num_eval)
    key = jax.random.PRNGKey(0)
    rates = forward_rates(model, a, data.normalize(jnp.asarray(train.images[:batch_size])))
    n_bn = bn_batches * batch_size
    floor = args.points * (n_bn / rates["train"] + 4 * num_eval / rates["eval"])

    rows = []
    for bn in ("recompute", "interpolate_ema"):
        kwargs = dict(bn=bn, bn_set=train, bn_batches=bn_batches, batch_size=batch_size,
                      key=key)
        run = functools.partial(path_eval.evaluate_path, model.apply, path, ts, test, **kwargs)
        run()  # compile
        t_eval, fast = _timed(run)
        seq = functools.partial(sequential, model, path, ts, test, train, bn, bn_batches,
                                batch_size, key)
        seq()  # compile
        t_seq, slow = _timed(seq)
        slow = np.asarray(slow) / num_eval
        agree = bool(np.allclose(fast.metrics["nocue"]["loss"], slow[:, 0, 0], atol=1e-4))
        rows.append({"bn": bn, "evaluator_s": t_eval, "sequential_s": t_seq,
                     "speedup": t_seq / t_eval, "floor_s": floor, "vs_floor": t_eval / floor,
                     "equal": agree})
    # The paper code's default: EMA over the *whole* clean training set, per condition.
    full_train = data.load("shapes10", "train", num_examples=full_train_size)
    paper = functools.partial(sequential, model, path, ts, test, full_train, "interpolate_ema",
                              None, batch_size, key)
    paper()  # compile
    paper_default = _seconds(paper)
    print(f"\n{args.model}, K = {args.points} points x 4 conditions, {num_eval} eval images, "
          f"BN over {bn_batches} x {batch_size}; {common.machine()}, "
          f"forward {rates['eval']:,.0f} img/s eval, "
          f"{rates['train']:,.0f} img/s train mode\n")
    print("| BN policy | evaluator s | sequential s | speedup | floor s | evaluator / floor "
          "| equal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bn']} | {r['evaluator_s']:.2f} | {r['sequential_s']:.2f} | "
              f"{r['speedup']:.2f}x | {r['floor_s']:.2f} | {r['vs_floor']:.2f} | {r['equal']} |")
    print(f"\nmmc_jax default (recompute over {n_bn} images, shared by the conditions): "
          f"{rows[0]['evaluator_s']:.2f} s; the paper code's algorithm and default "
          f"(EMA over all {full_train_size} training images, per condition): "
          f"{paper_default:.2f} s; speedup {paper_default / rows[0]['evaluator_s']:.2f}x")
    common.save("path_eval", {
        "model": args.model, "points": args.points, "num_eval": num_eval, "rates": rates,
        "rows": rows, "paper_default_s": paper_default, "full_train": full_train_size})


if __name__ == "__main__":
    main()
