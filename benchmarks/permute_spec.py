"""Permutation specs and weight matching at full width: the time to derive a model's spec
from its traced forward pass (``permute.derive_spec``), the time of weight matching between
two independently initialised models, and whether weight matching recovers a planted random
permutation exactly (a model against a permuted copy of itself).

    python benchmarks/permute_spec.py [--quick] [--models vgg13,resnet18,wrn_gn,vit_tiny,convnext]

Besides the library's presets it runs the models of ``benchmarks/zoo.py`` (one per pattern:
depthwise and grouped convolutions, a fused q/k/v split, a gated MLP, token embeddings,
scanned layers).

Prints a markdown table and writes ``benchmarks/results/permute_spec.json``.
"""

from __future__ import annotations

import time

import common
import jax
import jax.numpy as jnp
import numpy as np
import zoo

from mmc_jax import models, permute


def timed(fn, repeats: int = 3):
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _model(name: str, quick: bool):
    """``(apply_fn, a, b, example input, width)``: a preset (width scaled down with
    ``quick``) or a :mod:`zoo` model, at two random initialisations."""
    if name in zoo.MODELS:
        module, x = zoo.MODELS[name](quick)
        a, b = (dict(module.init(jax.random.key(s), x)) for s in (0, 1))
        return module.apply, a, b, x, "small" if quick else "full"
    width = (0.125 if name in ("vgg13", "resnet18") else 0.25) if quick else None
    model = models.create(name, 10, width=width, conv_impl="xla")
    a = models.init(model, jax.random.key(0), (32, 32, 3))
    b = models.init(model, jax.random.key(1), (32, 32, 3))
    return model.apply, a, b, jnp.zeros((2, 32, 32, 3)), width


def main():
    parser = common.parser(__doc__, "small widths only (≈ 30 s)")
    parser.add_argument(
        "--models", default=",".join(["vgg13", "resnet18", "wrn_gn", "vit_tiny", *zoo.MODELS])
    )
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        apply_fn, a, b, x, width = _model(name, args.quick)
        derive_s, spec = timed(lambda: permute.derive_spec(apply_fn, a, x, train=False))
        match_s, _ = timed(
            lambda: permute.weight_matching(spec, a, b, jax.random.key(2)), repeats=1
        )
        rng = np.random.default_rng(3)
        planted = permute.apply(spec, {p: rng.permutation(n) for p, n in spec.sizes.items()}, a)
        recover_s, found = timed(
            lambda: permute.weight_matching(spec, a, planted, jax.random.key(4)), repeats=1
        )
        recovered = all(
            bool(np.array_equal(x, y))
            for x, y in zip(
                jax.tree.leaves(permute.apply(spec, found, planted)), jax.tree.leaves(a)
            )
        )
        rows.append(
            {
                "model": name,
                "width": width if isinstance(width, str) else f"{width or 1.0:g}",
                "parameters": models.num_params(a),
                "permutations": len(spec.sizes),
                "unsupported": list(spec.unsupported),
                "derive_s": round(derive_s, 3),
                "weight_matching_s": round(match_s, 2),
                "recovered": recovered,
                "recover_s": round(recover_s, 2),
            }
        )
    print(f"machine: {common.machine()}\n")
    print(
        "| model | width | parameters | permutations | unsupported ops | derive_spec | "
        "weight matching (independent inits) | planted permutation recovered |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['width']} | {r['parameters']:,} | {r['permutations']} | "
            f"{', '.join(r['unsupported']) or 'none'} | {r['derive_s']:.2f} s | "
            f"{r['weight_matching_s']:.1f} s | "
            f"{'yes' if r['recovered'] else 'NO'} ({r['recover_s']:.1f} s) |"
        )
    print(f"\nwrote {common.save('permute_spec', {'rows': rows})}")


if __name__ == "__main__":
    main()
