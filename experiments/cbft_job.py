"""``experiments.cbft`` as a job of work units (:mod:`mmc_jax.jobs`), per seed s in
``DIR/seed_<s>``:

=============================  ==========================================================
unit                           does (inputs)
=============================  ==========================================================
``calibration``                θ_C's cue proportion when ``cue_model.data.cue_proportion``
                               is ``auto`` (first seed's recipe, shared by all seeds)
``seed_<s>/nocue_model``       trains θ_NC (when a path target or θ_C's ``init_from`` needs it;
                               ``nocue_model``, one for every seed, with
                               ``shared_nocue_model``, as the paper's code)
``seed_<s>/cue_model``         trains θ_C (θ_NC when it starts from it; the calibration)
``seed_<s>/n_clean``           ``data.n_clean = "auto"``'s probes (θ_C)
``seed_<s>/<method>``          fine-tunes θ_C with the method, evaluates it on the four
                               conditions and along the line from each reference model
                               (θ_C, θ_NC, n_clean; LPFT: LLRT)
``seed_<s>/references``        evaluates the reference models likewise (θ_C, θ_NC)
``seed_<s>``                   the seed's ``results.json``/``.md`` and figures (all above)
=============================  ==========================================================

A reused model (``cue_model_dir``, ``nocue_model_dir``) has no unit. Every unit reads its
models from its inputs' folders and θ_C's data itself, so it runs the same in any process.
"""

from __future__ import annotations

import copy
import functools
import pathlib
import time

import jax
import ml_collections

from experiments import cbft_report, comparison
from experiments import methods as methods_lib
from mmc_jax import jobs, metrics, paths, training
from mmc_jax.connectivity import path_eval
from mmc_jax.reporting import timing
from mmc_jax.training import calibration

MODULE = __name__
#: The methods from the longest-running to the shortest on the demo (LLRT early: LPFT waits
#: for it), the order in which a job lists them, so that executors start the long ones
#: first and the job's end is not one long unit running alone.
LONGEST_FIRST = (
    "scratch",
    "jtt",
    "group_dro",
    "cbft",
    "cbft_no_barrier",
    "cbft_no_invariance",
    "llrt",
    "lpft",
    "naive_ft_large",
    "naive_ft_medium",
    "naive_ft_small",
    "dfr",
)


def seed_config(config, seed: int) -> dict:
    """The config of one seed's run (what its units are given, and its results.json stores)."""
    values = config if isinstance(config, dict) else config.to_dict()
    return {**values, "seeds": [seed]}


def job(config, workdir: pathlib.Path, seeds) -> jobs.Job:
    """The units of ``experiments.cbft`` for ``config`` and ``seeds`` in ``workdir``."""
    workdir = pathlib.Path(workdir)
    units = []
    auto_p = not config.cue_model_dir and config.cue_model.data.cue_proportion == training.AUTO
    if auto_p:
        units.append(
            _unit(
                "calibration",
                workdir / "calibration",
                "calibrate",
                config=seed_config(config, seeds[0]),
                workdir=str(workdir),
            )
        )
    shared = None
    if config.get("shared_nocue_model") and _needs_nocue(config) and not config.nocue_model_dir:
        # One θ_NC for every seed (the paper's code trains one), with the first seed's recipe.
        shared = "nocue_model"
        units.append(
            _unit(
                shared,
                workdir / shared,
                "train_reference",
                which=shared,
                config=seed_config(config, seeds[0]),
                seed=seeds[0],
                workdir=str(workdir),
            )
        )
        config = copy.deepcopy(config)
        config.nocue_model_dir = str(workdir / shared)
    for seed in seeds:
        units += seed_units(config, seed, workdir, ("calibration",) if auto_p else (), shared)
    return jobs.Job(units)


def _timed(function):
    """A unit function whose result also says how long it ran (``"seconds"``)."""

    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        return {**result, "seconds": round(time.perf_counter() - start, 2)}

    return timed


#: Each unit's run time relative to a naive fine-tuning on the demo (θ_C 99 s, CBFT 38 s,
#: naive FT 19 s, LLRT 13 s, references 3 s, inline on 2 cores), so that executors start
#: the units that hold up the job's end first (every seed's θ_C before any method).
COSTS = {
    "train_reference": 5.0,
    "calibrate": 20.0,
    "cbft": 2.0,
    "scratch": 3.0,
    "jtt": 2.0,
    "group_dro": 2.0,
    "evaluate_references": 0.2,
    "report": 0.0,
}


def _unit(name, folder, function, inputs=(), light=False, **kwargs) -> jobs.Unit:
    method = kwargs.get("method", "")
    cost = COSTS.get(function, COSTS.get(method.partition("_no_")[0], 1.0))
    return jobs.Unit(
        name, f"{MODULE}:{function}", str(folder), kwargs, tuple(inputs), light=light, cost=cost
    )


def seed_units(
    config, seed: int, workdir: pathlib.Path, calibrated=(), shared_nocue=None
) -> list[jobs.Unit]:
    """The units of one seed (see the module's docstring); ``shared_nocue``: the unit of the
    θ_NC every seed shares (``config.nocue_model_dir`` is its folder)."""
    folder, prefix = workdir / f"seed_{seed}", f"seed_{seed}/"
    args = {"config": seed_config(config, seed), "seed": seed, "workdir": str(folder)}
    from_nocue = _from_nocue(config)
    need_nocue = _needs_nocue(config)
    out, references = [], []
    if need_nocue and not config.nocue_model_dir:
        out.append(
            _unit(
                prefix + "nocue_model",
                folder / "nocue_model",
                "train_reference",
                which="nocue_model",
                **args,
            )
        )
        references.append(prefix + "nocue_model")
    if not config.cue_model_dir:
        own_nocue = prefix + "nocue_model" if references else shared_nocue
        after_nocue = [own_nocue] if from_nocue and own_nocue else []
        out.append(
            _unit(
                prefix + "cue_model",
                folder / "cue_model",
                "train_reference",
                [*calibrated, *after_nocue],
                which="cue_model",
                **args,
            )
        )
        references.append(prefix + "cue_model")
    if shared_nocue:
        references.append(shared_nocue)
    tuned_from = [prefix + "cue_model"] if not config.cue_model_dir else []
    if config.data.n_clean == training.AUTO:
        out.append(
            _unit(prefix + "n_clean", folder / "n_clean", "probe_n_clean", tuned_from, **args)
        )
        tuned_from = [*tuned_from, prefix + "n_clean"]
    chosen = methods_lib.check_methods(config.methods)
    wanted = [*(["llrt"] if "lpft" in chosen and "llrt" not in chosen else []), *chosen]
    for name in sorted(wanted, key=LONGEST_FIRST.index):
        inputs = [*tuned_from, *references, *([prefix + "llrt"] if name == "lpft" else [])]
        out.append(
            _unit(
                prefix + name,
                folder / name,
                "fine_tune",
                dict.fromkeys(inputs),
                method=name,
                evaluate=name in chosen,
                **args,
            )
        )
    out.append(
        _unit(
            prefix + "references", folder / "references", "evaluate_references", references, **args
        )
    )
    everything = [*calibrated, *(u.name for u in out)]
    out.append(_unit(f"seed_{seed}", folder, "report", everything, light=True, **args))
    return out


def _from_nocue(config) -> bool:
    """Whether θ_C is trained here, starting from θ_NC."""
    return not config.cue_model_dir and config.cue_model.model.init_from == "nocue_model"


def _needs_nocue(config) -> bool:
    """Whether the seed has a θ_NC: a path starts from it, or θ_C starts from it."""
    return "nocue_model" in methods_lib.check_targets(config.path.targets) or _from_nocue(config)


def _config(config: dict, inputs: dict, seed: int) -> ml_collections.ConfigDict:
    """The seed's config with what its inputs resolved: the calibrated cue proportion, the
    chosen n_clean."""
    values = copy.deepcopy(config)  # resolved before typing: an "auto" field holds a string
    for name, result in _by_role(inputs, seed).items():
        if name == "calibration":
            values["cue_model"]["data"]["cue_proportion"] = result["cue_proportion"]
        elif name == "n_clean":
            values["data"]["n_clean"] = result["n_clean"]
    return ml_collections.ConfigDict(values)


def _by_role(inputs: dict, seed: int) -> dict:
    """Input results by their unit's name within the seed (``cue_model``, ``cbft``, ...,
    ``calibration``), whatever prefix the job gave the names (a sweep's point)."""
    return {
        name.partition(f"seed_{seed}/")[2] or name.rpartition("/")[2]: result
        for name, result in inputs.items()
    }


def data_config(config) -> training.TrainConfig:
    """The training config naming θ_C's data: the reused θ_C's own (``cue_model_dir``),
    else ``config.cue_model``."""
    if config.cue_model_dir:
        return training.model_config(config.cue_model_dir)
    return training.TrainConfig.of(config.cue_model)


def _datasets(config):
    """θ_C's ``(train, test)`` (:func:`data_config`'s data)."""
    return training.load_data(data_config(config))


def _cue_model(config, workdir: pathlib.Path):
    """``(apply_fn, θ_C's variables, θ_C's config)`` from its folder."""
    model, variables, cue_config = training.load_model(
        config.cue_model_dir or str(workdir / "cue_model")
    )
    return model.apply, variables, cue_config


def _references(config, workdir: pathlib.Path, theta_c) -> dict:
    """The reference models' variables that this seed has (θ_NC if any, then θ_C, whose
    variables ``theta_c`` the caller has loaded already)."""
    out = {}
    if _needs_nocue(config):
        nocue = config.nocue_model_dir or str(workdir / "nocue_model")
        out["nocue_model"] = training.load_model(nocue)[1]
    out["cue_model"] = theta_c
    return out


@_timed
def train_reference(config: dict, seed: int, workdir: str, which: str, inputs=None) -> dict:
    """Unit: trains this seed's θ_C or θ_NC (:func:`experiments.methods.train_reference`)."""
    inputs = inputs or {}
    config, workdir = _config(config, inputs, seed), pathlib.Path(workdir)
    phases = timing.Phases()
    if which == "cue_model" and "calibration" in inputs:
        calibration.reuse(
            inputs["calibration"],
            training.TrainConfig.of(config.cue_model).changed(seed=seed),
            workdir / "cue_model",
            workdir.parent / "calibration",
        )
    with phases("reference models"):
        warnings = methods_lib.train_reference(config, seed, workdir, which, _datasets(config))
    return {"warnings": warnings, "timings": phases.to_json()}


def calibrate(config: dict, workdir: str) -> dict:
    """Unit: θ_C's cue proportion for ``cue_proportion = "auto"``
    (:func:`mmc_jax.training.calibration.calibrate`, trials in ``workdir/calibration``); its
    result has the calibration's own ``seconds``."""
    config, workdir = ml_collections.ConfigDict(config), pathlib.Path(workdir)
    cue_config = training.TrainConfig.of(config.cue_model).changed(seed=config.seeds[0])
    calibrated = calibration.calibrate(
        cue_config, workdir / "calibration", datasets=_datasets(config)
    )
    warning = calibration.warning(calibrated, cue_config.optim.weight_decay)
    return {**calibrated, "warnings": [warning] if warning else []}


@_timed
def probe_n_clean(config: dict, seed: int, workdir: str, inputs=None) -> dict:
    """Unit: ``data.n_clean = "auto"``'s choice (:func:`methods.choose_n_clean`)."""
    config, workdir = _config(config, inputs or {}, seed), pathlib.Path(workdir)
    apply_fn, theta_c, _ = _cue_model(config, workdir)
    train, test = _datasets(config)
    phases = timing.Phases()
    with phases("n_clean probes"):
        n_clean, probes = methods_lib.choose_n_clean(
            config, seed, workdir, apply_fn, theta_c, train, test
        )
    return {"n_clean": n_clean, "probes": probes, "timings": phases.to_json()}


@_timed
def fine_tune(
    config: dict, seed: int, workdir: str, method: str, evaluate: bool, inputs=None
) -> dict:
    """Unit: one method from θ_C, then (with ``evaluate``) its evaluation."""
    config, workdir = _config(config, inputs or {}, seed), pathlib.Path(workdir)
    apply_fn, theta_c, cue_config = _cue_model(config, workdir)
    datasets = _datasets(config)
    llrt = training.load_model(str(workdir / "llrt"))[1] if method == "lpft" else None
    phases = timing.Phases()
    with phases(method):
        variables = methods_lib.fine_tune(
            config, seed, workdir, method, apply_fn, theta_c, cue_config, datasets, llrt
        )
    if not evaluate:
        return {"timings": phases.to_json()}
    references = _references(config, workdir, theta_c)
    result = evaluate_model(config, apply_fn, variables, references, datasets, seed, phases)
    return {"evaluation": result, "timings": phases.to_json()}


@_timed
def evaluate_references(config: dict, seed: int, workdir: str, inputs=None) -> dict:
    """Unit: the reference models on the four conditions and along the lines between them."""
    config, workdir = _config(config, inputs or {}, seed), pathlib.Path(workdir)
    apply_fn, theta_c, _ = _cue_model(config, workdir)
    datasets = _datasets(config)
    references = _references(config, workdir, theta_c)
    phases = timing.Phases()
    out = {
        name: evaluate_model(
            config, apply_fn, variables, references, datasets, seed, phases, exclude=name
        )
        for name, variables in references.items()
    }
    return {"evaluations": out, "timings": phases.to_json()}


def evaluate_model(
    config, apply_fn, variables, references, datasets, seed: int, phases, exclude: str = ""
) -> dict:
    """One model on the four conditions (phase "evaluation") and along the line from each
    path target but ``exclude`` (phase "paths"): ``{"test", "paths": {target: path json}}``.
    The line from θ_C is always evaluated on cued data too."""
    path = comparison.check_path(config.path)
    train, test = datasets
    key = jax.random.PRNGKey(seed + 1)
    test = path.eval_set(train, test)
    with phases("evaluation"):
        tested = comparison.test_metrics(path, apply_fn, variables, test, key, per_class=True)
        out = {"test": tested, "worst_group": metrics.worst_group(tested), "paths": {}}
    settings = {**comparison.evaluator_settings(path, train, 0), "key": key}
    for target in methods_lib.check_targets(path.targets):
        if target == exclude:
            continue
        wanted = path.conditions
        if target == "cue_model":
            wanted = tuple(dict.fromkeys((*wanted, "cue")))
        with phases("paths"):
            result = path_eval.evaluate_path(
                apply_fn,
                paths.linear(references[target], variables),
                paths.grid(path.num_points),
                test,
                conditions=wanted,
                **settings,
            )
        summary = result.to_json()
        out["paths"][target] = {"ts": summary["ts"], "conditions": summary["conditions"]}
    return out


def report(config: dict, seed: int, workdir: str, inputs) -> dict:
    """Unit (light): the seed's results from its units' results, written to ``workdir``."""
    stored, workdir = config, pathlib.Path(workdir)
    config = _config(config, inputs, seed)
    records = _by_role(inputs, seed)
    methods = dict(records["references"]["evaluations"])
    for name in methods_lib.check_methods(config.methods):
        methods[name] = records[name]["evaluation"]
    for m in methods.values():
        to_cue = m["paths"].get("cue_model")
        m["barrier_to_cue_model"] = (
            to_cue["conditions"]["cue"]["barrier"] if to_cue else {"loss": 0.0, "acc": 0.0}
        )
    cue_config = data_config(config)
    records.pop("calibration", None)  # the sweep's, reported once at the top
    return cbft_report.seed_results(
        config, seed, cue_config, _datasets(config), methods, records, stored, workdir
    )
