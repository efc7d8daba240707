"""The main job under each executor (inline, processes, ray), measured in one run on this
machine: wall time, against the ideal the job's graph allows.

    python benchmarks/executors.py [--quick] [--seeds 0,1,2] [--executors inline,processes,ray]

Each executor runs ``python -m experiments.cbft --config.seeds=(...)`` in a fresh process, in
an empty workdir with empty caches (compiled programs, generated data), as a new user meets it.
Per executor it prints the wall time, the units' run times summed (Σ units) and along the
graph's longest chain (critical path), the ideal wall time max(Σ units ÷ workers, critical
path) with that run's own unit times, wall ÷ ideal, and the speed-up over ``inline``; it
checks that every executor's results equal inline's, bit for bit. ``--quick``: a tiny config
(the same job's shape, seconds per unit). ``ray`` needs ``pip install -e ".[ray]"`` and is
skipped without it.

Prints a markdown table and writes ``benchmarks/results/executors.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The test suite's tiny cbft config: every unit of the job in a few seconds.
QUICK = [
    "--config.cue_model.model.width=0.25",
    "--config.cue_model.data.num_train=512",
    "--config.cue_model.data.num_test=200",
    "--config.cue_model.optim.batch_size=64",
    "--config.cue_model.optim.epochs=2",
    "--config.cue_model.eval_batch_size=100",
    "--config.data.n_clean=128",
    "--config.data.n_cue=256",
    "--config.optim.batch_size=64",
    "--config.optim.epochs=2",
    "--config.finetune.llrt.epochs=2",
    "--config.path.num_points=3",
    "--config.path.bn_batches=2",
    "--config.path.batch_size=100",
]


def run(executor: str, seeds: str, extra: list[str]) -> dict:
    """The job on ``executor`` in a fresh process with empty caches: wall seconds, the
    results' execution summary, and the per-seed method results."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp) / "cbft"
        env = {
            **os.environ,
            "MMC_JAX_CACHE": str(pathlib.Path(tmp) / "cache"),
            "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(tmp) / "jax"),
        }
        command = [
            sys.executable,
            "-m",
            "experiments.cbft",
            f"--workdir={workdir}",
            f"--config.seeds=({seeds},)",
            f"--config.executor={executor}",
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{executor} failed:\n{done.stderr[-3000:]}")
        results = json.loads((workdir / "results.json").read_text())
        per_seed = {
            p.parent.name: json.loads(p.read_text())["methods"]
            for p in sorted(workdir.glob("seed_*/results.json"))
        }
    return {"wall_seconds": round(seconds, 1), **results["execution"], "methods": per_seed}


def main() -> None:
    args = common.parser(__doc__, "a tiny config (seconds per unit)")
    args.add_argument("--seeds", default="0,1,2", help="the job's seeds, comma-separated")
    args.add_argument("--executors", default="inline,processes,ray")
    args = args.parse_args()
    executors = args.executors.split(",")
    if "ray" in executors and importlib.util.find_spec("ray") is None:
        print("ray is not installed (pip install -e '.[ray]'): skipped")
        executors.remove("ray")
    runs = {}
    for executor in executors:
        print(f"{executor} ...", flush=True)
        runs[executor] = run(executor, args.seeds, QUICK if args.quick else [])
    base = runs.get("inline")
    print(
        f"\ncbft, seeds ({args.seeds}){' (quick config)' if args.quick else ''}, {common.machine()}"
        f", {os.cpu_count()} cores\n"
    )
    print(
        "| executor | workers | wall s | Σ units s | critical path s | ideal s | wall ÷ ideal "
        "| speed-up over inline | results = inline's |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        speedup = f"{base['wall_seconds'] / r['wall_seconds']:.2f}×" if base else "-"
        same = ("yes" if r["methods"] == base["methods"] else "NO") if base else "-"
        print(
            f"| {name} | {r['workers']} | {r['wall_seconds']:.0f} | {r['unit_seconds']:.0f} | "
            f"{r['critical_path_seconds']:.0f} | {r['ideal_seconds']:.0f} | "
            f"{r['wall_seconds'] / r['ideal_seconds']:.2f} | {speedup} | {same} |"
        )
    for r in runs.values():
        del r["methods"]
    path = common.save("executors", {"seeds": args.seeds, "quick": args.quick, "runs": runs})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
