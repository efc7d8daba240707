"""Memory of path evaluation: the chunk size chosen for a memory budget and XLA's working
memory per device, for K points of full-width models, read from the compiled programs.

    python benchmarks/path_memory.py [--quick] [--models vgg13,resnet18] [--points 61]
        [--budgets-gib 0,4,1] [--strategies map,vmap] [--run vgg13]

Budget 0 means the default (half the device's memory; the host's RAM on CPU). The programs
are compiled, not run; ``--run MODEL`` also runs that model's ``"map"`` evaluation and
reports the process's peak resident memory.

Prints a markdown table and writes ``benchmarks/results/path_memory.json``.
"""

from __future__ import annotations

import resource
import time

import common
import jax

from mmc_jax import InputError, data, models, paths
from mmc_jax.connectivity import path_eval

GIB = 2**30


def main():
    parser = common.parser(__doc__, "vgg13_small only (≈ 1 min)")
    parser.add_argument("--models", default="vgg13,resnet18")
    parser.add_argument("--points", type=int, default=61)
    parser.add_argument("--budgets-gib", default="0,4,1")
    parser.add_argument("--strategies", default="map,vmap")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--num-eval", type=int, default=10000)
    parser.add_argument("--bn-batches", type=int, default=20)
    parser.add_argument("--run", default="", help="a model whose map evaluation is run")
    args = parser.parse_args()
    if args.quick:
        args.models, args.num_eval, args.bn_batches = "vgg13_small", 1000, 2
        args.budgets_gib = "0,1"
    train = data.load("shapes10", "train", num_examples=args.bn_batches * args.batch_size)
    test = data.load("shapes10", "test", num_examples=args.num_eval)
    ts = paths.grid(args.points)
    rows = []
    for name in args.models.split(","):
        model = models.create(name, 10)
        a = models.init(model, jax.random.key(0), (32, 32, 3))
        b = models.init(model, jax.random.key(1), (32, 32, 3))
        for strategy in args.strategies.split(","):
            budgets = (
                [float(g) for g in args.budgets_gib.split(",")] if strategy == "vmap" else [0.0]
            )
            for gib in budgets:
                start = time.perf_counter()
                try:
                    plan = path_eval.compile_evaluation(
                        model.apply,
                        paths.linear(a, b),
                        ts,
                        test,
                        bn="recompute",
                        bn_set=train,
                        bn_batches=args.bn_batches,
                        batch_size=args.batch_size,
                        strategy=strategy,
                        memory_budget=int(gib * GIB) or None,
                    )
                    chunk, memory = plan.chunk_size, plan.memory_bytes
                except InputError as error:  # one point exceeds the budget
                    chunk, memory, plan = None, None, str(error)
                row = {
                    "model": name,
                    "params": models.num_params(a),
                    "strategy": strategy,
                    "budget_gib": gib or path_eval.default_memory_budget() / GIB,
                    "chunk": chunk,
                    "memory_gib": None if memory is None else memory / GIB,
                    "compile_s": time.perf_counter() - start,
                }
                if name == args.run and strategy == "map":
                    start = time.perf_counter()
                    jax.block_until_ready(plan.run().metrics)
                    row["run_s"] = time.perf_counter() - start
                    row["peak_rss_gib"] = (
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
                    )
                rows.append(row)
    print(
        f"\nK = {args.points} points, BN recompute over {args.bn_batches} x {args.batch_size}, "
        f"{args.num_eval} evaluation images in batches of {args.batch_size}; "
        f"{common.machine()}\n"
    )
    print("| model | strategy | budget GiB | chunk | XLA working memory GiB | compile s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        memory = "n/a" if r["memory_gib"] is None else f"{r['memory_gib']:.2f}"
        print(
            f"| {r['model']} | {r['strategy']} | {r['budget_gib']:.1f} | {r['chunk']} | "
            f"{memory} | {r['compile_s']:.1f} |"
        )
    for r in rows:
        if "run_s" in r:
            print(
                f"\n{r['model']}, map, all {args.points} points run in {r['run_s']:.0f} s; "
                f"peak resident memory of the process {r['peak_rss_gib']:.2f} GiB"
            )
    common.save(
        "path_memory",
        {
            "points": args.points,
            "batch_size": args.batch_size,
            "num_eval": args.num_eval,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
