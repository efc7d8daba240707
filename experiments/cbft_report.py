"""The reports of ``experiments.cbft``: a seed's results from its units' results, the
aggregate over seeds, and the tables and figures written from them."""

from __future__ import annotations

import pathlib

from experiments import methods as methods_lib
from experiments import outputs
from mmc_jax import data
from mmc_jax.reporting import files, plots, tables, tensorboard, timing
from mmc_jax.training import calibration, diagnosis

#: How the reference models are named in reports and plots.
LABELS = {"cue_model": "θ_C", "nocue_model": "θ_NC"}


def seed_results(
    config,
    seed: int,
    cue_config,
    datasets,
    methods: dict,
    records: dict,
    stored: dict,
    workdir: pathlib.Path,
) -> dict:
    """One seed's results (``methods``: model name → evaluation; ``records``: the seed's
    units' results, by name without the seed prefix), written to ``workdir``."""
    train, _ = datasets
    results = {
        "dataset": train.name,
        "model": cue_config.model.name,
        "cue_proportion": cue_config.data.cue_proportion,
        "n_clean": config.data.n_clean,
        "num_classes": train.num_classes,
        "cue_weight_decay": cue_config.optim.weight_decay,
        "seeds": [seed],
        "seconds": round(sum(r.get("seconds", 0.0) for r in records.values()), 1),
        "methods": methods,
        "timings": summed_timings([r["timings"] for r in records.values() if "timings" in r]),
        "config": stored,
    }
    if "n_clean" in records:
        results["n_clean_probes"] = records["n_clean"]["probes"]
    results["diagnosis"] = diagnose(results)
    write_outputs(results, workdir)
    return results


def summed_timings(timings: list[dict]) -> dict:
    """Phase timings (:meth:`mmc_jax.reporting.timing.Phases.to_json`) summed phase by phase."""
    return {
        phase: {
            k: round(sum(t.get(phase, {}).get(k, 0.0) for t in timings), 1)
            for k in ("seconds", "compile_seconds")
        }
        for phase in dict.fromkeys(p for t in timings for p in t)
    }


#: The sections of a method's results that get confidence intervals over seeds.
INTERVALS = ("test", "barrier_to_cue_model", "worst_group")


def aggregate(runs: list[dict]) -> dict:
    """Mean over seeds of every number, with standard deviations beside the accuracies."""
    first = runs[0]
    methods = {}
    for name in first["methods"]:
        per_seed = [r["methods"][name] for r in runs]
        mean, std = tables.mean_std(per_seed)
        ci = tables.ci_half_widths(per_seed)
        methods[name] = {
            **mean,
            "test_std": std["test"],
            "barrier_to_cue_model_std": std["barrier_to_cue_model"],
            **{f"{k}_ci": ci[k] for k in INTERVALS if k in ci},
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
        "interval": tables.CI_NOTE,
    }
    if "n_clean_probes" in first:
        out["n_clean_probes"] = first["n_clean_probes"]
    timed = [r["timings"] for r in runs if "timings" in r]
    if timed:  # summed over the seeds
        out["timings"] = summed_timings(timed)
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


def write_outputs(results: dict, workdir: pathlib.Path, show: bool = True) -> None:
    """One ``paths_to_<target>.png`` per path target and ``methods.png`` (bars per method and
    condition), then ``results.md`` (also printed, with
    ``show``) and ``results.json`` in ``workdir``."""
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
        tensorboard.save_figure(log, workdir / "methods.png", methods_figure(results))
    outputs.publish(workdir, results, results_table(results), show)


def methods_figure(results: dict):
    """Test accuracy per condition and the worst (class, cue) group: a bar per method, the
    95 % interval over seeds as whiskers (none for one seed)."""
    methods = results["methods"]
    panels = {}
    for condition in data.CONDITIONS:
        if all(condition in m["test"] for m in methods.values()):
            panels[tables.HEADERS[condition]] = {
                name: (
                    100 * m["test"][condition]["acc"],
                    100 * ((m.get("test_ci") or {}).get(condition, {}).get("acc") or 0.0),
                )
                for name, m in methods.items()
            }
    worst = {
        name: (
            100 * m["worst_group"]["class_cue"],
            100 * ((m.get("worst_group_ci") or {}).get("class_cue") or 0.0),
        )
        for name, m in methods.items()
        if m.get("worst_group", {}).get("class_cue") is not None
    }
    if worst:
        panels["worst group ↑"] = worst
    seeds = results["seeds"]
    interval = "95 % CI over seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    return plots.method_bars(
        panels, f"{results['model']} on {results['dataset']}: test accuracy ({interval})"
    )


def results_table(results: dict) -> str:
    """Markdown: a table like the paper's Table 1 (plus the loss barrier to θ_C), then the
    barriers on the line from each reference model, per condition."""
    methods = results["methods"]
    seeds = results["seeds"]
    several = len(seeds) > 1
    rows = {name: m["test"] for name, m in methods.items()}
    # Several seeds: mean ± the 95 % interval's half-width (older results: ± std).
    spread = "ci" if any("test_ci" in m for m in methods.values()) else "std"
    std = {name: m[f"test_{spread}"] for name, m in methods.items() if f"test_{spread}" in m}
    extra = {}
    for name, m in methods.items():
        cell = f"{m['barrier_to_cue_model']['loss']:.2f}"
        if several:
            cell += f" ± {m[f'barrier_to_cue_model_{spread}']['loss']:.2f}"
        extra[name] = {"loss barrier to θ_C": cell}
        worst = m.get("worst_group", {}).get("class_cue")
        if worst is not None:
            half = (m.get("worst_group_ci") or {}).get("class_cue") if several else None
            extra[name]["worst group ↑"] = f"{100 * worst:.1f}" + (
                f" ± {100 * half:.1f}" if half is not None else ""
            )
    seed_text = (
        f"seed {seeds[0]}"
        if not several
        else (
            f"seeds {', '.join(map(str, seeds))}, mean ± "
            + ("95 % CI" if spread == "ci" else "std")
        )
    )
    out = (
        f"# {results['model']} on {results['dataset']}, θ_C at p = "
        f"{results['cue_proportion']}, {results['n_clean']} clean samples, {seed_text}\n\n"
        + tables.conditions_table(rows, extra, std if several else None)
        + "\nNC ↑ higher is better; C ~ and RC ~ should match NC (cue ignored); RI ↓ "
        "chance is ideal. Barrier: linear path from θ_C, cued test data. Worst group: the "
        "least accurate (class, cue present or absent) group of the NC and C test sets.\n"
        + (f"Intervals: {tables.CI_NOTE}.\n" if several and spread == "ci" else "")
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
        if "execution" in results:
            out += execution_line(results["execution"])
    return out


def execution_line(execution: dict) -> str:
    """A sentence on how the job's units ran (:func:`mmc_jax.jobs.executors.summary`)."""
    return (
        f"{execution['units']} units, executor {execution['executor']} "
        f"({execution['workers']} worker{'s' if execution['workers'] > 1 else ''}): their run "
        f"times sum to {execution['unit_seconds']:.0f} s, {execution['critical_path_seconds']:.0f}"
        f" s along the longest chain of the job's graph (ideal wall time "
        f"{execution['ideal_seconds']:.0f} s).\n"
    )


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
