"""The main job: remove a spurious cue from a cue-reliant model, CBFT against baselines.

    python -m experiments.cbft [--config=experiments/configs/cbft.py] [--workdir=DIR]

Writes ``results.json``, ``results.md`` (laid out like the paper's Table 1) and ``paths.png``
(accuracy along the straight line from θ_C to each method's model). Rerunning resumes.
"""

from __future__ import annotations

import pathlib
import sys
import time

import jax
import numpy as np

from experiments import cli
from mmc_jax import data, finetune, io, path_eval, paths, plots, report, training

CONFIG, WORKDIR = cli.define_flags(cli.config_path(__file__, "cbft"), "workdirs/cbft")
METHOD_NAMES = ("cue_model", "naive_ft_small", "naive_ft_medium", "llrt", "lpft", "cbft")


def finetune_config(config, learning_rate: float) -> finetune.FinetuneConfig:
    """The fine-tuning hyperparameters of the experiment config."""
    return finetune.FinetuneConfig(
        epochs=config.epochs, learning_rate=learning_rate, batch_size=config.batch_size,
        momentum=config.momentum, weight_decay=config.weight_decay, seed=config.seed,
        llrt_epochs=config.llrt_epochs, llrt_learning_rate=config.llrt_learning_rate,
        cbft_mode=config.cbft_mode, barrier_target=config.barrier_target, t_dist=config.t_dist,
        invariance_weight=config.invariance_weight, normalize_means=config.normalize_means,
        warmup_epochs=config.warmup_epochs)


def run(config, workdir: str) -> dict:
    """θ_C, the five fine-tuned models, their evaluation and barriers; returns results."""
    start = time.perf_counter()
    workdir = pathlib.Path(workdir).resolve()
    small, medium = finetune_config(config, config.small_lr), finetune_config(config,
                                                                                config.medium_lr)
    training.validate(config.cue_model)
    train, test = training.load_data(config.cue_model)
    clean_index, cue_index = finetune.draw_subsets(train, config.n_clean, config.n_cue,
                                                   config.seed)
    print("1/3 cue model θ_C")
    cue_run = training.train_and_evaluate(config.cue_model, str(workdir / "cue_model"))
    state = cue_run["state"]
    apply_fn, theta_c = state.apply_fn, state.variables
    iterator = finetune.paired_iterator(train, clean_index, cue_index, config.batch_size,
                                        config.seed)
    k = train.num_classes
    print("2/3 fine-tuning")
    models = {"cue_model": theta_c}
    models["naive_ft_small"], _ = finetune.naive_finetune(
        apply_fn, theta_c, iterator, train.cue, small, workdir / "naive_ft_small")
    models["naive_ft_medium"], _ = finetune.naive_finetune(
        apply_fn, theta_c, iterator, train.cue, medium, workdir / "naive_ft_medium")
    models["llrt"], _ = finetune.llrt(apply_fn, theta_c, train, clean_index, k, medium,
                                      workdir / "llrt")
    models["lpft"], _ = finetune.naive_finetune(
        apply_fn, models["llrt"], iterator, train.cue, medium, workdir / "lpft")
    models["cbft"], _ = finetune.cbft(apply_fn, theta_c, theta_c, iterator, train.cue, k,
                                      medium, workdir / "cbft")
    print("3/3 evaluation and barriers to θ_C")
    key = jax.random.PRNGKey(config.seed + 1)
    methods, curves = {}, {}
    for name, variables in models.items():
        tests = training.evaluate(apply_fn, variables, test, key,
                                  batch_size=config.eval_batch_size)
        result = path_eval.evaluate_path(
            apply_fn, paths.linear(theta_c, variables), paths.grid(config.path_points), test,
            conditions=("cue",), bn=config.bn, bn_set=train,
            bn_batches=config.bn_batches, batch_size=config.eval_batch_size, key=key)
        methods[name] = {"test": tests, "barrier_to_cue_model": result.barriers("cue")}
        curves[name] = {"ts": result.ts.tolist(),
                        "cue_acc": result.metrics["cue"]["acc"].tolist(),
                        "cue_loss": result.metrics["cue"]["loss"].tolist()}
        methods[name]["path_to_cue_model"] = curves[name]
    results = {"dataset": train.name, "model": config.cue_model.model,
               "cue_proportion": config.cue_model.cue_proportion, "n_clean": config.n_clean,
               "seed": config.seed, "seconds": round(time.perf_counter() - start, 1),
               "methods": methods}
    io.write_json(workdir / "results.json", results)
    io.save_figure(workdir / "paths.png", plots.cue_model_paths(curves))
    table = results_table(results)
    io.write_atomic(workdir / "results.md", table)
    print(table)
    return results


def results_table(results: dict) -> str:
    """Markdown table like the paper's Table 1 plus the barrier to θ_C."""
    rows = {name: m["test"] for name, m in results["methods"].items()}
    extra = {name: {"loss barrier to θ_C": f"{m['barrier_to_cue_model']['loss']:.2f}"}
             for name, m in results["methods"].items()}
    head = (f"# {results['model']} on {results['dataset']}, θ_C at p = "
            f"{results['cue_proportion']}, {results['n_clean']} clean samples, seed "
            f"{results['seed']}\n\n")
    return head + report.conditions_table(rows, extra) + (
        "\nNC ↑ higher is better; C ~ and RC ~ should match NC (cue ignored); RI ↓ chance "
        "is ideal. Barrier: linear path from θ_C, cued test data.\n")


def main(argv):
    del argv
    print(f"workdir: {pathlib.Path(WORKDIR.value).resolve()}")
    try:
        run(CONFIG.value, WORKDIR.value)
    except training.Interrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli.run(main)
