"""The main job: remove a spurious cue from a cue-reliant model, CBFT against baselines.

    python -m experiments.cbft [--config=experiments/configs/cbft.py] [--workdir=DIR]
    python -m experiments.cbft --config.seeds="(0, 1, 2)"          # a seed sweep

For every seed s (``config.seeds``), in ``DIR/seed_<s>``: trains θ_C with seed s (or reuses
``config.cue_model_dir``), and θ_NC when a path starts from it; runs every method of
``config.methods`` (see ``experiments.methods``); evaluates every model on the four
counterfactual conditions and along the straight line from each reference model of
``config.path.targets`` on ``config.path.conditions``. Each seed writes ``results.json``,
``results.md`` and ``paths_to_<reference>.png``; ``DIR`` gets the same files aggregated over
the seeds (mean ± std, laid out like the paper's Table 1). Every model folder
(``DIR/seed_<s>/<method>``) loads in ``experiments.connectivity``. Rerunning resumes.

The paper's other experiments are configs of this entry point: ``fig5.py`` (naive
fine-tuning at three learning rates, paths on all four conditions), ``cbft_paths.py`` (paths
to θ_C and θ_NC) and ``ablations.py`` (Tables 3 and 4).
"""

from __future__ import annotations

import pathlib
import time

import jax
import ml_collections
from absl import logging
from tqdm.auto import tqdm

from experiments import cli, comparison, outputs
from experiments import methods as methods_lib
from mmc_jax import data, finetune, models, paths, training
from mmc_jax.connectivity import path_eval
from mmc_jax.reporting import files, plots, tables, tensorboard, timing
from mmc_jax.runtime.errors import InputError, check_bounds, require
from mmc_jax.training import calibration, diagnosis

#: How the reference models are named in reports and plots.
LABELS = {"cue_model": "θ_C", "nocue_model": "θ_NC"}


def seeds_of(config) -> tuple[int, ...]:
    """The seeds of the sweep, checked: a non-empty tuple of distinct integers."""
    seeds = config.seeds
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise InputError(
            f"seeds must be non-negative integers, e.g. (0, 1, 2); got {config.seeds!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct, got {seeds}")
    return seeds


def check_sections(config) -> None:
    """Raises InputError for an impossible value of any section, before any long work."""
    methods_lib.method_configs(config, 0)
    methods_lib.check_methods(config.methods)
    methods_lib.check_targets(config.path.targets)
    comparison.check_path(config.path)
    if not config.cue_model_dir:
        training.TrainConfig.of(config.cue_model)
    n_clean = config.data.n_clean
    require(
        [
            (
                n_clean == training.AUTO or (isinstance(n_clean, int) and n_clean >= 1),
                f"data.n_clean must be an integer >= 1 or 'auto', got {n_clean!r}",
            )
        ]
    )
    check_bounds(config.data, "data.", count=("n_cue",))
    check_bounds(config.baselines, "baselines.", count=("scratch_epochs",))
    init = config.cue_model.model.init_from
    if init == "nocue_model" and config.cue_model.data.cue_proportion == training.AUTO:
        raise InputError(
            "cue_model.data.cue_proportion=auto trains its trials from scratch; "
            "it cannot be combined with cue_model.model.init_from=nocue_model"
        )
    folders = {
        "cue_model_dir": config.cue_model_dir,
        "nocue_model_dir": config.nocue_model_dir,
        "cue_model.model.init_from": "" if init == "nocue_model" else init,
    }
    stored = {n: comparison.check_model_folder(n, f) for n, f in folders.items() if f}
    for name in ("nocue_model_dir", "cue_model.model.init_from"):  # θ_C's architecture and data
        if name in stored:
            training.check_compatible(
                stored[name], data_config(config), f"{name} ({folders[name]})", "θ_C"
            )


def check(args) -> None:
    """Every check of the command line that needs no data: the seeds, every section, the
    model folders it names, and a run already in the workdir made with the same config."""
    config = args.config
    seeds_of(config)
    check_sections(config)
    workdir = pathlib.Path(args.workdir).expanduser().resolve()
    if (workdir / "config.json").is_file() and not args.restart:
        training.check_config(workdir, config.to_dict(), ignore=("seeds",))


def resolved(config, **sections) -> ml_collections.ConfigDict:
    """A copy of ``config`` with fields of its sections replaced (``data={"n_clean": 500}``):
    what the run resolved (an ``auto``), typed by the new values; ``config`` is unchanged."""
    values = config.to_dict()
    for name, changes in sections.items():
        values[name] = {**values[name], **changes}
    return ml_collections.ConfigDict(values)


def data_config(config) -> training.TrainConfig:
    """The training config naming θ_C's data: the reused θ_C's own (``cue_model_dir``),
    else ``config.cue_model``."""
    if config.cue_model_dir:
        return training.model_config(config.cue_model_dir)
    return training.TrainConfig.of(config.cue_model)


def run(config, workdir: str) -> dict:
    """Every seed of the sweep, then the aggregate; returns the aggregated results."""
    start = time.perf_counter()
    workdir = pathlib.Path(workdir).resolve()
    seeds = seeds_of(config)
    check_sections(config)
    cue_data = data_config(config)
    train, test = training.load_data(cue_data)
    n_clean = (
        min(methods_lib.N_CLEAN_CANDIDATES)
        if config.data.n_clean == training.AUTO
        else (config.data.n_clean)
    )
    finetune.draw_subsets(train, n_clean, config.data.n_cue, 0)  # sizes fit the data
    model = training.create_model(cue_data, train.num_classes)  # its contract, before training
    abstract = jax.eval_shape(lambda: models.init(model, jax.random.PRNGKey(0), train.image_shape))
    methods_lib.check_model_contract(model.apply, abstract, train, config.methods)
    training.check_config(workdir, config.to_dict(), ignore=("seeds",))  # a sweep may grow
    calibrated, given = None, config
    if cue_data.data.cue_proportion == training.AUTO:
        config, calibrated = calibrate(config, seeds[0], workdir, (train, test))
    runs = []
    for i, seed in enumerate(seeds):
        folder = workdir / f"seed_{seed}"
        logging.info(f"seed {seed} ({i + 1}/{len(seeds)}): {folder}")
        stored = seed_config(given, seed)  # the user's config: an ``auto`` stays ``auto``
        done = outputs.finished(folder, {"config": stored}, show=False)
        runs.append(done or run_seed(config, seed, folder, (train, test), stored))
    results = aggregate(runs)
    if calibrated:
        results["calibration"] = calibrated
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_outputs(results, workdir)
    cli.warn(results["diagnosis"]["warnings"])
    return results


def calibrate(config, seed: int, workdir: pathlib.Path, datasets):
    """θ_C's cue proportion for ``cue_model.cue_proportion = "auto"``: the calibration
    (:func:`mmc_jax.training.calibration.calibrate`, trials in ``workdir/calibration`` with the
    first seed's recipe; the proportion is a property of the data, shared by every seed). Returns
    the config with the chosen proportion, and the calibration's result."""
    logging.info("θ_C's cue proportion: calibration trials")
    cue_config = training.TrainConfig.of(config.cue_model)
    calibrated = calibration.calibrate(
        cue_config.changed(seed=seed), workdir / "calibration", datasets=datasets
    )
    logging.info(f"θ_C's cue proportion: p = {calibrated['cue_proportion']:g}")
    cli.warn(filter(None, [calibration.warning(calibrated, cue_config.optim.weight_decay)]))
    cue_config = cue_config.changed(data={"cue_proportion": calibrated["cue_proportion"]})
    config = resolved(config, cue_model=cue_config.to_dict())
    # The chosen trial is this seed's θ_C already.
    calibration.reuse(
        calibrated,
        cue_config.changed(seed=seed),
        workdir / f"seed_{seed}" / "cue_model",
        workdir / "calibration",
    )
    return config, calibrated


def seed_config(config, seed: int) -> dict:
    """The config of one seed's run, as stored in its ``results.json``."""
    return {**config.to_dict(), "seeds": [seed]}


def run_seed(
    config, seed: int, workdir: pathlib.Path, datasets: tuple, stored: dict | None = None
) -> dict:
    """The reference models, every method, their evaluation and paths for one seed, on
    θ_C's ``(train, test)`` data (loaded once for the sweep); ``stored`` is the config its
    results.json records (default: ``config``'s)."""
    start = time.perf_counter()
    phases = timing.Phases()
    logging.info("1/3 reference models")
    with phases("reference models"):
        apply_fn, references, cue_config = methods_lib.reference_models(
            config, seed, workdir, datasets
        )
    train, test = datasets
    stored, probes = stored or seed_config(config, seed), None
    if config.data.n_clean == training.AUTO:
        logging.info("n_clean: probing small-LR naive fine-tuning")
        with phases("n_clean probes"):
            n_clean, probes = methods_lib.choose_n_clean(
                config, seed, workdir, apply_fn, references["cue_model"], train, test
            )
        config = resolved(config, data={"n_clean": n_clean})
        logging.info(f"n_clean: {n_clean}")
    logging.info("2/3 fine-tuning")
    fine_tuned = methods_lib.fine_tuned_models(
        config, seed, workdir, apply_fn, references["cue_model"], cue_config, train, test, phases
    )
    logging.info("3/3 evaluation and paths")
    models = {**references, **fine_tuned}
    methods = evaluate_models(
        config, apply_fn, models, references, train, test, jax.random.PRNGKey(seed + 1), phases
    )
    results = {
        "dataset": train.name,
        "model": cue_config.model.name,
        "cue_proportion": cue_config.data.cue_proportion,
        "n_clean": config.data.n_clean,
        "num_classes": train.num_classes,
        "cue_weight_decay": cue_config.optim.weight_decay,
        "seeds": [seed],
        "seconds": round(time.perf_counter() - start, 1),
        "methods": methods,
        "timings": phases.to_json(),
        "config": stored,
    }
    if probes is not None:
        results["n_clean_probes"] = probes
    results["diagnosis"] = diagnose(results)
    write_outputs(results, workdir)
    return results


def evaluate_models(
    config,
    apply_fn,
    models: dict,
    references: dict,
    train,
    test,
    key,
    phases: timing.Phases | None = None,
) -> dict:
    """Every model on the four conditions, and along the line from each path target
    (timed as the phases "evaluation" and "paths" when ``phases`` is given).

    Returns:
      model name → ``{"test", "barrier_to_cue_model", "paths": {target: path json}}``;
      ``barrier_to_cue_model`` is the barrier on cued test data (0 for θ_C itself).
    """
    path = comparison.check_path(config.path)
    conditions = path.conditions
    methods = {}
    jobs = [
        (target, name)
        for target in methods_lib.check_targets(path.targets)
        for name in models
        if name != target
    ]
    phases = phases or timing.Phases()
    settings = {**comparison.evaluator_settings(path, train, 0), "key": key}
    test = path.eval_set(train, test)
    bar = tqdm(total=len(models) + len(jobs), desc="evaluate", unit="eval")
    for name, variables in models.items():
        with phases("evaluation"):
            methods[name] = {
                "test": comparison.test_metrics(path, apply_fn, variables, test, key),
                "paths": {},
            }
        bar.update()
    for target, name in jobs:
        wanted = conditions if target != "cue_model" else tuple(dict.fromkeys((*conditions, "cue")))
        with phases("paths"):
            result = path_eval.evaluate_path(
                apply_fn,
                paths.linear(references[target], models[name]),
                paths.grid(path.num_points),
                test,
                conditions=wanted,
                **settings,
            )
        summary = result.to_json()
        methods[name]["paths"][target] = {"ts": summary["ts"], "conditions": summary["conditions"]}
        bar.update()
    bar.close()
    for m in methods.values():
        to_cue = m["paths"].get("cue_model")
        m["barrier_to_cue_model"] = (
            to_cue["conditions"]["cue"]["barrier"] if to_cue else {"loss": 0.0, "acc": 0.0}
        )
    return methods


def aggregate(runs: list[dict]) -> dict:
    """Mean over seeds of every number, with standard deviations beside the accuracies."""
    first = runs[0]
    methods = {}
    for name in first["methods"]:
        per_seed = [r["methods"][name] for r in runs]
        mean, std = tables.mean_std(per_seed)
        methods[name] = {
            **mean,
            "test_std": std["test"],
            "barrier_to_cue_model_std": std["barrier_to_cue_model"],
        }
    out = {
        **{
            k: first[k]
            for k in (
                "dataset",
                "model",
                "cue_proportion",
                "n_clean",
                "num_classes",
                "cue_weight_decay",
            )
        },
        "seeds": [s for r in runs for s in r["seeds"]],
        "seconds_per_seed": [r["seconds"] for r in runs],
        "methods": methods,
    }
    if "n_clean_probes" in first:
        out["n_clean_probes"] = first["n_clean_probes"]
    timed = [r["timings"] for r in runs if "timings" in r]
    if timed:  # summed over the seeds
        out["timings"] = {
            phase: {
                k: round(sum(t.get(phase, {}).get(k, 0.0) for t in timed), 1)
                for k in ("seconds", "compile_seconds")
            }
            for phase in dict.fromkeys(p for t in timed for p in t)
        }
    out["diagnosis"] = diagnose(out)
    return out


def diagnose(results: dict) -> dict:
    """:func:`mmc_jax.training.diagnosis.diagnose` of a run's (or the seeds' mean) results."""
    return diagnosis.diagnose(
        results["methods"],
        results["cue_proportion"],
        results["cue_weight_decay"],
        results["num_classes"],
        results["n_clean"],
        prefix="cue_model.",
    )


def write_outputs(results: dict, workdir: pathlib.Path) -> None:
    """One ``paths_to_<target>.png`` per path target, then ``results.md`` (also printed) and
    ``results.json`` in ``workdir``."""
    with tensorboard.open_log(workdir) as log:
        log.tree(
            0,
            {
                name: {"test": m["test"], "barrier_to_cue_model": m.get("barrier_to_cue_model", {})}
                for name, m in results["methods"].items()
            },
        )
        for target in methods_lib.TARGETS:
            curves = {
                name: m["paths"][target]
                for name, m in results["methods"].items()
                if target in m.get("paths", {})
            }
            for name, curve in curves.items():
                tensorboard.path_curves(log, f"{name} to {target}", curve)
            if curves:
                tensorboard.save_figure(
                    log,
                    workdir / f"paths_to_{target}.png",
                    plots.method_paths(curves, LABELS[target]),
                )
    outputs.publish(workdir, results, results_table(results))


def results_table(results: dict) -> str:
    """Markdown: a table like the paper's Table 1 (plus the loss barrier to θ_C), then the
    barriers on the line from each reference model, per condition."""
    methods = results["methods"]
    seeds = results["seeds"]
    several = len(seeds) > 1
    rows = {name: m["test"] for name, m in methods.items()}
    std = {name: m["test_std"] for name, m in methods.items() if "test_std" in m}
    extra = {}
    for name, m in methods.items():
        cell = f"{m['barrier_to_cue_model']['loss']:.2f}"
        if several:
            cell += f" ± {m['barrier_to_cue_model_std']['loss']:.2f}"
        extra[name] = {"loss barrier to θ_C": cell}
    seed_text = (
        f"seed {seeds[0]}"
        if not several
        else (f"mean ± std over seeds {', '.join(map(str, seeds))}")
    )
    out = (
        f"# {results['model']} on {results['dataset']}, θ_C at p = "
        f"{results['cue_proportion']}, {results['n_clean']} clean samples, {seed_text}\n\n"
        + tables.conditions_table(rows, extra, std if several else None)
        + "\nNC ↑ higher is better; C ~ and RC ~ should match NC (cue ignored); RI ↓ "
        "chance is ideal. Barrier: linear path from θ_C, cued test data.\n"
    )
    for target in methods_lib.TARGETS:
        curves = {
            name: m["paths"][target] for name, m in methods.items() if target in m.get("paths", {})
        }
        if curves:
            out += "\n" + barrier_table(curves, LABELS[target])
    if "calibration" in results:
        out += "\n" + calibration.markdown(results["calibration"])
    if "n_clean_probes" in results:
        out += "\n" + n_clean_table(results["n_clean_probes"])
    if "diagnosis" in results:
        out += "\n" + diagnosis.markdown(results["diagnosis"])
    if "timings" in results:
        total = f"\n\n{results['seconds']:.0f} s in all.\n" if "seconds" in results else "\n"
        out += "\n## Where the time went\n\n" + timing.markdown(results["timings"]) + total
    return out


def n_clean_table(probes: list[dict]) -> str:
    """``n_clean = "auto"``'s probes as a results.md section."""
    lines = [
        "| n_clean | θ_C randimg | after small-LR naive FT | drop | keeps the cue |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['n_clean']} | {p['randimg_before']:.1f} | {p['randimg_after']:.1f} | "
        f"{p['randimg_drop']:.1f} | {'yes' if p['keeps_cue'] else 'no'} |"
        for p in probes
    ]
    return files.markdown_section("Clean set size (n_clean = auto)", lines) + (
        f"\nThe largest size whose randimg drops by at most "
        f"{diagnosis.MAX_RANDIMG_DROP:g} points is used.\n"
    )


def barrier_table(curves: dict, start: str) -> str:
    """Loss barrier (accuracy barrier in points) on the line from ``start`` to each model,
    one column per condition."""
    conditions = [c for c in data.CONDITIONS if any(c in m["conditions"] for m in curves.values())]
    lines = [
        "| model | " + " | ".join(tables.HEADERS[c] for c in conditions) + " |",
        "|---|" + "---|" * len(conditions),
    ]
    for name, m in curves.items():
        cells = [
            f"{m['conditions'][c]['barrier']['loss']:.2f} "
            f"({100 * m['conditions'][c]['barrier']['acc']:.1f})"
            if c in m["conditions"]
            else ""
            for c in conditions
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return files.markdown_section(f"Barriers on the line from {start}", lines) + (
        "\nLoss barrier (accuracy barrier in points) on the "
        f"straight line from {start} (t = 0) to each model (t = 1).\n"
    )


def main(args, checked=None):
    del checked
    run(args.config, args.workdir)


ENTRY = cli.Entry("cbft", main, cli.config_path(__file__, "cbft"), "workdirs/cbft", check=check)

if __name__ == "__main__":
    cli.run(ENTRY)
