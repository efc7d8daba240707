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
from absl import logging

from experiments import cbft_job, cbft_report, cli, comparison
from experiments import methods as methods_lib
from mmc_jax import finetune, jobs, models, training
from mmc_jax.runtime.errors import InputError, check_bounds, require


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
    check_bounds(config.data, "data.", count=("n_cue",), fraction=("cued_proportion",))
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
                stored[name], cbft_job.data_config(config), f"{name} ({folders[name]})", "θ_C"
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


def prepare(config, workdir: pathlib.Path) -> jobs.Job:
    """Checks ``config`` against the data, θ_C's model and a run already in ``workdir``
    (one-line errors before any work), and returns the job's units
    (:mod:`experiments.cbft_job`)."""
    seeds = seeds_of(config)
    check_sections(config)
    cue_data = cbft_job.data_config(config)
    train, _ = training.load_data(cue_data)
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
    job = cbft_job.job(config, workdir, seeds)
    for seed in seeds:
        if job.units[f"seed_{seed}"].record():
            logging.info(f"seed {seed}: finished earlier with this config; reusing its results")
    return job


def finish(config, workdir: pathlib.Path, job, records: dict, execution) -> dict:
    """The aggregate over the seeds of a finished job (``records``: its units' records by
    name), written to ``workdir``; returns it."""
    seeds = seeds_of(config)
    results = cbft_report.aggregate([records[f"seed_{s}"]["result"] for s in seeds])
    if "calibration" in records:
        calibrated = records["calibration"]["result"]
        results["calibration"] = {k: v for k, v in calibrated.items() if k != "warnings"}
    results["execution"] = jobs.executors.summary(job, records, execution)
    return results


def run(config, workdir: str, execution: jobs.Execution | None = None) -> dict:
    """Every seed of the sweep as a job of units (:mod:`experiments.cbft_job`) on
    ``execution``'s executor (default: ``inline``), then the aggregate; returns the
    aggregated results."""
    start = time.perf_counter()
    workdir = pathlib.Path(workdir).resolve()
    job = prepare(config, workdir)
    execution = (execution or jobs.Execution(executor="inline")).resolved()
    records = jobs.execute(job, execution)
    results = finish(config, workdir, job, records, execution)
    results["seconds"] = round(time.perf_counter() - start, 1)
    cbft_report.write_outputs(results, workdir)
    cli.warn(results["diagnosis"]["warnings"])
    return results


def main(args, checked=None):
    del checked
    run(args.config, args.workdir, cli.execution(args))


ENTRY = cli.Entry(
    "cbft", main, cli.config_path(__file__, "cbft"), "workdirs/cbft", check=check, runs_units=True
)

if __name__ == "__main__":
    cli.run(ENTRY)
