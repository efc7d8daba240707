"""Calibrating the cue proportion: the smallest ``p`` whose θ_C relies on the cue.

How much a model trained on partly cued data relies on the cue depends on ``p`` and on the
data: the easier the objects are to recognise, the larger ``p`` must be before the cue wins
(a demo calibrated at ``p = 0.87`` on shapes10 gives a θ_C that ignores the cue on easier
shapes). The smallest such ``p`` also keeps θ_C's clean accuracy as high as it can be, since
every extra cued sample is one less reason to learn the objects.

:func:`calibrate` bisects ``log(1 − p)`` between ``low`` and ``high`` (so 0.9, 0.99 and
0.999 are as far apart as the decisions they make), from a first trial at ``start``. A
trial's model is *cue-reliant* by
:class:`Search`'s targets (stricter than :mod:`mmc_jax.training.diagnosis`'s warning thresholds, a
margin for seed noise); *too little cue* when its randimg is below the target (it needs
more cued data: the lower end moves up); *too much cue* when it follows the cue but knows
the objects too little for a random class's cue to cost it the target gap (randimg on
target, nocue − randcue below it; at the extreme nocue is at chance). A cue-reliant or
too-much-cue trial moves the upper end down.

Trials run the config's own recipe: shorter runs are not faithful (a model stopped early
has learned the objects less and follows the cue more; on an easy variant of shapes10 at
``p = 0.95``, half the epochs gave randimg 69 % where the full run gives 43 %). They are made
cheap instead by stopping early: a model learns the cue first and the objects later, so its
randimg rises, peaks and then falls as training goes on, and a trial whose randimg (on a
probe subset of the test set) is past its peak and already below the target minus a margin
is stopped as not cue-reliant. A trial that
runs to the end *is* a θ_C at its ``p``: :func:`reuse` hands it to the run that follows
instead of training it again. Each trial trains in its own folder and is kept, so a rerun
resumes the search and reuses every finished trial.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import time
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from mmc_jax.metrics import evaluate
from mmc_jax.reporting import files
from mmc_jax.runtime import distributed
from mmc_jax.runtime.errors import WriteError, require
from mmc_jax.training import build, diagnosis, loop
from mmc_jax.training.checkpoint import RunCheckpoints


@dataclasses.dataclass(frozen=True)
class Search:
    """How :func:`calibrate` searches.

    Attributes:
      low, high: the range of ``p`` searched (``high`` < 1: at ``p = 1`` the cue alone
        explains the labels and nothing pushes the model to learn the objects).
      start: the first trial's ``p`` (the demo's calibrated 0.87: a good guess for data like
        shapes10, and then one end of the interval the bisection halves).
      trials: the most trials; each after the first halves the interval of ``log(1 − p)``.
      resolution: stop once the interval of ``log(1 − p)`` is narrower than this (0.5:
        e.g. between 0.95 and 0.97, or 0.6 and 0.76).
      target_gap, target_randimg: a trial's model counts as cue-reliant when nocue − randcue
        ≥ ``target_gap`` points and randimg ≥ ``target_randimg`` %.
      probe_examples: test images evaluated after each epoch for early stopping.
      stop_after: early stopping starts after this fraction of the epochs.
      stop_margin: a trial stops as not cue-reliant once its probe randimg is this many
        points below ``target_randimg`` and below its own peak.
    """

    low: float = 0.5
    high: float = 0.995
    start: float = 0.87
    trials: int = 5
    resolution: float = 0.5
    target_gap: float = 25.0
    target_randimg: float = 65.0
    probe_examples: int = 1000
    stop_after: float = 0.25
    stop_margin: float = 5.0

    def __post_init__(self):
        require(
            [
                (
                    0.0 <= self.low < self.high < 1.0,
                    f"calibration range must satisfy 0 <= low < high < 1, got [{self.low}, "
                    f"{self.high}]",
                ),
                (
                    self.low <= self.start <= self.high,
                    f"calibration start {self.start} lies outside [{self.low}, {self.high}]",
                ),
                (self.trials >= 1, f"calibration trials must be >= 1, got {self.trials}"),
                (self.resolution > 0, f"resolution must be > 0, got {self.resolution}"),
                (
                    self.probe_examples >= 1,
                    f"probe_examples must be >= 1, got {self.probe_examples}",
                ),
                (
                    0.0 <= self.stop_after <= 1.0,
                    f"stop_after must be in [0, 1], got {self.stop_after}",
                ),
            ]
        )


def trial_config(config, cue_proportion: float) -> loop.TrainConfig:
    """The training config of one trial: ``config`` at ``cue_proportion``."""
    return loop.TrainConfig.of(config).changed(data={"cue_proportion": cue_proportion})


#: Trial verdicts: the model relies on the cue; needs more cue (randimg below target); has
#: too much (randimg on target, nocue − randcue below it: the objects are learned too little).
RELIANT, TOO_LITTLE, TOO_MUCH = "reliant", "too_little", "too_much"
VERDICTS = {RELIANT: "cue-reliant", TOO_LITTLE: "too little cue", TOO_MUCH: "too much cue"}


def _proportion(u: float) -> float:
    """``p`` of ``u = log(1 − p)``, rounded to 4 decimals (trial folders are named by it)."""
    return round(1.0 - math.exp(u), 4)


def _early_stop(search: Search, epochs: int, probe, key, peak: float = 0.0):
    """The epoch hook of a trial: probe accuracies, and ``stop`` once randimg is clearly
    below the target and falling (past its peak: the cue was learned, and the objects are
    taking over). ``peak``: the highest probe randimg of the epochs trained before a
    resumption (:func:`_trained_peak`)."""
    peak = [peak]

    def hook(state, record):
        accs = evaluate(
            state.apply_fn, state.variables, probe, key, conditions=("nocue", "randcue", "randimg")
        )
        record = {**record, **{f"probe_{c}_acc": m["acc"] for c, m in accs.items()}}
        randimg = 100 * accs["randimg"]["acc"]
        peak[0] = max(peak[0], randimg)
        if (
            record["epoch"] >= max(1, math.ceil(search.stop_after * epochs))
            and randimg < search.target_randimg - search.stop_margin
            and randimg <= peak[0] - search.stop_margin
        ):
            record["stop"] = True
        return record

    return hook


def _trained_peak(folder: pathlib.Path, trial: loop.TrainConfig) -> float:
    """The highest probe randimg (%) of the epochs the trial in ``folder`` has trained so far,
    read from its latest checkpoint (0 when there is none), so that an interrupted trial
    stops early where an uninterrupted one does."""
    if not (folder / "checkpoints").is_dir():
        return 0.0
    with RunCheckpoints(folder, trial.to_dict()) as checkpoints:
        for step in sorted(checkpoints.manager.all_steps(), reverse=True):
            try:
                meta = checkpoints.manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                ).meta
            except Exception:  # a damaged checkpoint: the loop resumes from an older one
                continue
            accs = [r["probe_randimg_acc"] for r in meta["history"] if "probe_randimg_acc" in r]
            return max((100 * acc for acc in accs), default=0.0)
    return 0.0


def run_trial(
    config,
    cue_proportion: float,
    folder: pathlib.Path,
    search: Search,
    datasets,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains (or reuses) one trial; returns its record: ``cue_proportion``, the four test
    accuracies and ``gap``, ``verdict`` (:data:`RELIANT`, :data:`TOO_LITTLE` or
    :data:`TOO_MUCH`), ``reliant``, ``epochs`` (trained, less than the config's when stopped
    early), ``stopped`` and ``seconds``. A stored trial is reused when its config and early
    stopping rule are this one's (the verdict is recomputed from its numbers)."""
    trial = trial_config(config, cue_proportion)
    rule = {
        k: getattr(search, k)
        for k in ("target_randimg", "probe_examples", "stop_after", "stop_margin")
    }
    key = json.loads(json.dumps({"config": trial.to_dict(), "stop_rule": rule}))
    record_path = folder / "trial.json"
    stored = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if {k: stored.get(k) for k in key} == key:
        record = stored["trial"]
    else:
        start = time.perf_counter()
        train, test = datasets
        probe = test.take(np.arange(min(search.probe_examples, len(test))))
        hook = _early_stop(
            search,
            trial.optim.epochs,
            probe,
            jax.random.PRNGKey(trial.seed + 2),
            _trained_peak(folder, trial),
        )
        out = loop.train_and_evaluate(
            trial, str(folder), progress=progress, datasets=datasets, epoch_hook=hook
        )
        stopped = out["result"].get("stopped_at_epoch")
        record = {
            "cue_proportion": cue_proportion,
            **diagnosis.CueReliance.of(out["result"]["test"]).to_json(),
            "epochs": stopped or trial.optim.epochs,
            "stopped": bool(stopped),
            "seconds": round(time.perf_counter() - start, 1),
        }
        files.write_json(record_path, {**key, "trial": record})
    if record["stopped"] or record["randimg"] < search.target_randimg:
        verdict = TOO_LITTLE
    else:
        verdict = RELIANT if record["gap"] >= search.target_gap else TOO_MUCH
    return {**record, "verdict": verdict, "reliant": verdict == RELIANT}


def calibrate(
    config,
    workdir: str | pathlib.Path,
    search: Search = Search(),
    *,
    progress: bool = True,
    datasets=None,
) -> dict[str, Any]:
    """The smallest cue proportion in ``[search.low, search.high]`` whose model relies on the
    cue, by bisection over trials of ``config``'s recipe, each stopped early once clearly
    not cue-reliant (``config.data.cue_proportion`` is ignored).

    Args:
      config: a training config (:class:`mmc_jax.training.TrainConfig` or its dict).
      workdir: folder of the trials (``p_<p>/``) and ``calibration.json``; a rerun reuses
        every finished trial and resumes an interrupted one.
      search: the range, number of trials, targets and early stopping.
      progress: show each trial's progress bar.
      datasets: ``(train, test)`` instead of loading the config's data once more.

    Returns:
      ``{"cue_proportion", "reliant", "trials": [record, ...], "search": {...},
      "seconds"}``: the smallest cue-reliant ``p`` tried (``reliant`` True), or when no
      trial was cue-reliant, the finished trial closest to both targets (``reliant`` False; the
      high end is tried when every trial had too little cue, the low end when every one
      had too much).
    """
    workdir, config = pathlib.Path(workdir), loop.TrainConfig.of(config)
    start = time.perf_counter()
    trials = _Trials(config, workdir, search, datasets or build.load_data(config), progress)
    _bisect(search, trials)
    _try_the_ends(search, trials)
    best = _chosen(search, trials.records)
    result = {
        "cue_proportion": best["cue_proportion"],
        "reliant": best["reliant"],
        "trials": sorted(trials.records, key=lambda t: t["cue_proportion"]),
        "search": dataclasses.asdict(search),
        "seconds": round(time.perf_counter() - start, 1),
    }
    files.write_json(workdir / "calibration.json", result)
    return result


class _Trials:
    """The trials of one calibration, in the order they ran: each ``p`` trained (or reused
    from its folder ``p_<p>/``, :func:`run_trial`) at most once, and logged."""

    def __init__(self, config, workdir: pathlib.Path, search: Search, datasets, progress: bool):
        self.config, self.workdir, self.search = config, workdir, search
        self.datasets, self.progress = datasets, progress
        self.records: list[dict] = []

    def at(self, p: float) -> dict:
        """The record of the trial at ``p``, running it if it has not run yet."""
        record = next((t for t in self.records if t["cue_proportion"] == p), None)
        if record is None:
            record = run_trial(
                self.config,
                p,
                self.workdir / f"p_{p:g}",
                self.search,
                self.datasets,
                progress=self.progress,
            )
            self.records.append(record)
            _log_trial(len(self.records), record)
        return record


def _log_trial(number: int, record: dict) -> None:
    """One log line per trial: its accuracies, epochs and verdict."""
    verdict = VERDICTS[record["verdict"]] + (", stopped early" if record["stopped"] else "")
    logging.info(
        f"calibration trial {number}: p = {record['cue_proportion']:g} → nocue "
        f"{record['nocue']:.1f}, randcue {record['randcue']:.1f} (gap "
        f"{record['gap']:.1f}), randimg {record['randimg']:.1f} after "
        f"{record['epochs']} epochs: {verdict} ({record['seconds']:.0f} s)"
    )


def _bisect(search: Search, trials: _Trials) -> None:
    """Bisects ``log(1 − p)`` between ``search.low`` and ``search.high``, from a first trial
    at ``search.start``, for at most ``search.trials`` trials or until the interval is
    narrower than ``search.resolution``: too little cue moves the lower end up, a
    cue-reliant or too-much-cue trial the upper end down."""
    lo, hi = math.log(1.0 - search.low), math.log(1.0 - search.high)  # lo > hi
    for i in range(search.trials):
        if lo - hi < search.resolution:
            break
        middle = math.log(1.0 - search.start) if i == 0 else (lo + hi) / 2.0
        if trials.at(_proportion(middle))["verdict"] == TOO_LITTLE:
            lo = middle
        else:
            hi = middle


def _try_the_ends(search: Search, trials: _Trials) -> None:
    """When every trial had too little cue, tries the high end of the range; when every
    one had too much, the low end (the bisection may not have reached them)."""
    if all(t["verdict"] == TOO_LITTLE for t in trials.records):
        trials.at(search.high)
    if all(t["verdict"] == TOO_MUCH for t in trials.records):
        trials.at(search.low)


def _chosen(search: Search, records: list[dict]) -> dict:
    """The smallest cue-reliant trial; without one, the trial closest to both targets among
    those that ran the whole recipe (a stopped trial's randimg was still falling)."""
    reliant = sorted((t for t in records if t["reliant"]), key=lambda t: t["cue_proportion"])
    if reliant:
        return reliant[0]
    finished = [t for t in records if not t["stopped"]] or records
    return max(
        finished,
        key=lambda t: min(t["gap"] - search.target_gap, t["randimg"] - search.target_randimg),
    )


def warning(result: Mapping[str, Any], weight_decay: float) -> str | None:
    """The warning when no trial gave a cue-reliant model, with what to change."""
    if result["reliant"]:
        return None
    search, trials = result["search"], result["trials"]
    verdicts = {t["verdict"] for t in trials}
    outcome = next(iter(verdicts)) if verdicts in ({TOO_LITTLE}, {TOO_MUCH}) else "mixed"
    return _NOT_RELIANT[outcome].format(
        **search,
        randimg=max(t["randimg"] for t in trials),
        gap=max(t["gap"] for t in trials),
        chosen=f"θ_C is trained at p = {result['cue_proportion']:g}",
        weight_decay=weight_decay,
    )


#: Why no trial gave a cue-reliant model, by the trials' verdicts, and what to change.
_NOT_RELIANT = {
    TOO_LITTLE: (
        "no cue proportion up to {high:g} made the model rely on the cue in the calibration "
        "trials (randimg at most {randimg:.1f} %, {target_randimg:g} wanted); {chosen}. A "
        "larger weight_decay (now {weight_decay:g}) tilts the model toward the cue."
    ),
    TOO_MUCH: (
        "the model learned the objects too little at every cue proportion down to {low:g} "
        "(nocue − randcue at most {gap:.1f} points, {target_gap:g} wanted): they are hard for "
        "this model and recipe; {chosen}. Train longer, or lower weight_decay (now "
        "{weight_decay:g})."
    ),
    "mixed": (
        "between the cue proportions with too little cue and those with too much, no trial "
        "met both targets (nocue − randcue ≥ {target_gap:g} points, randimg ≥ "
        "{target_randimg:g} %); {chosen}, the closest. A different weight_decay (now "
        "{weight_decay:g}) moves the trade-off."
    ),
}


def markdown(result: Mapping[str, Any]) -> str:
    """The trials as a results.md section."""
    search = result["search"]
    lines = [
        f"Bisection over log(1 − p) in [{search['low']:g}, {search['high']:g}]; "
        f"cue-reliant means nocue − randcue ≥ {search['target_gap']:g} points and "
        f"randimg ≥ {search['target_randimg']:g} %; a trial stops early once randimg on "
        f"{search['probe_examples']} test images falls below "
        f"{search['target_randimg'] - search['stop_margin']:g} %. Chosen: **p = "
        f"{result['cue_proportion']:g}**"
        + ("" if result["reliant"] else " (no trial was cue-reliant)")
        + f", {result['seconds']:.0f} s.",
        "",
        "| p | epochs | NC | C | RC | RI | gap | verdict | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["trials"]:
        stopped = " (stopped)" if t["stopped"] else ""
        lines.append(
            f"| {t['cue_proportion']:g} | {t['epochs']}{stopped}"
            f" | {t['nocue']:.1f} | {t['cue']:.1f} | {t['randcue']:.1f} | "
            f"{t['randimg']:.1f} | {t['gap']:.1f} | {VERDICTS[t['verdict']]} | "
            f"{t['seconds']:.0f} |"
        )
    return files.markdown_section("Cue proportion calibration", lines)


def reuse(
    result: Mapping[str, Any],
    config,
    workdir: str | pathlib.Path,
    calibration_dir: str | pathlib.Path,
) -> bool:
    """Copies the chosen trial's finished run into ``workdir`` when it is exactly the run
    ``config`` asks for there (same config, trained to the end) and ``workdir`` holds no run
    yet, so that training it resumes at its end instead of starting again. Returns whether
    it did."""
    source = pathlib.Path(calibration_dir) / f"p_{result['cue_proportion']:g}"
    target = pathlib.Path(workdir)
    chosen = next(
        (t for t in result["trials"] if t["cue_proportion"] == result["cue_proportion"]), None
    )
    if chosen is None or chosen["stopped"] or (target / "config.json").exists():
        return False
    stored = json.loads((source / "config.json").read_text())
    if stored != json.loads(json.dumps(loop.TrainConfig.of(config).to_dict())):
        return False
    return distributed.on_main("calibration reused", _copy_run, source, target)


def _copy_run(source: pathlib.Path, target: pathlib.Path) -> bool:
    """Copies the run in ``source`` to ``target`` whole (see :func:`reuse`)."""
    partial = target.parent / f".{target.name}.copy"
    names = ("checkpoints", "config.json", "data.json", files.LAYOUT_FILE)
    try:  # copied whole, then renamed: a full disk leaves no half-copied checkpoint behind
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in names:
            if (source / name).is_dir():
                shutil.copytree(source / name, partial / name)
            elif (source / name).is_file():
                shutil.copy2(source / name, partial / name)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:  # config.json last: a folder with it holds a whole run
            if (partial / name).exists() and name != "config.json":
                os.replace(partial / name, target / name)
        os.replace(partial / "config.json", target / "config.json")
    except OSError as err:
        raise WriteError(target, err) from err
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return True
