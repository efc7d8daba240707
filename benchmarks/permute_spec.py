"""Permutation specs and weight matching at full width: the time to derive a model's spec
from its traced forward pass (``permute.derive_spec``) against the hand-written
``permute.spec_for``, and the time of weight matching between two independently initialised
models.

    python benchmarks/permute_spec.py [--quick] [--models vgg13,resnet18]

Prints a markdown table and writes ``benchmarks/results/permute_spec.json``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import common
from mmc_jax import models, permute


def timed(fn, repeats: int = 3):
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = common.parser(__doc__, "the 1/8-width presets only (≈ 20 s)")
    parser.add_argument("--models", default="vgg13,resnet18")
    args = parser.parse_args()
    names = ["vgg13_small", "resnet18_small"] if args.quick else args.models.split(",")
    rows = []
    for name in names:
        model = models.create(name, 10, conv_impl="xla")
        a = models.init(model, jax.random.key(0), (32, 32, 3))
        b = models.init(model, jax.random.key(1), (32, 32, 3))
        x = jnp.zeros((2, 32, 32, 3))
        derive_s, spec = timed(lambda: permute.derive_spec(model.apply, a, x, train=False))
        hand_s, hand = timed(lambda: permute.spec_for(model, a))
        same = ({frozenset(v) for v in spec.perm_to_axes.values()}
                == {frozenset(v) for v in hand.perm_to_axes.values()})
        match_s, _ = timed(lambda: jax.block_until_ready(
            permute.weight_matching(spec, a, b, jax.random.key(2))), repeats=1)
        rows.append({"model": name, "parameters": models.num_params(a),
                     "permutations": len(spec.sizes), "derive_s": round(derive_s, 3),
                     "spec_for_s": round(hand_s, 4), "same_as_spec_for": same,
                     "weight_matching_s": round(match_s, 2)})
    print(f"machine: {common.machine()}\n")
    print("| model | parameters | permutations | derive_spec | spec_for | same groups | "
          "weight matching |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['parameters']:,} | {r['permutations']} | "
              f"{r['derive_s']:.2f} s | {r['spec_for_s']:.3f} s | {r['same_as_spec_for']} | "
              f"{r['weight_matching_s']:.1f} s |")
    print(f"\nwrote {common.save('permute_spec', {'rows': rows})}")


if __name__ == "__main__":
    main()
