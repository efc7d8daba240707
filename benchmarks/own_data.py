"""The main job on data it was not tuned on: easier and harder variants of shapes10, written
as ``npz:`` files, run through ``experiments.cbft`` with ``cue_proportion=auto`` and
``n_clean=auto``, then checked against the paper's picture.

    python benchmarks/own_data.py [--quick] [--styles easy,hard] [--workdir DIR]

For each variant it prints the calibration's trials, the results table and whether every
criterion holds:

- θ_C is cue-reliant: nocue − randcue ≥ 25 points and randimg ≥ 65 %;
- small-LR naive FT keeps the cue (randimg within 15 points of θ_C's) with no barrier
  (loss barrier to θ_C < 0.1);
- CBFT removes it: randcue within 10 points of nocue, randimg ≤ 25 %, loss barrier ≥ 0.5;

and the wall time of the whole job. ``--quick`` runs the easy variant only. Writes
``benchmarks/results/own_data.json``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import common

from mmc_jax.data import shapes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def criteria(results: dict) -> dict[str, bool]:
    """The paper's picture on one run's aggregated results."""
    m = results["methods"]
    acc = lambda name, c: 100 * m[name]["test"][c]["acc"]  # noqa: E731
    barrier = lambda name: m[name]["barrier_to_cue_model"]["loss"]  # noqa: E731
    return {
        "θ_C cue-reliant (gap ≥ 25, RI ≥ 65)": (
            acc("cue_model", "nocue") - acc("cue_model", "randcue") >= 25
            and acc("cue_model", "randimg") >= 65
        ),
        "small-LR FT keeps the cue, no barrier": (
            acc("cue_model", "randimg") - acc("naive_ft_small", "randimg") <= 15
            and barrier("naive_ft_small") < 0.1
        ),
        "CBFT: RC within 10 of NC": abs(acc("cbft", "nocue") - acc("cbft", "randcue")) <= 10,
        "CBFT: RI ≤ 25": acc("cbft", "randimg") <= 25,
        "CBFT: barrier ≥ 0.5": barrier("cbft") >= 0.5,
    }


def main():
    parser = common.parser(__doc__, "the easy variant only (≈ 10 min on 2 cores)")
    parser.add_argument("--styles", default="easy,hard")
    parser.add_argument("--workdir", default=str(ROOT / "workdirs" / "own_data"))
    args = parser.parse_args()
    styles = ["easy"] if args.quick else args.styles.split(",")
    workdir = pathlib.Path(args.workdir)
    rows = []
    for style in styles:
        path = workdir / f"{style}.npz"
        if not path.exists():
            shapes.save_npz(path, style)
        start = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.cbft",
                f"--config.cue_model.data.name=npz:{path}",
                "--config.cue_model.data.cue_proportion=auto",
                "--config.data.n_clean=auto",
                f"--workdir={workdir / style}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if run.returncode:
            sys.exit(f"{style}: experiments.cbft failed\n{run.stderr[-3000:]}")
        results = json.loads((workdir / style / "results.json").read_text())
        checks = criteria(results)
        rows.append(
            {
                "style": style,
                "seconds": round(seconds, 1),
                "cue_proportion": results["cue_proportion"],
                "n_clean": results["n_clean"],
                "checks": checks,
            }
        )
        print(f"\n## shapes10, {style} variant ({seconds / 60:.1f} min)\n")
        print((workdir / style / "results.md").read_text())
        for name, ok in checks.items():
            print(f"- {'yes' if ok else 'NO '} {name}")
    print(f"\nmachine: {common.machine()}\n")
    print("| variant | chosen p | n_clean | every criterion | wall time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['style']} | {r['cue_proportion']:g} | {r['n_clean']} | "
            f"{'yes' if all(r['checks'].values()) else 'no'} | {r['seconds'] / 60:.1f} min |"
        )
    print(f"\nwrote {common.save('own_data', {'rows': rows})}")


if __name__ == "__main__":
    main()
