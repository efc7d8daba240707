"""The main job: remove a spurious cue from a cue-reliant model, CBFT against baselines.

    python -m experiments.cbft [--config=experiments/configs/cbft.py] [--workdir=DIR]
    python -m experiments.cbft --config.seeds="(0, 1, 2)"          # a seed sweep

For every seed s (``config.seeds``), in ``DIR/seed_<s>``: trains θ_C with seed s (or reuses
``config.cue_model_dir``), fine-tunes it with naive FT at a small and a medium learning rate,
LLRT, LPFT and CBFT, evaluates every model on the four counterfactual conditions and measures
the linear-path barrier from θ_C on cued test data. Each seed writes ``results.json``,
``results.md`` and ``paths.png``; ``DIR`` gets the same files aggregated over the seeds
(mean ± std, laid out like the paper's Table 1). Rerunning resumes.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
from tqdm.auto import tqdm

from experiments import cli
from mmc_jax import finetune, io, path_eval, paths, plots, report, training
from mmc_jax.errors import InputError, require

CONFIG, WORKDIR = cli.define_flags(cli.config_path(__file__, "cbft"), "workdirs/cbft")
METHOD_NAMES = ("cue_model", "naive_ft_small", "naive_ft_medium", "llrt", "lpft", "cbft")


def finetune_config(config, learning_rate: float, seed: int) -> finetune.FinetuneConfig:
    """The fine-tuning hyperparameters of the experiment config, for one seed."""
    return finetune.FinetuneConfig(
        epochs=config.epochs, learning_rate=learning_rate, batch_size=config.batch_size,
        momentum=config.momentum, weight_decay=config.weight_decay, seed=seed,
        llrt_epochs=config.llrt_epochs, llrt_learning_rate=config.llrt_learning_rate,
        cbft_mode=config.cbft_mode, barrier_target=config.barrier_target, t_dist=config.t_dist,
        invariance_weight=config.invariance_weight, normalize_means=config.normalize_means,
        warmup_epochs=config.warmup_epochs, grad_clip_norm=config.grad_clip_norm)


def seeds_of(config) -> tuple[int, ...]:
    """The seeds of the sweep, checked: a non-empty tuple of distinct integers."""
    seeds = config.seeds
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise InputError(f"seeds must be non-negative integers, e.g. (0, 1, 2); got "
                         f"{config.seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct, got {seeds}")
    return seeds


def validate(config) -> None:
    """Raises InputError for impossible values before any long work."""
    for name in ("small_lr", "medium_lr"):
        finetune_config(config, config[name], 0)
    if not config.cue_model_dir:
        training.validate(config.cue_model)
    require([
        (config.n_clean >= 1, f"n_clean must be >= 1, got {config.n_clean}"),
        (config.n_cue >= 1, f"n_cue must be >= 1, got {config.n_cue}"),
        (config.path_points >= 2, f"path_points must be >= 2, got {config.path_points}"),
        (config.bn_batches >= 1, f"bn_batches must be >= 1, got {config.bn_batches}"),
        (config.eval_batch_size >= 1,
         f"eval_batch_size must be >= 1, got {config.eval_batch_size}"),
        (config.bn in path_eval.BN_POLICIES,
         f"unknown BN policy {config.bn!r}; choose from {', '.join(path_eval.BN_POLICIES)}"),
    ])


def data_config(config) -> ml_collections.ConfigDict:
    """The config naming θ_C's data: the reused θ_C's own (``cue_model_dir``), else
    ``config.cue_model``."""
    if config.cue_model_dir:
        return training.trained_config(config.cue_model_dir)
    return config.cue_model


def cue_model_config(config, seed: int):
    """θ_C's training config for one seed of the sweep."""
    cue_config = ml_collections.ConfigDict(config.cue_model.to_dict())
    cue_config.seed = seed
    return cue_config


def run(config, workdir: str) -> dict:
    """Every seed of the sweep, then the aggregate; returns the aggregated results."""
    start = time.perf_counter()
    workdir = pathlib.Path(workdir).resolve()
    seeds = seeds_of(config)
    validate(config)
    train, _ = training.load_data(data_config(config))
    finetune.draw_subsets(train, config.n_clean, config.n_cue, 0)  # sizes fit the data
    training.check_config(workdir, config.to_dict(), ignore=("seeds",))  # a sweep may grow
    runs = []
    for i, seed in enumerate(seeds):
        folder = workdir / f"seed_{seed}"
        print(f"seed {seed} ({i + 1}/{len(seeds)}): {folder}")
        runs.append(finished_seed(config, seed, folder) or run_seed(config, seed, folder))
    results = aggregate(runs)
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_outputs(results, workdir)
    return results


def seed_config(config, seed: int) -> dict:
    """The config of one seed's run, as stored in its ``results.json``."""
    return {**config.to_dict(), "seeds": [seed]}


def finished_seed(config, seed: int, workdir: pathlib.Path) -> dict | None:
    """The results of a seed already finished with this very config, else None."""
    path = workdir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    if results.get("config") != json.loads(json.dumps(seed_config(config, seed))):
        return None
    print("  finished earlier with this config; reusing its results")
    return results


def run_seed(config, seed: int, workdir: pathlib.Path) -> dict:
    """θ_C, the five fine-tuned models, their evaluation and barriers for one seed."""
    start = time.perf_counter()
    small = finetune_config(config, config.small_lr, seed)
    medium = finetune_config(config, config.medium_lr, seed)
    if config.cue_model_dir:  # its data and cue are those it was trained with
        print(f"1/3 cue model θ_C: reusing {config.cue_model_dir}")
        model, theta_c, cue_config = training.restore_trained(config.cue_model_dir)
        apply_fn = model.apply
    else:
        cue_config = cue_model_config(config, seed)
    train, test = training.load_data(cue_config)
    clean_index, cue_index = finetune.draw_subsets(train, config.n_clean, config.n_cue, seed)
    if not config.cue_model_dir:
        print("1/3 cue model θ_C")
        state = training.train_and_evaluate(cue_config, str(workdir / "cue_model"))["state"]
        apply_fn, theta_c = state.apply_fn, state.variables
    iterator = finetune.paired_iterator(train, clean_index, cue_index, config.batch_size, seed)
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
    key = jax.random.PRNGKey(seed + 1)
    methods = {}
    for name, variables in tqdm(models.items(), desc="evaluate", unit="model"):
        methods[name] = {"test": training.evaluate(apply_fn, variables, test, key,
                                                   batch_size=config.eval_batch_size)}
        if name == "cue_model":  # the path from θ_C to itself: no barrier by definition
            methods[name]["barrier_to_cue_model"] = {"loss": 0.0, "acc": 0.0}
            continue
        result = path_eval.evaluate_path(
            apply_fn, paths.linear(theta_c, variables), paths.grid(config.path_points), test,
            conditions=("cue",), bn=config.bn, bn_set=train, bn_batches=config.bn_batches,
            batch_size=config.eval_batch_size, key=key)
        methods[name]["barrier_to_cue_model"] = result.barriers("cue")
        methods[name]["path_to_cue_model"] = {
            "ts": result.ts.tolist(), "cue_acc": result.metrics["cue"]["acc"].tolist(),
            "cue_loss": result.metrics["cue"]["loss"].tolist()}
    results = {"dataset": train.name, "model": cue_config.model,
               "cue_proportion": cue_config.cue_proportion, "n_clean": config.n_clean,
               "seeds": [seed], "seconds": round(time.perf_counter() - start, 1),
               "methods": methods, "config": seed_config(config, seed)}
    write_outputs(results, workdir)
    return results


def aggregate(runs: list[dict]) -> dict:
    """Mean over seeds of every number, with standard deviations beside the accuracies."""
    first = runs[0]
    methods = {}
    for name, method in first["methods"].items():
        per_seed = [r["methods"][name] for r in runs]
        mean, std = report.mean_std(per_seed)
        methods[name] = {**mean, "test_std": std["test"],
                         "barrier_to_cue_model_std": std["barrier_to_cue_model"]}
    return {**{k: first[k] for k in ("dataset", "model", "cue_proportion", "n_clean")},
            "seeds": [s for r in runs for s in r["seeds"]],
            "seconds_per_seed": [r["seconds"] for r in runs], "methods": methods}


def write_outputs(results: dict, workdir: pathlib.Path) -> None:
    """``results.json``, ``results.md`` (also printed) and ``paths.png`` in ``workdir``."""
    io.write_json(workdir / "results.json", results)
    curves = {name: m["path_to_cue_model"] for name, m in results["methods"].items()
              if "path_to_cue_model" in m}
    io.save_figure(workdir / "paths.png", plots.cue_model_paths(curves))
    table = results_table(results)
    io.write_atomic(workdir / "results.md", table)
    print(table)


def results_table(results: dict) -> str:
    """Markdown table like the paper's Table 1 plus the loss barrier to θ_C."""
    methods = results["methods"]
    rows = {name: m["test"] for name, m in methods.items()}
    std = {name: m["test_std"] for name, m in methods.items() if "test_std" in m}
    seeds = results["seeds"]
    extra = {}
    for name, m in methods.items():
        cell = f"{m['barrier_to_cue_model']['loss']:.2f}"
        if len(seeds) > 1:
            cell += f" ± {m['barrier_to_cue_model_std']['loss']:.2f}"
        extra[name] = {"loss barrier to θ_C": cell}
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else (
        f"mean ± std over seeds {', '.join(map(str, seeds))}")
    head = (f"# {results['model']} on {results['dataset']}, θ_C at p = "
            f"{results['cue_proportion']}, {results['n_clean']} clean samples, {seed_text}\n\n")
    return head + report.conditions_table(rows, extra, std if len(seeds) > 1 else None) + (
        "\nNC ↑ higher is better; C ~ and RC ~ should match NC (cue ignored); RI ↓ chance "
        "is ideal. Barrier: linear path from θ_C, cued test data.\n")


def main(argv):
    del argv
    print(f"workdir: {pathlib.Path(WORKDIR.value).resolve()}")
    run(CONFIG.value, WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
