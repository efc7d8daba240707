"""Loss and accuracy along a path between two trained models, on the four counterfactual
sets; barriers per condition.

    python -m experiments.connectivity --model_a=DIR --model_b=DIR \
        --path=linear|permuted_linear|quadratic [--config=...] [--workdir=DIR]

A model is any folder holding one: an ``experiments.train`` workdir, or any model folder of
``experiments.cbft`` (``<workdir>/seed_<s>/<cue_model|nocue_model|cbft|lpft|...>``). Writes
``results.json``, ``results.md`` and ``paths.png`` to the workdir; for the quadratic path
also the trained control point as a model folder, ``control/`` (``experiments.plane
--curve=<this workdir>`` draws the plane through it and the endpoints).
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from absl import flags

from experiments import cli, evaluation
from mmc_jax import curve, data, io, logs, models, path_eval, paths, plots, training
from mmc_jax.errors import require

CONFIG, WORKDIR = cli.define_flags(cli.config_path(__file__, "connectivity"),
                                   "workdirs/connectivity")
MODEL_A = flags.DEFINE_string("model_a", None, "Folder of the t = 0 model (an experiments.train "
                              "workdir or a model folder of experiments.cbft).")
MODEL_B = flags.DEFINE_string("model_b", None, "Folder of the t = 1 model.")
PATH = flags.DEFINE_enum("path", "linear", ["linear", "permuted_linear", "quadratic"],
                         "Path family.")


def build_path(config, kind: str, model, a, b, train, workdir: pathlib.Path):
    """The path of ``kind`` between ``a`` and ``b`` (aligning or fitting as needed)."""
    if kind == "linear":
        return paths.linear(a, b)
    if kind == "permuted_linear":
        return paths.linear(a, evaluation.aligner(config, model, b, train)(a, b))
    if config.curve_init == "mean":
        control = curve.mean_control(a, b)
    else:
        control = models.init(model, jax.random.PRNGKey(config.seed + 7), train.image_shape)
    fitted = curve.fit_midpoint(
        model.apply, a, b, control, train, workdir / "midpoint",
        cue_proportion=config.curve_cue_proportion, seed=config.seed,
        epochs=config.curve_epochs, learning_rate=config.curve_learning_rate,
        step_every_epochs=config.curve_step_every_epochs, batch_size=config.curve_batch_size,
        scale=config.curve_scale)
    return paths.bezier(a, fitted["control"], b)


def validate(config) -> tuple[str, ...]:
    """Raises InputError for impossible values; returns the conditions."""
    require([
        (config.curve_init in ("random", "mean"),
         f"unknown curve_init {config.curve_init!r}; use random or mean"),
        (config.curve_scale in curve.SCALES,
         f"unknown curve_scale {config.curve_scale!r}; choose from {', '.join(curve.SCALES)}"),
        (config.bn in path_eval.BN_POLICIES, f"unknown BN policy {config.bn!r}; choose from "
         f"{', '.join(path_eval.BN_POLICIES)}"),
        (config.num_points >= 2, f"num_points must be >= 2, got {config.num_points}"),
    ])
    evaluation.check_permutation(config)
    conditions = tuple(c.strip() for c in config.conditions.split(",") if c.strip())
    for c in conditions:
        data.check_condition(c)
    data.check_random_from(config.random_from)
    path_eval.resolve_strategy(config.strategy)
    return conditions


def connectivity(config, model_a: str, model_b: str, kind: str, workdir: str) -> dict:
    """Evaluates the path and writes the outputs; returns the results.json dict."""
    workdir = pathlib.Path(workdir).resolve()
    conditions = validate(config)
    model, a, config_a = training.load_model(model_a)
    _, b, config_b = training.load_model(model_b)
    training.check_compatible(config_a, config_b, f"--model_a {model_a}",
                              f"--model_b {model_b}")
    train, test = training.load_data(config_a)
    eval_set = test if config.eval_split == "test" else train
    if config.num_eval:
        eval_set = eval_set.take(np.arange(min(config.num_eval, len(eval_set))))
    path = build_path(config, kind, model, a, b, train, workdir)
    control = None
    if kind == "quadratic":  # a model folder, e.g. for experiments.plane --curve
        training.save_model(workdir / "control", config_a,
                            jax.tree.map(lambda x: x[1], path.points), train.num_classes,
                            train.image_shape)
        control = "control"  # relative to the workdir, which may move
    print(f"evaluating {config.num_points} points x {len(conditions)} conditions "
          f"({path_eval.resolve_strategy(config.strategy)}, BN {config.bn})")
    result = path_eval.evaluate_path(
        model.apply, path, paths.grid(config.num_points), eval_set, conditions=conditions,
        bn=config.bn, bn_set=train, bn_batches=config.bn_batches or None,
        batch_size=config.batch_size, bn_batch_size=config.bn_batch_size or None,
        bn_shuffle_seed=config.seed if config.bn_shuffle else None,
        random_from=config.random_from, strategy=config.strategy,
        chunk_size=config.chunk_size or None,
        memory_budget=int(config.memory_budget_gib * 2**30) or None,
        key=jax.random.PRNGKey(config.seed))
    summary = {**result.to_json(kind), "model_a": str(model_a), "model_b": str(model_b),
               "bn": config.bn, "permutation": config.permutation if kind ==
               "permuted_linear" else None,
               "permute_residual": config.permute_residual if kind == "permuted_linear"
               else None, "control": control,
               "chunk_size": result.chunk_size,
               "memory_gib": None if result.memory_bytes is None
               else round(result.memory_bytes / 2**30, 3)}
    io.write_json(workdir / "results.json", summary)
    table = plots_and_table(summary, workdir)
    print(table)
    return summary


def plots_and_table(summary: dict, workdir: pathlib.Path) -> str:
    """paths.png and the markdown table of barriers (written to results.md)."""
    title = f"{summary['path']} path: {summary['model_a']} (t=0) → {summary['model_b']} (t=1)"
    with logs.open_log(workdir) as log:
        logs.path_curves(log, summary["path"], summary)
        logs.save_figure(log, workdir / "paths.png", plots.path_curves(summary, title))
    lines = [f"# {summary['path']} path, BN {summary['bn']}\n",
             "| condition | acc at t=0 | min acc | acc at t=1 | acc barrier | loss barrier |",
             "|---|---|---|---|---|---|"]
    for c, m in summary["conditions"].items():
        lines.append(f"| {c} | {100 * m['acc'][0]:.1f} | {100 * min(m['acc']):.1f} | "
                     f"{100 * m['acc'][-1]:.1f} | {100 * m['barrier']['acc']:.1f} | "
                     f"{m['barrier']['loss']:.3f} |")
    table = "\n".join(lines) + "\n\nAccuracies in %.\n"
    io.write_atomic(workdir / "results.md", table)
    return table


def main(argv):
    del argv
    evaluation.require_pair(MODEL_A.value, MODEL_B.value)
    print(f"workdir: {pathlib.Path(WORKDIR.value).resolve()}")
    connectivity(CONFIG.value, MODEL_A.value, MODEL_B.value, PATH.value, WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
