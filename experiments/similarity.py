"""Mechanistic similarity of N trained models: pairwise linear-path barriers per condition.

    python -m experiments.similarity --models=[NAME=]DIR,[NAME=]DIR,... [--config=...]
        [--workdir=DIR]

Every pair's line is evaluated in one compiled program (``mmc_jax.analysis.similarity``). Writes
``results.json`` (names, per condition the loss- and accuracy-barrier matrices, the
clustering order and clusters), ``results.md`` and ``similarity_loss.png`` (one heatmap per
condition, models ordered by clustering) to the workdir. A rerun with the same models and
config reuses the finished results.
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np
from absl import flags, logging

from experiments import cli, comparison, outputs
from mmc_jax import paths
from mmc_jax.analysis import similarity
from mmc_jax.reporting import plots, tensorboard
from mmc_jax.runtime.errors import check_bounds


def define(flag_values) -> None:
    """``--models``."""
    flags.DEFINE_list(
        "models",
        None,
        "Comma-separated model folders (experiments.train "
        "workdirs or <cbft workdir>/seed_<s>/<method>), each optionally "
        "NAME=DIR.",
        flag_values=flag_values,
    )


def check(args) -> dict[str, str]:
    """The named model folders (each holding a model of one architecture and data); every
    section."""
    folders = comparison.parse_models(args.models)
    comparison.check_models(folders)
    comparison.check_path(args.config.path)
    comparison.check_permutation(args.config.permutation)
    return folders


def run(config, folders: dict[str, str], workdir: str, shard=None) -> dict:
    """Loads the models, evaluates every pair, writes the outputs; returns results.json.
    With ``shard=(k, n)``: evaluates (and saves) only the k-th of n shares of the parts, for
    :func:`experiments.comparison.run_in_shares`, and returns ``{}``."""
    workdir = pathlib.Path(workdir).resolve()
    path = comparison.check_path(config.path)
    conditions = path.conditions
    check_bounds(config, non_negative=("cluster_threshold",))
    permutation = comparison.check_permutation(config.permutation)
    stored = {"config": config.to_dict(), "models": folders}
    done = outputs.finished(workdir, stored)
    if done:
        return done
    model, loaded, train, test = comparison.load_models(folders, path)
    pairs = len(loaded) * (len(loaded) - 1) // 2
    align = None
    if config.permuted:
        first = next(iter(loaded.values()))
        align = comparison.aligner(permutation, path, config.seed, model, first, train)
        logging.info(
            f"aligning the second model of each pair to the first ({permutation.method} matching)"
        )
    logging.info(
        f"{len(loaded)} models, {pairs} lines × {path.num_points} points × "
        f"{len(conditions)} conditions in one evaluation (BN {path.bn})"
    )
    result = similarity.pairwise_barriers(
        model.apply,
        loaded,
        test,
        ts=paths.grid(path.num_points),
        conditions=conditions,
        align=align,
        **comparison.evaluator_settings(path, train, config.seed, workdir, stored),
        **({"shard": tuple(shard)} if shard else {}),
    )
    if result is None:  # a share of the parts
        return {}
    results = {
        **stored,
        **result.to_json(),
        "order": {c: [result.names[i] for i in result.order(c)] for c in conditions},
        "clusters": {
            c: dict(zip(result.names, result.clusters(c, config.cluster_threshold)))
            for c in conditions
        },
    }
    with tensorboard.open_log(workdir) as log:
        n = len(result.names)
        log.tree(
            0,
            {
                f"{metric}_barrier": {
                    c: {
                        f"{result.names[i]} vs {result.names[j]}": float(matrix[c][i, j])
                        for i in range(n)
                        for j in range(i + 1, n)
                    }
                    for c in conditions
                }
                for metric, matrix in (("loss", result.loss), ("acc", result.acc))
            },
        )
        tensorboard.save_figure(
            log, workdir / "similarity_loss.png", plots.barrier_heatmaps(result, "loss")
        )
    kind = f"{permutation.method}-permuted linear" if config.permuted else "linear"
    outputs.publish(workdir, results, markdown(results, config.cluster_threshold, kind))
    comparison.remove_parts(workdir)
    return results


def markdown(results: dict, threshold: float, path: str = "linear") -> str:
    """Per condition: the loss-barrier matrix (models in clustering order) and clusters."""
    names = results["names"]
    out = [
        f"# {path[0].upper() + path[1:]}-path barriers between {len(names)} models, "
        f"BN {results['config']['path']['bn']}\n"
    ]
    for c, matrices in results["conditions"].items():
        order = [names.index(n) for n in results["order"][c]]
        loss = np.asarray(matrices["loss_barrier"])
        out += [
            f"## {c}\n",
            "| | " + " | ".join(names[j] for j in order) + " |",
            "|---|" + "---|" * len(order),
        ]
        out += [
            f"| {names[i]} | " + " | ".join(f"{loss[i, j]:.2f}" for j in order) + " |"
            for i in order
        ]
        groups: dict[int, list[str]] = {}
        for name, label in results["clusters"][c].items():
            groups.setdefault(label, []).append(name)
        out += [
            "",
            f"Clusters (average loss barrier ≤ {threshold:g}): "
            + "; ".join("{" + ", ".join(g) + "}" for g in groups.values()),
            "",
        ]
    out.append(f"Loss barrier of the {path} path between the row and column models.")
    return "\n".join(out) + "\n"


def evaluate_share(config: dict, folders: dict, workdir: str, shard: list) -> dict:
    """Unit: a share of the saved parts of :func:`run`'s evaluation."""
    return run(ml_collections.ConfigDict(config), folders, workdir, shard=shard)


def main(args, folders: dict[str, str]):
    comparison.run_in_shares(
        "similarity", run, args.config, folders, args.workdir, cli.execution(args)
    )


ENTRY = cli.Entry(
    "similarity",
    main,
    cli.config_path(__file__, "similarity"),
    "workdirs/similarity",
    define,
    check,
    runs_units=True,
)

if __name__ == "__main__":
    cli.run(ENTRY)
