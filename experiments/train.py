"""Train a model on (partly) cued data and evaluate it on the four counterfactual sets.

    python -m experiments.train [--config=experiments/configs/demo.py] [--workdir=DIR]

Rerunning the same command resumes from the latest checkpoint in the workdir. Writes
``results.json``, ``results.md`` and ``curves.png`` there. With a cue, the results say
whether the model relies on it (:mod:`mmc_jax.training.diagnosis`);
``--config.data.cue_proportion=auto`` first searches the smallest proportion that makes it do so
(:mod:`mmc_jax.training.calibration`, trials in ``DIR/calibration``).
"""

from __future__ import annotations

import pathlib

from absl import logging

from experiments import cli, comparison, outputs
from mmc_jax import training
from mmc_jax.reporting import plots, tables, tensorboard
from mmc_jax.training import calibration, diagnosis


def write_outputs(workdir: pathlib.Path, result: dict, history: list) -> str:
    """curves.png, then results.md (also printed and returned) and results.json."""
    name = f"{result['model']} on {result['dataset']}, p = {result['cue_proportion']}"
    table = (
        f"# {name}\n\n{result['epochs']} epochs, {result['seconds']:.0f} s of training\n\n"
        + tables.conditions_table({result["model"]: result["test"]})
    )
    if "calibration" in result:
        table += "\n" + calibration.markdown(result["calibration"])
    if "diagnosis" in result:
        table += "\n" + diagnosis.markdown(result["diagnosis"])
    with tensorboard.open_log(workdir) as log:
        log.tree(result["epochs"], {"test": result["test"]})
        tensorboard.save_figure(log, workdir / "curves.png", plots.training_curves(history, name))
    return outputs.publish(workdir, {**result, "history": history}, table)


def check(args) -> training.TrainConfig:
    """The typed config (every field checked); a run already in the workdir must have the
    same config (with ``auto``, the calibration decides which proportion it holds)."""
    config = training.TrainConfig.of(args.config)
    if config.model.init_from:
        source = comparison.check_model_folder("model.init_from", config.model.init_from)
        training.check_compatible(
            source, config, f"model.init_from ({config.model.init_from})", "this run's model"
        )
    workdir = pathlib.Path(args.workdir).expanduser().resolve()
    auto = config.data.cue_proportion == training.AUTO
    if (workdir / "config.json").is_file() and not args.restart and not auto:
        training.check_config(workdir, config.to_dict())
    return config


def train(config: training.TrainConfig, workdir: pathlib.Path) -> tuple[dict, list[str]]:
    """Trains and evaluates one model in ``workdir`` (its calibration first, for an ``auto``
    cue proportion) and writes its results; returns them and the warnings about them."""
    datasets = training.load_data(config)
    calibrated = None
    if config.data.cue_proportion == training.AUTO:
        calibrated = calibration.calibrate(config, workdir / "calibration", datasets=datasets)
        config = config.changed(data={"cue_proportion": calibrated["cue_proportion"]})
        logging.info(f"cue proportion: p = {config.data.cue_proportion:g}")
        calibration.reuse(calibrated, config, workdir, workdir / "calibration")
    out = training.train_and_evaluate(config, str(workdir), datasets=datasets)
    result = out["result"]
    if calibrated:
        result["calibration"] = calibrated
    write_outputs(workdir, result, out["history"])
    warnings = [calibration.warning(calibrated, config.optim.weight_decay)] if calibrated else []
    return result, [w for w in warnings + result.get("diagnosis", {}).get("warnings", []) if w]


def train_unit(config: dict, workdir: str) -> dict:
    """Unit of a sweep (:mod:`experiments.sweep`): :func:`train` in ``workdir``; its result is
    the model's test metrics, its warnings shown by the sweep's driver."""
    result, warnings = train(training.TrainConfig.of(config), pathlib.Path(workdir))
    return {"test": result["test"], "warnings": warnings}


def main(args, config: training.TrainConfig):
    _, warnings = train(config, pathlib.Path(args.workdir).resolve())
    cli.warn(warnings)


ENTRY = cli.Entry("train", main, cli.config_path(__file__, "demo"), "workdirs/train", check=check)

if __name__ == "__main__":
    cli.run(ENTRY)
