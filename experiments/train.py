"""Train a model on (partly) cued data and evaluate it on the four counterfactual sets.

    python -m experiments.train [--config=experiments/configs/demo.py] [--workdir=DIR]

Rerunning the same command resumes from the latest checkpoint in the workdir. Writes
``results.json``, ``results.md`` and ``curves.png`` there.
"""

from __future__ import annotations

import pathlib

from experiments import cli
from mmc_jax import io, plots, report, training

CONFIG, WORKDIR = cli.define_flags(cli.config_path(__file__, "demo"), "workdirs/train")


def write_outputs(workdir: pathlib.Path, result: dict, history: list) -> str:
    """results.json, results.md (also returned) and curves.png."""
    io.write_json(workdir / "results.json", {**result, "history": history})
    name = f"{result['model']} on {result['dataset']}, p = {result['cue_proportion']}"
    table = (f"# {name}\n\n{result['epochs']} epochs, {result['seconds']:.0f} s of training\n\n"
             + report.conditions_table({result["model"]: result["test"]}))
    io.write_atomic(workdir / "results.md", table)
    io.save_figure(workdir / "curves.png", plots.training_curves(history, name))
    return table


def main(argv):
    del argv
    workdir = pathlib.Path(WORKDIR.value).resolve()
    print(f"workdir: {workdir}")
    out = training.train_and_evaluate(CONFIG.value, str(workdir))
    print(write_outputs(workdir, out["result"], out["history"]))


if __name__ == "__main__":
    cli.run(main)
