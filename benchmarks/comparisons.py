"""The model-comparison analyses as one evaluation against the same points one path at a time,
measured in one run on this machine.

    python benchmarks/comparisons.py [--quick]

* **N×N matrix** (``similarity.pairwise_barriers``): all N(N−1)/2 lines in one compiled
  evaluation, against ``path_eval.evaluate_path`` called once per pair (each call reuses
  the compiled program after the first, so the difference is per-call work, not compiling).
* **Plane** (``plane.evaluate_plane``): G² grid points in one evaluation, against one
  ``evaluate_path`` call per grid row (a line of G points through the plane).

Models are independent initialisations of ``cnn4`` (the cost does not depend on training).
Prints a markdown table and writes ``benchmarks/results/comparisons.json``.
"""

from __future__ import annotations

import time

import common
import jax
import numpy as np

from mmc_jax import data, models, paths
from mmc_jax.analysis import plane, similarity
from mmc_jax.connectivity import path_eval


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = common.parser(__doc__, "4 models, 5 points per line, 5×5 plane, 500 images")
    args = parser.parse_args()
    n, k, g, images = (4, 5, 5, 500) if args.quick else (6, 11, 11, 1000)
    model = models.create("cnn4", 10)
    named = {f"m{i}": models.init(model, jax.random.key(i), (32, 32, 3)) for i in range(n)}
    train = data.load("shapes10", "train")
    test = data.load("shapes10", "test", num_examples=images)
    kw = dict(
        conditions=("cue", "randimg"), bn="recompute", bn_set=train, bn_batches=2, batch_size=500
    )
    ts = paths.grid(k)
    names = list(named)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]

    def each_pair():
        for a, b in pairs:
            path_eval.evaluate_path(model.apply, paths.linear(named[a], named[b]), ts, test, **kw)

    rows = []
    each_pair()  # compile once, so both sides are timed warm
    similarity.pairwise_barriers(model.apply, named, test, ts=ts, **kw)
    rows.append(
        {
            "analysis": f"{n}×{n} matrix ({len(pairs)} lines × {k} points)",
            "one_evaluation_s": _seconds(
                lambda: similarity.pairwise_barriers(model.apply, named, test, ts=ts, **kw)
            ),
            "path_at_a_time_s": _seconds(each_pair),
        }
    )

    three = dict(list(named.items())[:3])
    points, coords = plane.basis(*three.values())
    xs, ys = plane.grid(coords, g)

    def each_row():  # the grid's column at x: the line from (x, y_0) to (x, y_G)
        for x in xs:
            ends = [points(np.asarray([x, y], np.float32)) for y in (ys[0], ys[-1])]
            path_eval.evaluate_path(
                model.apply, paths.linear(*ends), np.linspace(0, 1, g), test, **kw
            )

    each_row()
    plane.evaluate_plane(model.apply, three, test, size=g, **kw)
    rows.append(
        {
            "analysis": f"plane {g}×{g} (+ 3 models)",
            "one_evaluation_s": _seconds(
                lambda: plane.evaluate_plane(model.apply, three, test, size=g, **kw)
            ),
            "path_at_a_time_s": _seconds(each_row),
        }
    )
    print(
        f"\n{common.machine()}; cnn4, {images} images, conditions cue and randimg, "
        f"BN recomputed from 2 × 500 images\n"
    )
    print("| analysis | one evaluation | one path at a time | speedup |\n|---|---|---|---|")
    for r in rows:
        speedup = r["path_at_a_time_s"] / r["one_evaluation_s"]
        print(
            f"| {r['analysis']} | {r['one_evaluation_s']:.1f} s | "
            f"{r['path_at_a_time_s']:.1f} s | {speedup:.2f}× |"
        )
    common.save("comparisons", {"rows": rows})


if __name__ == "__main__":
    main()
