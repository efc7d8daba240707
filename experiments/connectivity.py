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

import dataclasses
import pathlib

import jax
from absl import flags, logging

from experiments import cli, comparison, outputs, sections
from mmc_jax import paths, training
from mmc_jax.connectivity import curve, path_eval
from mmc_jax.reporting import plots, tensorboard


def define(flag_values) -> None:
    """``--model_a``, ``--model_b`` and ``--path``."""
    flags.DEFINE_string(
        "model_a",
        None,
        "Folder of the t = 0 model (an experiments.train "
        "workdir or a model folder of experiments.cbft).",
        flag_values=flag_values,
    )
    flags.DEFINE_string("model_b", None, "Folder of the t = 1 model.", flag_values=flag_values)
    flags.DEFINE_enum(
        "path",
        "linear",
        ["linear", "permuted_linear", "quadratic"],
        "Path family.",
        flag_values=flag_values,
    )


def check(args) -> None:
    """Both model folders hold models of one architecture and data; every section."""
    comparison.check_pair(args.model_a, args.model_b)
    check_sections(args.config)


@dataclasses.dataclass(frozen=True)
class Sections:
    """The config's sections, typed: how the path is evaluated, how ``b`` is aligned to
    ``a`` (``permuted_linear``), how the curve's control point is fitted (``quadratic``),
    and the seed."""

    path: sections.PathConfig
    permutation: sections.PermutationConfig
    curve: curve.CurveConfig
    seed: int


def check_sections(config) -> Sections:
    """The typed sections of ``config`` (the one place they are read from it).

    Raises:
      InputError: an impossible value of any section, named.
    """
    return Sections(
        comparison.check_path(config.path),
        comparison.check_permutation(config.permutation),
        curve.CurveConfig.of(config.curve),
        config.seed,
    )


def build_path(typed: Sections, kind: str, model, a, b, train, workdir: pathlib.Path):
    """The path of ``kind`` between ``a`` and ``b`` (aligning or fitting as needed)."""
    if kind == "linear":
        return paths.linear(a, b)
    if kind == "permuted_linear":
        align = comparison.aligner(typed.permutation, typed.path, typed.seed, model, b, train)
        return paths.linear(a, align(a, b))
    settings, seed = typed.curve, typed.seed
    control = curve.initial_control(settings, model, a, b, train.image_shape, seed)
    fitted = curve.fit_curve(
        model.apply,
        a,
        b,
        control,
        train,
        workdir / "midpoint",  # the name it had when stored runs were made: they resume
        settings,
        seed=seed,
    )
    return paths.bezier(a, fitted["control"], b)


def connectivity(config, model_a: str, model_b: str, kind: str, workdir: str) -> dict:
    """Evaluates the path and writes the outputs; returns the results.json dict."""
    workdir = pathlib.Path(workdir).resolve()
    typed = check_sections(config)
    model, loaded, train, eval_set = comparison.load_models(
        {"--model_a": model_a, "--model_b": model_b}, typed.path
    )
    a, b = loaded.values()
    path = build_path(typed, kind, model, a, b, train, workdir)
    control = None
    if kind == "quadratic":  # a model folder, e.g. for experiments.plane --curve
        training.save_model(
            workdir / "control",
            training.model_config(model_a),
            jax.tree.map(lambda x: x[1], path.points),
            train.num_classes,
            train.image_shape,
        )
        control = "control"  # relative to the workdir, which may move
    settings = comparison.evaluator_settings(typed.path, train, typed.seed)
    conditions = typed.path.conditions
    logging.info(
        f"evaluating {typed.path.num_points} points x {len(conditions)} conditions "
        f"({path_eval.resolve_strategy(settings['strategy'])}, BN {settings['bn']})"
    )
    result = path_eval.evaluate_path(
        model.apply,
        path,
        paths.grid(typed.path.num_points),
        eval_set,
        conditions=conditions,
        **settings,
    )
    permuted = kind == "permuted_linear"
    summary = {
        **result.to_json(kind),
        "model_a": str(model_a),
        "model_b": str(model_b),
        "bn": typed.path.bn,
        "permutation": typed.permutation.method if permuted else None,
        "permute_residual": typed.permutation.permute_residual if permuted else None,
        "orthogonal": typed.permutation.orthogonal if permuted else None,
        "control": control,
        "chunk_size": result.chunk_size,
        "memory_gib": None
        if result.memory_bytes is None
        else round(result.memory_bytes / 2**30, 3),
    }
    outputs.publish(workdir, summary, plots_and_table(summary, workdir))
    return summary


def plots_and_table(summary: dict, workdir: pathlib.Path) -> str:
    """paths.png (written) and the markdown table of barriers (returned)."""
    title = f"{summary['path']} path: {summary['model_a']} (t=0) → {summary['model_b']} (t=1)"
    with tensorboard.open_log(workdir) as log:
        tensorboard.path_curves(log, summary["path"], summary)
        tensorboard.save_figure(log, workdir / "paths.png", plots.path_curves(summary, title))
    lines = [
        f"# {summary['path']} path, BN {summary['bn']}\n",
        "| condition | acc at t=0 | min acc | acc at t=1 | acc barrier | loss barrier |",
        "|---|---|---|---|---|---|",
    ]
    for c, m in summary["conditions"].items():
        lines.append(
            f"| {c} | {100 * m['acc'][0]:.1f} | {100 * min(m['acc']):.1f} | "
            f"{100 * m['acc'][-1]:.1f} | {100 * m['barrier']['acc']:.1f} | "
            f"{m['barrier']['loss']:.3f} |"
        )
    return "\n".join(lines) + "\n\nAccuracies in %.\n"


def main(args, checked=None):
    del checked
    connectivity(args.config, args.model_a, args.model_b, args.path, args.workdir)


ENTRY = cli.Entry(
    "connectivity",
    main,
    cli.config_path(__file__, "connectivity"),
    "workdirs/connectivity",
    define,
    check,
)

if __name__ == "__main__":
    cli.run(ENTRY)
