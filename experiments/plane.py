"""Loss and accuracy over the 2-D plane through three trained models, per condition.

    python -m experiments.plane --models=[NAME=]DIR,[NAME=]DIR,[NAME=]DIR [--config=...]
        [--workdir=DIR]
    python -m experiments.plane --curve=CONNECTIVITY_WORKDIR    # a quadratic path's plane

The first model is the origin, the second lies on the x-axis (``mmc_jax.analysis.plane``). A
``num_points``×``num_points`` grid covering the three models is evaluated in one compiled
call. Writes ``results.json``, ``results.md`` and ``plane_loss.png`` / ``plane_acc.png``
(contours with the models marked); a rerun with the same models and config reuses them.
With ``--curve``, the models are the endpoints of a quadratic path fitted by
``experiments.connectivity --path=quadratic`` and its control point, and the curve is drawn
in.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections
from absl import flags, logging

from experiments import cli, comparison, outputs
from mmc_jax import InputError
from mmc_jax.analysis import plane
from mmc_jax.reporting import plots, tensorboard
from mmc_jax.runtime.errors import check_bounds, require


def define(flag_values) -> None:
    """``--models`` or ``--curve``."""
    flags.DEFINE_list(
        "models",
        None,
        "Three comma-separated model folders, each optionally NAME=DIR (origin, x-axis, third).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "curve",
        None,
        "Workdir of experiments.connectivity "
        "--path=quadratic: the plane through its endpoints and control "
        "point, with the curve drawn in (instead of --models).",
        flag_values=flag_values,
    )


def check(args) -> dict[str, str]:
    """The three named model folders (or a quadratic path's), each holding a model of one
    architecture and data; the path section."""
    if args.curve and args.models:
        raise InputError("give either --models or --curve, not both")
    folders = (
        curve_models(args.curve) if args.curve else comparison.parse_models(args.models, at_least=3)
    )
    require(
        [(len(folders) == 3, f"--models needs exactly three model folders, got {len(folders)}")]
    )
    comparison.check_models(folders)
    comparison.check_path(args.config.path)
    return folders


def curve_models(folder: str) -> dict[str, str]:
    """Endpoint A, endpoint B and the control point of a quadratic path's workdir."""
    folder = pathlib.Path(folder).expanduser().resolve()
    summary = (
        json.loads((folder / "results.json").read_text())
        if (folder / "results.json").is_file()
        else {}
    )
    if not summary.get("control"):
        raise InputError(
            f"{folder} holds no quadratic path of experiments.connectivity "
            "(no results.json naming its control point)"
        )
    a, b = (pathlib.Path(summary[k]).name for k in ("model_a", "model_b"))
    a, b = (a, b) if len({a, b, "control"}) == 3 else ("A", "B")
    return {
        a: summary["model_a"],
        b: summary["model_b"],
        "control": str(folder / summary["control"]),
    }


def run(config, folders: dict[str, str], workdir: str, curve: bool = False, shard=None) -> dict:
    """Loads the three models, evaluates the grid, writes the outputs; ``curve``: the third
    model is the control point of a quadratic path between the first two, drawn in. With
    ``shard=(k, n)``: evaluates (and saves) only the k-th of n shares of the parts, for
    :func:`experiments.comparison.run_in_shares`, and returns ``{}``."""
    workdir = pathlib.Path(workdir).resolve()
    path = comparison.check_path(config.path)
    conditions = path.conditions
    check_bounds(config, non_negative=("margin",))
    require(
        [(len(folders) == 3, f"--models needs exactly three model folders, got {len(folders)}")]
    )
    stored = {"config": config.to_dict(), "models": folders, "curve": curve}
    done = outputs.finished(workdir, stored)
    if done:
        return done
    model, loaded, train, test = comparison.load_models(folders, path)
    g = path.num_points
    logging.info(f"{g}×{g} grid + 3 models × {len(conditions)} conditions in one evaluation")
    result = plane.evaluate_plane(
        model.apply,
        loaded,
        test,
        size=g,
        margin=config.margin,
        conditions=conditions,
        **comparison.evaluator_settings(path, train, config.seed, workdir, stored),
        **({"shard": tuple(shard)} if shard else {}),
    )
    if result is None:  # a share of the parts
        return {}
    if curve:
        result.curve = plane.bezier_coords(*result.coords[[0, 2, 1]])
    results = {**stored, **result.to_json()}
    with tensorboard.open_log(workdir) as log:
        log.tree(
            0,
            {
                "at_model": {
                    c: {
                        name: {k: float(result.models[c][k][i]) for k in ("loss", "acc")}
                        for i, name in enumerate(result.names)
                    }
                    for c in conditions
                }
            },
        )
        for metric in ("loss", "acc"):
            tensorboard.save_figure(
                log, workdir / f"plane_{metric}.png", plots.plane_contours(result, metric)
            )
    lines = [
        f"# Plane through {', '.join(result.names)} ({g}×{g} grid)\n",
        "| condition | "
        + " | ".join(f"{n} loss / acc" for n in result.names)
        + " | grid loss min / max |",
        "|---|" + "---|" * (len(result.names) + 1),
    ]
    for c in conditions:
        cells = [
            f"{result.models[c]['loss'][i]:.2f} / {100 * result.models[c]['acc'][i]:.1f}"
            for i in range(3)
        ]
        grid = result.metrics[c]["loss"]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {grid.min():.2f} / {grid.max():.2f} |")
    table = "\n".join(lines) + "\n\nAccuracies in %; the models' coordinates are in results.json.\n"
    outputs.publish(workdir, results, table)
    comparison.remove_parts(workdir)
    return results


def evaluate_share(config: dict, folders: dict, workdir: str, shard: list, curve=False) -> dict:
    """Unit: a share of the saved parts of :func:`run`'s evaluation."""
    return run(ml_collections.ConfigDict(config), folders, workdir, curve=curve, shard=shard)


def main(args, folders: dict[str, str]):
    comparison.run_in_shares(
        "plane",
        run,
        args.config,
        folders,
        args.workdir,
        cli.execution(args),
        curve=bool(args.curve),
    )


ENTRY = cli.Entry(
    "plane",
    main,
    cli.config_path(__file__, "plane"),
    "workdirs/plane",
    define,
    check,
    runs_units=True,
)

if __name__ == "__main__":
    cli.run(ENTRY)
