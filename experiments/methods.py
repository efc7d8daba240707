"""The models ``experiments.cbft`` compares: the reference models θ_C and θ_NC, and every
fine-tuning method, each trained (resumably) in its own folder of a seed's workdir.

Methods (``config.methods``), all starting from θ_C unless said otherwise:

=====================  ===================================================================
``naive_ft_small``     naive fine-tuning on the clean samples at ``baselines.small_learning_rate``
``naive_ft_medium``    naive fine-tuning at ``optim.learning_rate`` (FTM)
``naive_ft_large``     naive fine-tuning at ``baselines.large_learning_rate`` (Fig. 5, lr 0.1)
``llrt``               last-layer retraining on the clean samples (LLR), ``finetune.llrt``'s SGD
``lpft``               LLRT, then naive fine-tuning at ``optim.learning_rate``
``cbft``               connectivity-based fine-tuning at ``optim.learning_rate``
``cbft_no_barrier``    CBFT without the barrier term (Table 3, "w/o L_B")
``cbft_no_invariance`` CBFT without the invariance term (Table 3, "w/o L_I")
``scratch``            a fresh model trained on the clean samples only (Table 4)
=====================  ===================================================================
"""

from __future__ import annotations

import pathlib

import jax
from absl import logging

from experiments import cli, comparison, sections
from mmc_jax import data, finetune, training
from mmc_jax.reporting import timing
from mmc_jax.runtime.errors import InputError
from mmc_jax.training import diagnosis

#: Method name → one-line description (the rows of the report, in this order).
METHODS = {
    "naive_ft_small": "naive fine-tuning, small lr",
    "naive_ft_medium": "naive fine-tuning, medium lr",
    "naive_ft_large": "naive fine-tuning, large lr",
    "llrt": "last-layer retraining",
    "lpft": "linear probe, then fine-tuning",
    "cbft": "connectivity-based fine-tuning",
    "cbft_no_barrier": "CBFT without the barrier term",
    "cbft_no_invariance": "CBFT without the invariance term",
    "scratch": "from scratch on the clean samples",
}
#: The reference models paths can start from.
TARGETS = ("cue_model", "nocue_model")


def check_methods(methods) -> tuple[str, ...]:
    """``methods`` as a tuple of known, distinct names, else InputError."""
    methods = sections.names(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(
            f"unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(METHODS)}"
        )
    if len(set(methods)) != len(methods):
        raise InputError(f"methods must be distinct, got {methods}")
    return methods


def check_targets(targets) -> tuple[str, ...]:
    """``targets`` as a tuple of names from :data:`TARGETS` (``"cue_model"`` always first:
    the barrier to θ_C is part of every report), else InputError."""
    targets = sections.names(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise InputError(
            f"unknown path target(s) {', '.join(map(repr, unknown))}; choose "
            f"from {', '.join(TARGETS)}"
        )
    return tuple(dict.fromkeys(("cue_model", *targets)))


def finetune_config(config, seed: int) -> finetune.FinetuneConfig:
    """The library's fine-tuning config of the experiment config, for one seed: the one
    place its ``optim`` and ``finetune`` sections become a :class:`FinetuneConfig` (LLRT's
    SGD is ``optim``'s with ``finetune.llrt``'s epochs, learning rate and weight decay)."""
    optim = training.OptimConfig.of(config.optim)
    own = config.finetune.to_dict()
    llrt = optim.changed(**own.pop("llrt", {}))
    return finetune.FinetuneConfig.of(own, optim=optim, llrt=llrt, seed=seed)


def method_configs(config, seed: int) -> dict[str, finetune.FinetuneConfig]:
    """Each method's fine-tuning config for one seed (built, and so checked, at once)."""
    base = finetune_config(config, seed)
    baselines = config.baselines
    return {
        "naive_ft_small": base.changed(optim={"learning_rate": baselines.small_learning_rate}),
        "naive_ft_medium": base,
        "naive_ft_large": base.changed(optim={"learning_rate": baselines.large_learning_rate}),
        "llrt": base,
        "lpft": base,
        "cbft": base,
        "cbft_no_barrier": base.changed(barrier_weight=0.0),
        "cbft_no_invariance": base.changed(invariance_weight=0.0),
    }


#: Methods that read penultimate features (LLRT's probe, CBFT's invariance term).
FEATURE_METHODS = frozenset(["llrt", "lpft", "cbft", "cbft_no_barrier", "cbft_no_invariance"])


def check_model_contract(apply_fn, variables, train, methods) -> None:
    """One-line errors when a (user's) model cannot run ``methods``: LLRT, LPFT and CBFT need
    ``apply(..., return_features=True)`` to return ``(logits, features)``; LLRT and LPFT
    retrain the linear head at ``params/classifier/dense``."""
    needs = sorted(FEATURE_METHODS & set(methods))
    if not needs:
        return
    x = train.images[:2]
    try:
        out = jax.eval_shape(
            lambda v: apply_fn(
                v, data.clean_inputs(train.cue, x), train=False, return_features=True
            ),
            variables,
        )
        ok = isinstance(out, tuple) and len(out) == 2 and len(out[1].shape) == 2
    except TypeError:
        ok = False
    if not ok:
        raise InputError(
            f"{', '.join(needs)} need the model's penultimate features: "
            "apply(variables, x, train=..., return_features=True) must return "
            "(logits, features [N, D])"
        )
    head = variables["params"].get("classifier", {}).get("dense", {})
    if {"llrt", "lpft"} & set(methods) and set(head) != {"kernel", "bias"}:
        raise InputError(
            "llrt and lpft retrain the linear head at params/classifier/dense "
            "(kernel, bias); the model has none there"
        )


def reference_models(config, seed: int, workdir: pathlib.Path, datasets: tuple):
    """θ_C (and θ_NC when a path target or θ_C's ``init_from`` needs it) for one seed.

    Each is reused from ``config.cue_model_dir`` / ``config.nocue_model_dir`` or trained in
    ``workdir/cue_model`` / ``workdir/nocue_model`` with the demo's training config, seed
    ``seed`` (θ_NC: no cue). ``cue_model.init_from = "nocue_model"`` starts θ_C from this
    seed's θ_NC (the paper code's ``--use_pretrained``). Both train on ``datasets``, θ_C's
    ``(train, test)`` (the cue proportion does not change the data, only which samples carry
    the cue).

    Returns:
      ``(apply_fn, {"cue_model": variables[, "nocue_model": variables]}, θ_C's config)``.
    """
    cue_config = training.TrainConfig.of(config.cue_model).changed(seed=seed)
    from_nocue = cue_config.model.init_from == "nocue_model"
    need_nocue = "nocue_model" in check_targets(config.path.targets) or from_nocue
    out = {}
    if need_nocue:
        if config.nocue_model_dir:
            logging.info(f"θ_NC: reusing {config.nocue_model_dir}")
            _, out["nocue_model"], _ = training.load_model(config.nocue_model_dir)
        else:
            logging.info("θ_NC (no cue)")
            nocue_config = cue_config.changed(data={"cue_proportion": 0.0}, model={"init_from": ""})
            out["nocue_model"] = training.train_and_evaluate(
                nocue_config, str(workdir / "nocue_model"), datasets=datasets
            )["state"].variables
    if from_nocue:
        cue_config = cue_config.changed(
            model={"init_from": config.nocue_model_dir or str(workdir / "nocue_model")}
        )
    if config.cue_model_dir:
        logging.info(f"θ_C: reusing {config.cue_model_dir}")
        model, out["cue_model"], cue_config = training.load_model(config.cue_model_dir)
        apply_fn = model.apply
    else:
        logging.info("θ_C (cue)")
        trained = training.train_and_evaluate(
            cue_config, str(workdir / "cue_model"), datasets=datasets
        )
        # Now, not only with the final tables: the run goes on for minutes.
        cli.warn(
            diagnosis.diagnose(
                {"cue_model": trained["result"]},
                cue_config.data.cue_proportion,
                cue_config.optim.weight_decay,
                trained["result"]["num_classes"],
                prefix="cue_model.",
            )["warnings"]
        )
        apply_fn, out["cue_model"] = trained["state"].apply_fn, trained["state"].variables
    return apply_fn, out, cue_config


#: Clean-set sizes ``n_clean = "auto"`` tries, largest first.
N_CLEAN_CANDIDATES = (1000, 500, 250, 125)


def choose_n_clean(
    config, seed: int, workdir: pathlib.Path, apply_fn, theta_c, train, test
) -> tuple[int, list[dict]]:
    """``n_clean = "auto"``: the largest of :data:`N_CLEAN_CANDIDATES` (at most the training
    set) on which small-LR naive fine-tuning keeps the cue, i.e. θ_C's randimg drops by at
    most ``diagnosis.MAX_RANDIMG_DROP`` points; each probe fine-tunes in
    ``workdir/n_clean/n_<n>`` (resumable). Returns the choice (the smallest candidate when
    none keeps the cue) and the probes."""
    path = comparison.check_path(config.path)
    key = jax.random.PRNGKey(seed + 1)
    before = diagnosis.CueReliance.of(comparison.test_metrics(path, apply_fn, theta_c, test, key))
    candidates = [n for n in N_CLEAN_CANDIDATES if n <= len(train)] or [len(train)]
    probes = []
    for n in candidates:
        clean_index, cue_index = finetune.draw_subsets(train, n, config.data.n_cue, seed)
        iterator = finetune.paired_iterator(
            train, clean_index, cue_index, config.optim.batch_size, seed
        )
        tuned = finetune.naive_finetune(
            apply_fn,
            theta_c,
            iterator,
            train.cue,
            method_configs(config, seed)["naive_ft_small"],
            workdir / "n_clean" / f"n_{n}",
        )[0]
        after = diagnosis.CueReliance.of(comparison.test_metrics(path, apply_fn, tuned, test, key))
        drop = round(before.randimg - after.randimg, 2)
        probes.append(
            {
                "n_clean": n,
                "randimg_before": before.randimg,
                "randimg_after": after.randimg,
                "randimg_drop": drop,
                "keeps_cue": drop <= diagnosis.MAX_RANDIMG_DROP,
            }
        )
        keeps = " (keeps the cue)" if probes[-1]["keeps_cue"] else ""
        logging.info(
            f"n_clean {n}: small-LR naive FT moves randimg {before.randimg:.1f} → "
            f"{after.randimg:.1f}{keeps}"
        )
        if probes[-1]["keeps_cue"]:
            return n, probes
    return candidates[-1], probes


def fine_tuned_models(
    config,
    seed: int,
    workdir: pathlib.Path,
    apply_fn,
    theta_c,
    cue_config,
    train,
    test,
    phases: timing.Phases | None = None,
) -> dict:
    """Every method of ``config.methods`` run from θ_C, in its own folder; each is also
    saved as a loadable model (``training.save_model``) in that folder, and timed as a
    phase of ``phases`` when given.

    Returns:
      method name → variables, in ``config.methods`` order.
    """
    clean_index, cue_index = finetune.draw_subsets(
        train, config.data.n_clean, config.data.n_cue, seed
    )
    iterator = finetune.paired_iterator(
        train, clean_index, cue_index, config.optim.batch_size, seed
    )
    k, cue = train.num_classes, train.cue
    configs = method_configs(config, seed)
    done: dict = {}

    def naive(name, start, folder=None):
        return finetune.naive_finetune(
            apply_fn, start, iterator, cue, configs[name], workdir / (folder or name)
        )[0]

    def llrt():
        if "llrt" not in done:
            done["llrt"] = finetune.llrt(
                apply_fn, theta_c, train, clean_index, k, configs["llrt"], workdir / "llrt"
            )[0]
        return done["llrt"]

    def cbft(name):
        return finetune.cbft(
            apply_fn, theta_c, theta_c, iterator, cue, k, configs[name], workdir / name
        )[0]

    def scratch():
        epochs = config.baselines.scratch_epochs
        scratch_config = cue_config.changed(
            data={"cue_proportion": 0.0},
            model={"init_from": ""},
            optim={
                "epochs": epochs,
                "batch_size": min(cue_config.optim.batch_size, config.data.n_clean),
            },
            eval_every_epochs=max(1, epochs // 10),
        )
        subset = train.take(clean_index)
        return training.train_and_evaluate(
            scratch_config, str(workdir / "scratch"), datasets=(subset, test)
        )["state"].variables

    runners = {
        "naive_ft_small": lambda: naive("naive_ft_small", theta_c),
        "naive_ft_medium": lambda: naive("naive_ft_medium", theta_c),
        "naive_ft_large": lambda: naive("naive_ft_large", theta_c),
        "llrt": llrt,
        "lpft": lambda: naive("lpft", llrt()),
        "cbft": lambda: cbft("cbft"),
        "cbft_no_barrier": lambda: cbft("cbft_no_barrier"),
        "cbft_no_invariance": lambda: cbft("cbft_no_invariance"),
        "scratch": scratch,
    }
    models = {}
    phases = phases or timing.Phases()
    for name in check_methods(config.methods):
        logging.info(f"{name}: {METHODS[name]}")
        with phases(name):
            models[name] = done[name] = done[name] if name in done else runners[name]()
    for name, variables in done.items():  # LLRT too when only LPFT asked for it
        if not training.has_model(workdir / name):
            training.save_model(workdir / name, cue_config, variables, k, train.image_shape)
    return models
