"""Path evaluation: mmc_jax's one-call evaluator against the paper code's algorithm and
against the floor, measured in one run on this machine.

    python benchmarks/path_eval.py [--quick] [--models cnn4] [--points 11,61]
        [--bn recompute,interpolate_ema,interpolate] [--strategies map,vmap]
        [--num-eval 2000] [--bn-batches 8] [--batch-size 250] [--paper-default]

* **evaluator**: ``path_eval.evaluate_path`` under each strategy (BN statistics once per
  point, shared by the four conditions; one jitted call for all points);
* **sequential**: the paper code's algorithm — a Python loop over points *and* conditions,
  settling BN statistics again for every (point, condition), each step jitted;
* **floor**: the forward passes the work needs (the BN passes in train mode and four
  evaluation passes per point) at the model's measured jitted forward throughput;
* ``× map``: the strategy's speed against ``"map"`` with one point at a time, i.e. a loop
  over points inside one program (the vmap target on GPU/TPU).

Times are of warm programs: the evaluator's compilation (``compile_evaluation``, from the
persistent cache after the first run) is reported apart, and the sequential loop runs once
on one point to compile its functions first.

``--paper-default`` adds the paper code's algorithm *with its default*: EMA over the whole
clean training set, re-done for every condition.

Prints a markdown table and writes ``benchmarks/results/path_eval.json``.
"""

from __future__ import annotations

import functools
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax import data, models, paths
from mmc_jax.connectivity import path_eval


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
        reps = 3
        seconds, _ = _timed(lambda: [fn(variables, images) for _ in range(reps)])
        rates[name] = reps * images.shape[0] / seconds
    return rates


def sequential(model, path, ts, test, train, bn, bn_batches, batch_size, key):
    """The paper code's loop: for each point, for each condition, settle BN, evaluate."""
    if bn == "interpolate":
        settle = jax.jit(lambda v: v)
    else:
        stacked = path_eval.stack_batches(train, batch_size, bn_batches, pad=False)
        bn_images = data.normalize(jnp.asarray(stacked["images"]))
        settle = jax.jit(lambda v: path_eval.settle_batch_stats(model.apply, v, bn_images, bn))
    eval_batches = jax.device_put(path_eval.stack_batches(test, batch_size))
    point = jax.jit(path.__call__)
    sums = {
        c: jax.jit(
            functools.partial(
                path_eval.condition_sums, model.apply, cue=test.cue, conditions=(c,), key=key
            )
        )
        for c in data.CONDITIONS
    }
    out = []
    for t in ts:
        out.append(
            jnp.concatenate([sums[c](settle(point(t)), eval_batches) for c in data.CONDITIONS])
        )
    return jnp.stack(out)


def measure(name: str, points: int, bn: str, strategies, args, train, test, key) -> list[dict]:
    """One model, K and BN policy: every strategy, the sequential loop and the floor."""
    model = models.create(name, 10)
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    path = paths.linear(a, b)
    ts = paths.grid(points)
    rates = forward_rates(model, a, data.normalize(jnp.asarray(train.images[: args.batch_size])))
    n_bn = 0 if bn == "interpolate" else args.bn_batches * args.batch_size
    floor = points * (n_bn / rates["train"] + 4 * len(test) / rates["eval"])

    def seq(ts):
        return sequential(model, path, ts, test, train, bn, args.bn_batches, args.batch_size, key)

    seq(ts[:1])  # compiles its per-point functions
    t_seq, slow = _timed(lambda: seq(ts))
    slow = np.asarray(slow) / len(test)
    rows = []
    for strategy in strategies:
        start = time.perf_counter()
        compiled = path_eval.compile_evaluation(
            model.apply,
            path,
            ts,
            test,
            bn=bn,
            bn_set=train,
            bn_batches=args.bn_batches,
            batch_size=args.batch_size,
            strategy=strategy,
            key=key,
        )
        t_compile = time.perf_counter() - start
        t_eval, result = _timed(compiled.run)
        equal = bool(np.allclose(result.metrics["nocue"]["loss"], slow[:, 0, 0], atol=1e-4))
        rows.append(
            {
                "model": name,
                "points": points,
                "bn": bn,
                "strategy": strategy,
                "chunk": result.chunk_size,
                "memory_bytes": result.memory_bytes,
                "compile_s": t_compile,
                "evaluator_s": t_eval,
                "sequential_s": t_seq,
                "speedup": t_seq / t_eval,
                "floor_s": floor,
                "vs_floor": t_eval / floor,
                "equal": equal,
                "rates": rates,
            }
        )
    base = next((r["evaluator_s"] for r in rows if r["strategy"] == "map"), None)
    for r in rows:
        r["vs_map"] = base / r["evaluator_s"] if base else None
    return rows


def paper_default(name, points, test, full_train, batch_size, key) -> float:
    """Seconds of the paper code's algorithm with its default BN (EMA over all training
    images, per condition)."""
    model = models.create(name, 10)
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))

    def run(ts):
        return sequential(
            model,
            paths.linear(a, b),
            ts,
            test,
            full_train,
            "interpolate_ema",
            None,
            batch_size,
            key,
        )

    ts = paths.grid(points)
    run(ts[:1])  # compiles its per-point functions
    return _timed(lambda: run(ts))[0]


def main():
    parser = common.parser(__doc__, "cnn4, K = 11 and 61, recompute, map, small sets (≈ 1.5 min)")
    parser.add_argument("--models", default="cnn4")
    parser.add_argument("--points", default="11,61")
    parser.add_argument("--bn", default="recompute,interpolate_ema,interpolate")
    parser.add_argument(
        "--strategies",
        default="",
        help="default: map on CPU, map,vmap elsewhere, plus shard_map with several devices",
    )
    parser.add_argument("--num-eval", type=int, default=2000)
    parser.add_argument("--bn-batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument(
        "--paper-default",
        action="store_true",
        help="also time the paper code's default (EMA over all training data)",
    )
    args = parser.parse_args()
    if args.quick:
        args.points, args.bn, args.num_eval, args.bn_batches, args.batch_size = (
            "11,61",
            "recompute",
            250,
            2,
            125,
        )
    strategies = (
        args.strategies.split(",")
        if args.strategies
        else (["map"] if jax.default_backend() == "cpu" else ["map", "vmap"])
    )
    if not args.strategies and jax.device_count() > 1:
        strategies.append("shard_map")
    train = data.load("shapes10", "train", num_examples=args.bn_batches * args.batch_size)
    test = data.load("shapes10", "test", num_examples=args.num_eval)
    key = jax.random.PRNGKey(0)
    rows = []
    for name in args.models.split(","):
        for points in map(int, args.points.split(",")):
            for bn in args.bn.split(","):
                rows += measure(name, points, bn, strategies, args, train, test, key)
    print(
        f"\n{len(test)} evaluation images x 4 conditions, BN over {args.bn_batches} x "
        f"{args.batch_size} images; {common.machine()}\n"
    )
    print(
        "| model | K | BN policy | strategy | chunk | compile s | evaluator s | sequential s "
        "| speedup | floor s | evaluator / floor | x map | equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['points']} | {r['bn']} | {r['strategy']} | {r['chunk']} | "
            f"{r['compile_s']:.1f} | {r['evaluator_s']:.2f} | {r['sequential_s']:.2f} | "
            f"{r['speedup']:.2f}x | "
            f"{r['floor_s']:.2f} | {r['vs_floor']:.2f} | {r['vs_map']:.2f} | {r['equal']} |"
        )
    payload = {
        "num_eval": len(test),
        "bn_batches": args.bn_batches,
        "batch_size": args.batch_size,
        "rows": rows,
    }
    if args.paper_default:
        name, points = args.models.split(",")[0], int(args.points.split(",")[0])
        # As in CIFAR (50,000 / 10,000): five training images per evaluation image.
        full_train = data.load("shapes10", "train", num_examples=5 * len(test))
        seconds = paper_default(name, points, test, full_train, args.batch_size, key)
        ours = next(
            r["evaluator_s"]
            for r in rows
            if r["model"] == name and r["points"] == points and r["bn"] == "recompute"
        )
        print(
            f"\n{name}, K = {points}: mmc_jax's default (recompute, shared by the "
            f"conditions) {ours:.2f} s; the paper code's algorithm and default (EMA over all "
            f"{len(full_train)} training images, per condition) {seconds:.2f} s; speedup "
            f"{seconds / ours:.2f}x"
        )
        payload["paper_default"] = {
            "seconds": seconds,
            "full_train": len(full_train),
            "speedup": seconds / ours,
        }
    common.save("path_eval", payload)


if __name__ == "__main__":
    main()
