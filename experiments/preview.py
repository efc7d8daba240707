"""Renders a dataset under the four counterfactual conditions and summarises its cue.

    python -m experiments.preview [--config=experiments/configs/preview.py] [--workdir=DIR]

Writes ``counterfactuals.png``, ``results.json`` and ``results.md`` to the workdir.
"""

from __future__ import annotations

import pathlib
import time

import jax
import numpy as np
from absl import logging

from experiments import cli, outputs
from mmc_jax import data, training
from mmc_jax.reporting import plots, tensorboard


def preview(config, workdir: str) -> dict:
    """Loads both splits, draws the condition grid and returns the dataset summary."""
    workdir = pathlib.Path(workdir)
    settings = training.DataConfig(**config.data)
    start = time.perf_counter()
    train, test = training.load_data(settings)
    load_seconds = time.perf_counter() - start
    mask = data.cue_mask(train.labels, settings.cue_proportion)

    # One test sample per class (as far as there are classes), in class order.
    first = [
        int(np.flatnonzero(test.labels == c)[0])
        for c in range(test.num_classes)
        if (test.labels == c).any()
    ]
    index = np.asarray(first[: config.num_samples])
    images = data.normalize(np.asarray(test.images[index]))
    labels = np.asarray(test.labels[index])
    key = jax.random.key(config.seed)
    rows = {
        c: np.asarray(data.counterfactual(train.cue, c, images, labels, key))
        for c in data.CONDITIONS
    }
    fig = plots.condition_grid(
        rows,
        labels.tolist(),
        test.class_names,
        title=f"{train.name}: the four counterfactual conditions",
    )
    with tensorboard.open_log(workdir) as log:
        tensorboard.save_figure(log, workdir / "counterfactuals.png", fig)

    summary = {
        "dataset": train.name,
        "image_shape": list(train.image_shape),
        "num_classes": train.num_classes,
        "train_size": len(train),
        "test_size": len(test),
        "cue": type(train.cue).__name__,
        "cue_proportion": settings.cue_proportion,
        "cued_train_samples": int(mask.sum()),
        "load_seconds": round(load_seconds, 2),
    }
    table = "| field | value |\n|---|---|\n" + "".join(
        f"| {k} | {v} |\n" for k, v in summary.items()
    )
    outputs.publish(workdir, summary, table)
    logging.info(f"wrote {workdir / 'counterfactuals.png'}")
    return summary


def check(args) -> None:
    """The data section as the training config's."""
    training.DataConfig(**args.config.data)


def main(args, checked=None):
    del checked
    preview(args.config, args.workdir)


ENTRY = cli.Entry(
    "preview", main, cli.config_path(__file__, "preview"), "workdirs/preview", check=check
)

if __name__ == "__main__":
    cli.run(ENTRY)
