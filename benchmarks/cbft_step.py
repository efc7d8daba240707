"""The cost of one CBFT iteration against one naive fine-tuning iteration, measured in one
run on this machine, and against the passes CBFT adds.

    python benchmarks/cbft_step.py [--quick] [--model cnn4] [--batch 256]

A naive FT iteration is one forward/backward pass over the clean batch. A CBFT iteration adds
a forward/backward pass over the cued batch at θ_t (barrier) and one over the cued batch at θ
(invariance): three passes in both modes (``code`` takes two optimizer updates, ``paper``
one). ``× naive per pass`` is the measured ratio divided by 3: 1.0 means the barrier and
invariance terms cost exactly their extra passes.

Prints a markdown table and writes ``benchmarks/results/cbft_step.json``.
"""

from __future__ import annotations

import functools
import time

import common
import jax
import numpy as np

from mmc_jax import data, finetune, models, training


def _per_call(fn, state, batch, repeats: int) -> float:
    """Seconds per call of a jitted ``state, batch -> state, metrics`` step."""
    state, metrics = fn(state, batch)  # compile and warm up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = fn(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / repeats


def measure(name: str, batch_size: int, repeats: int) -> list[dict]:
    """Seconds per iteration of naive FT and of CBFT in both modes."""
    model = models.create(name, 10)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    rng = np.random.default_rng(0)
    batch = jax.device_put(
        {
            "images": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
            "labels": rng.integers(0, 10, batch_size).astype(np.int32),
            "cue_images": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
            "cue_labels": rng.integers(0, 10, batch_size).astype(np.int32),
        }
    )
    cue = data.box_cue(10)
    state = training.TrainState.create(
        model.apply, variables, training.sgd(0.01, 0.9, 1e-4), jax.random.PRNGKey(0)
    )
    naive = jax.jit(functools.partial(finetune.naive_step, cue=cue))
    rows = [
        {
            "model": name,
            "method": "naive FT",
            "passes": 1,
            "seconds": _per_call(naive, state, batch, repeats),
        }
    ]
    for mode in ("code", "paper"):
        config = finetune.FinetuneConfig(cbft_mode=mode)
        step = jax.jit(
            lambda s, b, config=config: finetune.cbft_step(
                s, b, 1, variables["params"], cue, config, 10
            )
        )
        rows.append(
            {
                "model": name,
                "method": f"CBFT ({mode})",
                "passes": 3,
                "seconds": _per_call(step, state, batch, repeats),
            }
        )
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = row["seconds"] / base
        row["overhead"] = row["ratio"] / row["passes"]
    return rows


def main():
    parser = common.parser(__doc__, "cnn4 only, few repeats")
    parser.add_argument("--models", default="", help="comma-separated preset names")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    names = (
        args.models.split(",")
        if args.models
        else (["cnn4"] if args.quick else ["cnn4", "vgg13_small", "resnet18_small"])
    )
    repeats = 3 if args.quick else 10
    rows = [r for n in names for r in measure(n, args.batch, repeats)]
    print(f"\n{common.machine()}, batch {args.batch}\n")
    print("| model | iteration | ms | × naive FT | passes | × naive per pass |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['method']} | {1000 * r['seconds']:.1f} | {r['ratio']:.2f} | "
            f"{r['passes']} | {r['overhead']:.2f} |"
        )
    common.save("cbft_step", {"batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
