"""A grid over fields of an entry point's config: every grid point a job, all their units on
one executor, the results aggregated over seeds.

    python -m experiments.sweep [--config=experiments/configs/sweep.py[:cbft|train]]
        [--config.grid="cue_model.data.cue_proportion=0.6,0.87,0.95 seed=0,1,2"]
        [--config.base.<field>=...] [--config.executor=auto|inline|processes|ray] [--workdir=DIR]

``config.base`` is the swept entry point's config (``config.entry``: ``cbft`` or ``train``);
``config.grid`` names fields of it (dotted, as after ``--config.``) and the values each takes,
``field=v1,v2,...`` separated by spaces; ``seed=...`` sets the seeds (cbft's ``seeds``,
train's ``seed``). Each combination of the other fields is a point with its own workdir,
``DIR/<field>=<value>,...``, which is an ordinary workdir of the entry point (it resumes, and
its models load in ``experiments.connectivity``). ``DIR`` gets ``results.json`` and
``results.md`` (per point and method, mean ± 95 % confidence interval over seeds) and
``sweep.png`` (``config.plot.metrics`` against ``config.plot.x``, one line per method, CI
bands). Rerunning resumes; adding values to the grid runs only the new points.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import itertools
import pathlib
import time

import ml_collections
from absl import logging

from experiments import cbft, cbft_report, cli, fields, outputs
from mmc_jax import jobs, training
from mmc_jax.jobs import units as units_lib
from mmc_jax.reporting import plots, tables, tensorboard
from mmc_jax.runtime.errors import InputError

#: The grid's field for the seeds.
SEED = "seed"
#: The entry points a sweep runs.
ENTRIES = ("cbft", "train")
#: Metrics of the table and figure: the four conditions' test accuracy (%), and cbft's loss
#: barrier on the line from θ_C.
METRICS = {
    "nocue": "NC ↑",
    "cue": "C ~",
    "randcue": "RC ~",
    "randimg": "RI ↓",
    "barrier": "loss barrier to θ_C",
}


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of the grid: the swept fields' values, its config, seeds and workdir."""

    name: str
    values: dict
    config: ml_collections.ConfigDict
    seeds: tuple
    workdir: pathlib.Path


def parse_grid(text: str) -> dict[str, tuple]:
    """``"a.b=1,2 c=x"`` → ``{"a.b": (1, 2), "c": ("x",)}`` (values as Python literals,
    else strings), else InputError."""
    grid = {}
    for item in str(text).replace(";", " ").split():
        name, eq, values = item.partition("=")
        if not (eq and name and values):
            raise InputError(
                f"grid: {item!r} is not field=value,value,... (e.g. "
                "cue_model.data.cue_proportion=0.6,0.87 seed=0,1,2)"
            )
        if name in grid:
            raise InputError(f"grid: field {name!r} appears twice")
        parsed = tuple(_literal(v) for v in values.split(","))
        if len(set(map(repr, parsed))) != len(parsed):
            raise InputError(f"grid: {name} repeats a value: {values}")
        grid[name] = parsed
    if not grid:
        raise InputError("grid is empty: give field=value,value,... (e.g. seed=0,1,2)")
    seeds = grid.get(SEED, ())
    if not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise InputError(f"grid: seeds must be non-negative integers, got {seeds}")
    return grid


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _with(config, name: str, value):
    """A copy of ``config`` with the dotted field ``name`` set to ``value``."""
    out = copy.deepcopy(config)
    parent, parts = out, name.split(".")
    known = fields.leaves(config)
    if name not in known:
        raise InputError(
            f"grid: the swept config has no field {name!r} (fields are named as after "
            "--config.base., e.g. cue_model.data.cue_proportion)"
        )
    for part in parts[:-1]:
        parent = parent[part]
    try:
        parent[parts[-1]] = value
    except TypeError:
        raise InputError(
            f"grid: {name} = {value!r} has the wrong type (the field holds {known[name]!r})"
        ) from None
    return out


def points(config, workdir: pathlib.Path) -> list[Point]:
    """The grid's points (every field's values checked by the config's rules)."""
    grid = parse_grid(config.grid)
    swept = [f for f in grid if f != SEED]
    short = {f: f.rpartition(".")[2] for f in swept}
    if len(set(short.values())) < len(swept):
        short = {f: f for f in swept}
    base = config.base
    default_seeds = cbft.seeds_of(base) if config.entry == "cbft" else (base.seed,)
    seeds = tuple(grid.get(SEED, default_seeds))
    out = []
    for combo in itertools.product(*(grid[f] for f in swept)):
        values = dict(zip(swept, combo))
        point = copy.deepcopy(base)
        for name, value in values.items():
            point = _with(point, name, value)
        fields.check_config(point)
        name = ",".join(f"{short[f]}={v}" for f, v in values.items()) or "base"
        out.append(Point(name, values, point, seeds, workdir / name.replace("/", "_")))
    return out


def _job(config, point: Point) -> list[units_lib.Unit]:
    """The units of one point, named ``<point>/...``."""
    if config.entry == "cbft":
        point.config.seeds = point.seeds
        job = cbft.prepare(point.config, point.workdir)
        return units_lib.prefixed(list(job), f"{point.name}/")
    out = []
    for seed in point.seeds:
        run = _with(point.config, "seed", seed)
        folder = point.workdir / f"seed_{seed}"
        training.TrainConfig.of(run)  # checked before any work
        out.append(
            jobs.Unit(
                f"{point.name}/seed_{seed}",
                "experiments.train:train_unit",
                str(folder),
                {"config": run.to_dict(), "workdir": str(folder)},
            )
        )
    return out


def rows_of(config, point: Point, records: dict) -> dict:
    """Per seed, row (method or model) → metric → value, from a finished point."""
    per_seed = []
    for seed in point.seeds:
        if config.entry == "cbft":
            result = records[f"{point.name}/seed_{seed}"]["result"]
            per_seed.append(
                {
                    method: {
                        **{c: 100 * m["test"][c]["acc"] for c in m["test"]},
                        "barrier": m["barrier_to_cue_model"]["loss"],
                    }
                    for method, m in result["methods"].items()
                }
            )
        else:
            test = records[f"{point.name}/seed_{seed}"]["result"]["test"]
            per_seed.append({"model": {c: 100 * v["acc"] for c, v in test.items()}})
    return per_seed


def aggregate(config, grid_points: list[Point], records: dict) -> list[dict]:
    """Per point: its values, seeds and row → metric → ``{"mean", "ci95", "n"}``."""
    out = []
    for point in grid_points:
        per_seed = rows_of(config, point, records)
        rows = {}
        for row in per_seed[0]:
            rows[row] = {}
            for metric in per_seed[0][row]:
                mean, half = tables.mean_ci([s[row][metric] for s in per_seed])
                rows[row][metric] = {"mean": mean, "ci95": half, "n": len(per_seed)}
        out.append(
            {
                "name": point.name,
                "values": point.values,
                "seeds": list(point.seeds),
                "workdir": str(point.workdir),
                "rows": rows,
            }
        )
    return out


def results_table(results: dict) -> str:
    """Markdown: one line per point and method, mean ± 95 % CI of every metric."""
    swept = list(results["grid"])
    swept = [f for f in swept if f != SEED]
    metrics = [
        m for m in METRICS if any(m in r for p in results["points"] for r in p["rows"].values())
    ]
    head = [*(f.rpartition(".")[2] for f in swept), "", *(METRICS[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point in results["points"]:
        for row, values in point["rows"].items():
            cells = [str(point["values"][f]) for f in swept] + [row]
            for m in metrics:
                v = values.get(m)
                digits = 2 if m == "barrier" else 1
                cells.append(f"{v['mean']:.{digits}f} ± {v['ci95']:.{digits}f}" if v else "")
            lines.append("| " + " | ".join(cells) + " |")
    seeds = results["points"][0]["seeds"]
    title = f"# Sweep of experiments.{results['entry']}: {len(results['points'])} points × "
    title += f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    return (
        f"{title}\n\n"
        + "\n".join(lines)
        + f"\n\nAccuracies in %; {tables.CI_NOTE}. Loss barrier: linear path from θ_C, "
        "cued test data.\n"
        + (
            f"\n{cbft_report.execution_line(results['execution'])}"
            if "execution" in results
            else ""
        )
    )


def figure(config, results: dict):
    """``config.plot.metrics`` against ``config.plot.x``, one line per method (and per value of
    the other swept fields), with CI bands; None when no numeric field was swept."""
    swept = [f for f in results["grid"] if f != SEED]
    x = config.plot.x or next(
        (f for f in swept if all(isinstance(v, (int, float)) for v in results["grid"][f])), ""
    )
    if not x:
        return None
    others = [f for f in swept if f != x]
    panels = {}
    for metric in config.plot.metrics:
        series = {}
        for point in results["points"]:
            for row, values in point["rows"].items():
                if metric not in values:
                    continue
                label = ", ".join(
                    [row, *(f"{f.rpartition('.')[2]}={point['values'][f]}" for f in others)]
                )
                v = values[metric]
                series.setdefault(label, []).append((point["values"][x], v["mean"], v["ci95"]))
        if series:
            panels[METRICS[metric]] = series
    title = f"mean and 95 % CI over seeds {', '.join(map(str, results['points'][0]['seeds']))}"
    return plots.sweep_lines(x, panels, title) if panels else None


def check(args) -> None:
    """The entry point, the grid and every point's config, before any work."""
    config = args.config
    if config.entry not in ENTRIES:
        raise InputError(f"entry must be one of {', '.join(ENTRIES)}, got {config.entry!r}")
    unknown = [m for m in config.plot.metrics if m not in METRICS]
    if unknown:
        raise InputError(f"plot.metrics: unknown {unknown}; choose from {', '.join(METRICS)}")
    grid = parse_grid(config.grid)
    if config.plot.x and config.plot.x not in grid:
        raise InputError(f"plot.x must be a swept field ({', '.join(grid)}), got {config.plot.x!r}")
    points(config, pathlib.Path(args.workdir).expanduser().resolve())


def run(config, workdir, execution: jobs.Execution | None = None) -> dict:
    """Every point's units on one executor, then each point's own results (cbft: its
    aggregate) and the sweep's; returns the sweep's results."""
    start = time.perf_counter()
    workdir = pathlib.Path(workdir).resolve()
    grid_points = points(config, workdir)
    job = jobs.Job(u for p in grid_points for u in _job(config, p))
    execution = (execution or jobs.Execution(executor="inline")).resolved()
    logging.info(f"{len(grid_points)} points, {len(job)} units")
    records = jobs.execute(job, execution)
    if config.entry == "cbft":
        for point in grid_points:
            prefix = f"{point.name}/"
            own = {k.removeprefix(prefix): r for k, r in records.items() if k.startswith(prefix)}
            point_job = jobs.Job(units_lib.prefixed(job.units.values(), "", strip=prefix))
            results = cbft.finish(point.config, point.workdir, point_job, own, execution)
            results["seconds"] = round(time.perf_counter() - start, 1)
            cbft_report.write_outputs(results, point.workdir, show=False)
    results = {
        "entry": config.entry,
        "grid": parse_grid(config.grid),
        "interval": tables.CI_NOTE,
        "points": aggregate(config, grid_points, records),
        "seconds": round(time.perf_counter() - start, 1),
        "execution": jobs.executors.summary(job, records, execution),
        "config": config.to_dict(),
    }
    fig = figure(config, results)
    if fig is not None:
        with tensorboard.open_log(workdir) as log:
            tensorboard.save_figure(log, workdir / "sweep.png", fig)
    outputs.publish(workdir, results, results_table(results))
    return results


def main(args, checked=None):
    del checked
    run(args.config, args.workdir, cli.execution(args))


ENTRY = cli.Entry(
    "sweep",
    main,
    cli.config_path(__file__, "sweep"),
    "workdirs/sweep",
    check=check,
    runs_units=True,
)

if __name__ == "__main__":
    cli.run(ENTRY)
