"""Per-layer barriers between two trained models, on every counterfactual condition.

    python -m experiments.layerwise --model_a=DIR --model_b=DIR [--config=...] [--workdir=DIR]

Each layer (top-level module, or ``--config.groups``) is interpolated alone from A (t = 0)
to B (t = 1), the rest held at A; all the partial lines are evaluated in one compiled
program (``mmc_jax.analysis.layerwise``). Writes ``results.json``, ``results.md`` and
``layerwise.png`` (bars per layer and condition) to the workdir; a rerun with the same
models and config reuses the finished results.
"""

from __future__ import annotations

import pathlib

from absl import flags

from experiments import cli, comparison, outputs
from mmc_jax import paths
from mmc_jax.analysis import layerwise
from mmc_jax.reporting import plots, tensorboard


def define(flag_values) -> None:
    """``--model_a`` and ``--model_b``."""
    flags.DEFINE_string(
        "model_a",
        None,
        "Folder of model A (t = 0; the layers not interpolated stay at A).",
        flag_values=flag_values,
    )
    flags.DEFINE_string("model_b", None, "Folder of model B (t = 1).", flag_values=flag_values)


def check(args) -> None:
    """Both model folders hold models of one architecture and data; the path section."""
    comparison.check_pair(args.model_a, args.model_b)
    comparison.check_path(args.config.path)


def run(config, model_a: str, model_b: str, workdir: str) -> dict:
    """Loads both models, evaluates every layer's partial line, writes the outputs."""
    workdir = pathlib.Path(workdir).resolve()
    path = comparison.check_path(config.path)
    stored = {"config": config.to_dict(), "model_a": model_a, "model_b": model_b}
    done = outputs.finished(workdir, stored)
    if done:
        return done
    model, pair, train, test = comparison.load_models(
        {"--model_a": model_a, "--model_b": model_b}, path
    )
    a, b = pair["--model_a"], pair["--model_b"]
    groups = [g.strip() for g in config.groups.split(",") if g.strip()] or None
    result = layerwise.layerwise_barriers(
        model.apply,
        a,
        b,
        test,
        groups=groups,
        ts=paths.grid(path.num_points),
        conditions=path.conditions,
        **comparison.evaluator_settings(path, train, config.seed, workdir, stored),
    )
    results = {**stored, **result.to_json()}
    with tensorboard.open_log(workdir) as log:
        log.tree(
            0,
            {
                f"{metric}_barrier": {
                    c: dict(zip(result.groups, values[c].tolist())) for c in values
                }
                for metric, values in (("loss", result.loss), ("acc", result.acc))
            },
        )
        tensorboard.save_figure(
            log,
            workdir / "layerwise.png",
            plots.layer_barriers(
                result,
                f"one layer at a time from {pathlib.Path(model_a).name} (t=0) to "
                f"{pathlib.Path(model_b).name} (t=1)",
            ),
        )
    outputs.publish(workdir, results, markdown(results))
    comparison.remove_parts(workdir)
    return results


def markdown(results: dict) -> str:
    """Loss barrier (accuracy barrier in points) per layer and condition."""
    conditions = list(results["conditions"])
    lines = [
        f"# Per-layer barriers: {results['model_a']} → {results['model_b']}\n",
        "| layer | " + " | ".join(conditions) + " |",
        "|---|" + "---|" * len(conditions),
    ]
    for g, group in enumerate(results["groups"]):
        cells = [
            f"{results['conditions'][c]['loss_barrier'][g]:.2f} "
            f"({100 * results['conditions'][c]['acc_barrier'][g]:.1f})"
            for c in conditions
        ]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        "\n\nLoss barrier (accuracy barrier in points) of interpolating "
        "that layer alone, the rest held at model A.\n"
    )


def main(args, checked=None):
    del checked
    run(args.config, args.model_a, args.model_b, args.workdir)


ENTRY = cli.Entry(
    "layerwise", main, cli.config_path(__file__, "layerwise"), "workdirs/layerwise", define, check
)

if __name__ == "__main__":
    cli.run(ENTRY)
