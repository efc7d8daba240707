"""Train and eval throughput (images/s) of every model preset, conv implementation, batch
size and dtype, measured in one run on this machine, with PyTorch alongside when installed.

    python benchmarks/train_throughput.py [--quick] [--models vgg13,resnet18]
        [--impls auto] [--batches 128,256] [--dtypes float32,bfloat16] [--no-torch]

A train step is SGD with momentum on a cued batch (forward, backward, update); eval is one
eval-mode forward pass. ``torch`` columns: the same architecture in PyTorch (float32,
channels-last, ``torch.set_num_threads`` left at its default), measured in the same run.
PyTorch is not a dependency: ``pip install torch==2.13.0`` (CPU) to get the columns.

Prints a markdown table and writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import functools
import time

import common
import jax
import numpy as np

from mmc_jax import data, models, training


def _rate(fn, batch: int, seconds: float = 4.0, rounds: int = 3) -> float:
    """Images/s of ``fn`` (one batch per call): the best of ``rounds`` timings of about
    ``seconds / rounds`` each, so a transient slowdown of a shared machine does not count."""
    jax.block_until_ready(fn())  # compile and warm up
    start = time.perf_counter()
    jax.block_until_ready(fn())
    once = time.perf_counter() - start
    repeats = int(min(10, max(1, seconds / rounds / max(once, 1e-6))))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return batch / best


def measure(name: str, conv_impl: str, batch: int, dtype: str) -> dict:
    """Images/s of one jitted train step and one jitted eval forward pass."""
    model = models.create(name, 10, conv_impl=conv_impl, dtype=dtype)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    tx = training.sgd(0.01, 0.9, 1e-4)
    state = training.TrainState.create(model.apply, variables, tx, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch_data = jax.device_put(
        {
            "images": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
            "labels": rng.integers(0, 10, batch).astype(np.int32),
        }
    )
    step = jax.jit(functools.partial(training.train_step, cue=data.box_cue(10)))
    forward = jax.jit(lambda v, x: model.apply(v, data.normalize(x), train=False))
    return {
        "model": name,
        "conv_impl": conv_impl,
        "dtype": dtype,
        "batch": batch,
        "params": models.num_params(variables),
        "train_img_s": _rate(lambda: step(state, batch_data)[1]["loss"], batch),
        "eval_img_s": _rate(lambda: forward(state.variables, batch_data["images"]), batch),
    }


def measure_torch(name: str, batch: int) -> dict | None:
    """The PyTorch counterpart's train and eval images/s (``None`` without torch or a
    counterpart)."""
    try:
        import torch

        from mmc_jax.models import torch_reference
    except ImportError:
        return None
    if name not in torch_reference.PRESETS:
        return None
    torch.manual_seed(0)
    net = torch_reference.PRESETS[name]().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    def evaluate():
        with torch.no_grad():
            net(x)

    net.train()
    train = _rate(step, batch)
    net.eval()
    return {"train_img_s": train, "eval_img_s": _rate(evaluate, batch), "torch": torch.__version__}


def main():
    parser = common.parser(__doc__, "cnn4 and vgg13_small, batch 128, float32 (≈ 1.5 min)")
    parser.add_argument("--models", default="", help="comma-separated preset names")
    parser.add_argument(
        "--impls", default="auto", help="conv implementations (also: xla, im2col, hybrid)"
    )
    parser.add_argument("--batches", default="128,256")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.dtypes = "128", "float32"
    names = (
        args.models.split(",")
        if args.models
        else (["cnn4", "vgg13_small"] if args.quick else list(models.PRESETS))
    )
    rows = []
    for name in names:
        for batch in map(int, args.batches.split(",")):
            reference = None if args.no_torch else measure_torch(name, batch)
            for dtype in args.dtypes.split(","):
                for impl in args.impls.split(","):
                    row = measure(name, impl, batch, dtype)
                    row["torch"] = reference
                    rows.append(row)
    print(f"\n{common.machine()}\n")
    print(
        "| model | params | conv | dtype | batch | train img/s | eval img/s "
        "| torch train | torch eval | train / torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["torch"]
        torch_cells = (
            (
                f"{t['train_img_s']:,.0f} | {t['eval_img_s']:,.0f} | "
                f"{r['train_img_s'] / t['train_img_s']:.2f}"
            )
            if t
            else "– | – | –"
        )
        print(
            f"| {r['model']} | {r['params']:,} | {r['conv_impl']} | {r['dtype']} | "
            f"{r['batch']} | {r['train_img_s']:,.0f} | {r['eval_img_s']:,.0f} | "
            f"{torch_cells} |"
        )
    common.save("train_throughput", {"rows": rows})


if __name__ == "__main__":
    main()
