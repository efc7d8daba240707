"""Per-layer cost of a 3×3 convolution on this machine: forward, input gradient and kernel
gradient, as XLA's convolution and as one im2col matmul, on all cores and pinned to one.

    python benchmarks/conv_layers.py [--quick] [--batch 128] [--layers "16,32,16;32,64,8"]

A layer is ``C_in,C_out,size`` (square inputs, stride 1, padding 1). The one-core column
reruns XLA's forward in a child process restricted to one core: ``all / one ≈ 1`` means
XLA ran it on one thread. This is what the ``conv_impl="auto"`` rule of
``mmc_jax.models.layers.resolve_conv_impl`` is read from.

Prints a markdown table and writes ``benchmarks/results/conv_layers.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import common
import jax

from mmc_jax.models import layers

#: cnn4's layers, then vgg13's at full width.
DEFAULT = "3,16,32;16,32,16;32,64,8;64,128,4;64,64,32;128,128,16;256,256,8;512,512,4;512,512,2"
QUICK = "3,16,32;16,32,16;32,64,8;64,128,4;512,512,2"


def _ms(fn, *args) -> float:
    """Best milliseconds per call over three rounds of about 0.3 s (at least one call)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    repeats = int(min(10, max(1, 0.3 / (time.perf_counter() - start))))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 1e3 * best


def measure(c_in: int, c_out: int, size: int, batch: int, forward_only: bool = False) -> dict:
    """Milliseconds of forward, input gradient and kernel gradient per implementation."""
    x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))
    w = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out)) * 0.1
    g = jax.random.normal(jax.random.key(2), (batch, size, size, c_out))
    row = {}
    impls = {
        "xla": lambda x, w: layers.xla_conv(x, w, 1, 1),
        "im2col": lambda x, w: layers.im2col_conv(x, w, 1, 1),
    }
    for name, conv in impls.items():
        row[f"{name}_forward"] = _ms(jax.jit(conv), x, w)
        if forward_only:
            break
        row[f"{name}_dx"] = _ms(
            jax.jit(lambda x, w, g, conv=conv: jax.vjp(lambda x: conv(x, w), x)[1](g)), x, w, g
        )
        row[f"{name}_dw"] = _ms(
            jax.jit(lambda x, w, g, conv=conv: jax.vjp(lambda w: conv(x, w), w)[1](g)), x, w, g
        )
    return row


def one_core(spec: str, batch: int) -> list[float]:
    """XLA's forward of every layer in a child process pinned to one core."""
    code = (
        "import os; os.sched_setaffinity(0, {0}); import json, sys; "
        "sys.path.insert(0, 'benchmarks'); import conv_layers as c; "
        f"print(json.dumps([c.measure(*l, {batch}, True)['xla_forward'] "
        f"for l in c.parse({spec!r})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse(spec: str) -> list[tuple[int, int, int]]:
    """``"16,32,16;32,64,8"`` → ``[(16, 32, 16), (32, 64, 8)]``."""
    return [tuple(int(v) for v in layer.split(",")) for layer in spec.split(";") if layer]


def main():
    parser = common.parser(__doc__, "cnn4's layers and the 2×2 VGG-13 layer (≈ 1 min)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--layers", default="", help="C_in,C_out,size;... (default: cnn4, vgg13)")
    args = parser.parse_args()
    spec = args.layers or (QUICK if args.quick else DEFAULT)
    rows = [{"layer": list(layer), **measure(*layer, args.batch)} for layer in parse(spec)]
    pinned = (
        one_core(spec, args.batch)
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1
        else [None] * len(rows)
    )
    for row, ms in zip(rows, pinned):
        row["xla_forward_one_core"] = ms
        row["auto"] = layers.resolve_conv_impl("auto", row["layer"][2] ** 2)
    print(f"\n{common.machine()}, batch {args.batch}, {os.cpu_count()} cores; milliseconds\n")
    print(
        "| C_in → C_out @ size | xla fwd | xla dx | xla dw | im2col fwd | im2col dx | "
        "im2col dw | xla fwd, one core | all / one | auto |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c_in, c_out, size = r["layer"]
        one = r["xla_forward_one_core"]
        ratio = f"{r['xla_forward'] / one:.2f}" if one else "–"
        print(
            f"| {c_in} → {c_out} @ {size}×{size} | {r['xla_forward']:.2f} | {r['xla_dx']:.2f} "
            f"| {r['xla_dw']:.2f} | {r['im2col_forward']:.2f} | {r['im2col_dx']:.2f} | "
            f"{r['im2col_dw']:.2f} | {one if one is None else f'{one:.2f}'} | {ratio} | "
            f"{r['auto']} |"
        )
    common.save("conv_layers", {"batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
