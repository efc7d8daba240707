"""Where the main job's time goes, and each of its kernels against PyTorch on the same model,
measured in one run on this machine.

    python benchmarks/demo_pipeline.py [--quick] [--workdir DIR]

1. **The job** (skipped by ``--quick``): ``python -m experiments.cbft`` in a fresh process
   with empty caches (procedural data, compiled programs) and an empty workdir, as a new
   user meets it; prints the wall time and its phases (``results.json`` "timings": data,
   θ_C, every method, evaluation, paths, each with its compilation seconds).
2. **The kernels** of the demo (``cnn4`` on 32×32 images, the demo's batch sizes), in mmc_jax
   and in PyTorch (float32, channels-last, default threads): θ_C's train step (batch 128),
   a naive fine-tuning step and a CBFT iteration (code mode: barrier step, then
   cross-entropy + invariance; batch 256 clean + 256 cued), an eval forward pass and a
   BN-recompute pass (train-mode forward without gradients; batch 500). Ratios are
   PyTorch time / mmc_jax time: above 1, mmc_jax is faster. Needs ``pip install
   torch==2.13.0`` for the PyTorch column.

Prints markdown tables and writes ``benchmarks/results/demo_pipeline.json``.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

from mmc_jax import data, finetune, models, training

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_job(workdir: pathlib.Path | None, extra: list[str]) -> dict:
    """The main job in a fresh process with empty caches; its results and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = workdir or pathlib.Path(tmp) / "cbft"
        env = {
            **os.environ,
            "MMC_JAX_CACHE": str(pathlib.Path(tmp) / "cache"),
            "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(tmp) / "jax"),
        }
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "experiments.cbft", f"--workdir={workdir}", *extra],
            cwd=ROOT,
            env=env,
            check=True,
        )
        seconds = time.perf_counter() - start
        results = json.loads((workdir / "results.json").read_text())
        seed = json.loads(next(workdir.glob("seed_*/results.json")).read_text())
    return {
        "wall_seconds": seconds,
        "job_seconds": results["seconds"],
        "timings": results.get("timings", {}),
        "table": {name: m["test"] for name, m in seed["methods"].items()},
    }


def _time(fn, repeats: int) -> float:
    """Best seconds per call over three rounds of ``repeats`` calls (after a warm-up)."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def _batch(rng, n: int, cue_n: int = 0) -> dict:
    out = {
        "images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, 10, n).astype(np.int32),
    }
    if cue_n:
        out["cue_images"] = rng.integers(0, 256, (cue_n, 32, 32, 3), dtype=np.uint8)
        out["cue_labels"] = rng.integers(0, 10, cue_n).astype(np.int32)
    return jax.device_put(out)


def jax_kernels(repeats: int) -> dict[str, float]:
    """Seconds per call of the demo's kernels in mmc_jax (the library's own steps)."""
    model = models.create("cnn4", 10)
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    cue = data.box_cue(10)
    rng = np.random.default_rng(0)
    train_batch, paired, eval_batch = _batch(rng, 128), _batch(rng, 256, 256), _batch(rng, 500)

    def state(lr=0.05, wd=5e-3):
        return training.TrainState.create(
            model.apply,
            jax.tree.map(jnp.copy, variables),
            training.sgd(lr, 0.9, wd),
            jax.random.PRNGKey(0),
        )

    def stepper(step_fn, batch, lr=0.05, wd=5e-3):
        box = [state(lr, wd)]
        jitted = jax.jit(step_fn, donate_argnums=0)

        def call():
            box[0], metrics = jitted(box[0], batch)
            return metrics

        return call

    config = finetune.FinetuneConfig()
    cbft = functools.partial(
        finetune.cbft_step,
        epoch_index=1,
        anchor=variables["params"],
        cue=cue,
        config=config,
        num_classes=10,
    )
    forward = jax.jit(lambda v, x: model.apply(v, data.normalize(x), train=False))
    bn_pass = jax.jit(
        lambda v, x: model.apply(v, data.normalize(x), train=True, mutable=["batch_stats"])[1]
    )
    return {
        "θ_C train step (128)": _time(
            stepper(functools.partial(training.train_step, cue=cue), train_batch), repeats
        ),
        "naive FT step (256)": _time(
            stepper(functools.partial(finetune.naive_step, cue=cue), paired, 0.01, 1e-4), repeats
        ),
        "CBFT iteration (256 + 256)": _time(
            stepper(lambda s, b: cbft(s, b), paired, 0.01, 1e-4), repeats
        ),
        "eval forward (500)": _time(lambda: forward(variables, eval_batch["images"]), repeats),
        "BN recompute pass (500)": _time(lambda: bn_pass(variables, eval_batch["images"]), repeats),
    }


def torch_kernels(repeats: int) -> dict[str, float] | None:
    """The same kernels in PyTorch (``None`` without torch)."""
    try:
        import torch
        import torch.nn.functional as F

        from mmc_jax.models import torch_reference
    except ImportError:
        return None
    torch.manual_seed(0)
    cl = torch.channels_last

    def images(n):
        return torch.randn(n, 3, 32, 32).to(memory_format=cl)

    def labels(n):
        return torch.randint(0, 10, (n,))

    def net_and_opt(lr, wd):
        net = torch_reference.cnn4().to(memory_format=cl)
        return net, torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)

    x128, y128 = images(128), labels(128)
    clean, y_clean, cued, y_cued = images(256), labels(256), images(256), labels(256)
    x500 = images(500)
    net, opt = net_and_opt(0.05, 5e-3)

    def train_step(x=x128, y=y128, net=net, opt=opt):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    ft_net, ft_opt = net_and_opt(0.01, 1e-4)
    cb_net, cb_opt = net_and_opt(0.01, 1e-4)
    anchor = {k: v.detach().clone() for k, v in cb_net.named_parameters()}
    body, head = cb_net[:-1], cb_net[-1]

    def class_means(z, y):
        onehot = F.one_hot(y, 10).float()
        return F.normalize(onehot.T @ z / onehot.sum(0).clamp(min=1)[:, None], dim=1)

    def cbft_iteration():
        # Barrier step: |1 − CE| on cued data at θ_t = (1 − t) θ + t θ_C, train-mode BN.
        t = float(np.clip(np.random.normal(), 0.0, 1.0))
        params = {k: (1 - t) * v + t * anchor[k] for k, v in cb_net.named_parameters()}
        logits = torch.func.functional_call(cb_net, params, (cued,))
        cb_opt.zero_grad()
        (1.0 - F.cross_entropy(logits, y_cued)).abs().backward()
        cb_opt.step()
        # Cross-entropy on clean data plus invariance of class-mean features.
        z_clean, z_cued = body(clean), body(cued)
        loss = (
            F.cross_entropy(head(z_clean), y_clean)
            + ((class_means(z_clean, y_clean) - class_means(z_cued, y_cued)) ** 2).sum() / 10
        )
        cb_opt.zero_grad()
        loss.backward()
        cb_opt.step()

    eval_net = torch_reference.cnn4().to(memory_format=cl).eval()
    bn_net = torch_reference.cnn4().to(memory_format=cl).train()

    def no_grad(fn):
        def call():
            with torch.no_grad():
                fn()

        return call

    return {
        "θ_C train step (128)": _time(train_step, repeats),
        "naive FT step (256)": _time(lambda: train_step(clean, y_clean, ft_net, ft_opt), repeats),
        "CBFT iteration (256 + 256)": _time(cbft_iteration, repeats),
        "eval forward (500)": _time(no_grad(lambda: eval_net(x500)), repeats),
        "BN recompute pass (500)": _time(no_grad(lambda: bn_net(x500)), repeats),
    }


def main():
    parser = common.parser(__doc__, "the kernels only, not the whole job (≈ 1 min)")
    parser.add_argument("--workdir", default="", help="keep the job's workdir here")
    parser.add_argument("--job-args", default="", help="extra flags for experiments.cbft")
    args = parser.parse_args()
    out = {}
    if not args.quick:
        out["job"] = run_job(
            pathlib.Path(args.workdir).resolve() if args.workdir else None, args.job_args.split()
        )
    repeats = 5 if args.quick else 20
    out["jax"] = jax_kernels(repeats)
    out["torch"] = torch_kernels(repeats)
    print(f"\n{common.machine()}\n")
    if "job" in out:
        job = out["job"]
        print(
            f"python -m experiments.cbft, fresh: {job['wall_seconds']:.0f} s wall "
            f"({job['job_seconds']:.0f} s in the job)\n"
        )
        print("| phase | seconds | of which compiling |\n|---|---|---|")
        for name, t in job["timings"].items():
            print(f"| {name} | {t['seconds']:.1f} | {t['compile_seconds']:.1f} |")
        print()
    print("| kernel (cnn4, batch) | mmc_jax ms | PyTorch ms | PyTorch / mmc_jax |")
    print("|---|---|---|---|")
    for name, seconds in out["jax"].items():
        theirs = out["torch"][name] if out["torch"] else None
        cells = f"{1e3 * theirs:.1f} | {theirs / seconds:.2f}" if theirs else "– | –"
        print(f"| {name} | {1e3 * seconds:.1f} | {cells} |")
    common.save("demo_pipeline", out)


if __name__ == "__main__":
    main()
