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
``scratch``            a fresh model trained on the clean samples only (Table 4), with
                       ``baselines.scratch_recipe``'s SGD
``dfr``                Deep Feature Reweighting: the head retrained on group-balanced
                       features (Kirichenko et al., ICLR 2023)
``jtt``                Just Train Twice: θ_C's errors on the fine-tuning data upweighted
                       (Liu et al., ICML 2021)
``group_dro``          Group DRO over the (class, cue) groups (Sagawa et al., ICLR 2020)
=====================  ===================================================================

The last three are the spurious-correlation field's baselines, mapped onto this setting by
:mod:`mmc_jax.finetune.groups`: a group is a (class, cue present) pair of the fine-tuning data,
the clean samples its minority groups.
"""

from __future__ import annotations

import pathlib

import jax
from absl import logging

from experiments import comparison, sections
from mmc_jax import data, finetune, training
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
    "dfr": "deep feature reweighting (group-balanced head)",
    "jtt": "just train twice (θ_C's errors upweighted)",
    "group_dro": "group DRO over (class, cue) groups",
}
#: ``baselines.scratch_recipe``: θ_C's training SGD, or the fine-tuning's (``config.optim``).
SCRATCH_RECIPES = ("train", "finetune")
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
        "dfr": base,
        "jtt": base,
        "group_dro": base,
    }


#: Methods that read penultimate features (LLRT's probe, CBFT's invariance term).
FEATURE_METHODS = frozenset(
    ["llrt", "lpft", "cbft", "cbft_no_barrier", "cbft_no_invariance", "dfr"]
)


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
    if {"llrt", "lpft", "dfr"} & set(methods) and set(head) != {"kernel", "bias"}:
        raise InputError(
            "llrt, lpft and dfr retrain the linear head at params/classifier/dense "
            "(kernel, bias); the model has none there"
        )


def train_reference(
    config, seed: int, workdir: pathlib.Path, which: str, datasets: tuple
) -> list[str]:
    """Trains this seed's θ_C (``which="cue_model"``) or θ_NC (``"nocue_model"``) in
    ``workdir/<which>`` (resumable) on ``datasets``, θ_C's ``(train, test)`` (the cue
    proportion does not change the data, only which samples carry the cue).

    θ_C is trained with ``config.cue_model``, seed ``seed``; θ_NC likewise without the cue.
    ``cue_model.init_from = "nocue_model"`` starts θ_C from this seed's θ_NC (or
    ``config.nocue_model_dir``; the paper code's ``--use_pretrained``). Returns the
    diagnosis's warnings about θ_C (none for θ_NC).
    """
    cue_config = training.TrainConfig.of(config.cue_model).changed(seed=seed)
    if which == "nocue_model":
        logging.info("θ_NC (no cue)")
        nocue_config = cue_config.changed(data={"cue_proportion": 0.0}, model={"init_from": ""})
        training.train_and_evaluate(nocue_config, str(workdir / "nocue_model"), datasets=datasets)
        return []
    if cue_config.model.init_from == "nocue_model":
        cue_config = cue_config.changed(
            model={"init_from": config.nocue_model_dir or str(workdir / "nocue_model")}
        )
    logging.info("θ_C (cue)")
    trained = training.train_and_evaluate(cue_config, str(workdir / "cue_model"), datasets=datasets)
    return diagnosis.diagnose(
        {"cue_model": trained["result"]},
        cue_config.data.cue_proportion,
        cue_config.optim.weight_decay,
        trained["result"]["num_classes"],
        prefix="cue_model.",
    )["warnings"]


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
            train,
            clean_index,
            cue_index,
            config.optim.batch_size,
            seed,
            config.data.cued_proportion,
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


def fine_tune(
    config,
    seed: int,
    workdir: pathlib.Path,
    name: str,
    apply_fn,
    theta_c,
    cue_config,
    datasets,
    llrt_model=None,
):
    """Method ``name`` of :data:`METHODS` run from θ_C (``theta_c``) for one seed in
    ``workdir/<name>`` (resumable), and saved there as a loadable model
    (``training.save_model``). ``datasets``: θ_C's ``(train, test)``; ``llrt_model``: LPFT's
    start, the variables of this seed's ``llrt``. Returns the fine-tuned variables."""
    train, test = datasets
    clean_index, cue_index = finetune.draw_subsets(
        train, config.data.n_clean, config.data.n_cue, seed
    )
    p = config.data.cued_proportion  # of the cued set D_C
    iterator = finetune.paired_iterator(
        train, clean_index, cue_index, config.optim.batch_size, seed, p
    )
    k, cue = train.num_classes, train.cue
    configs = method_configs(config, seed)
    folder = workdir / name
    logging.info(f"{name}: {METHODS[name]}")
    if name.startswith("naive_ft") or name == "lpft":
        start = llrt_model if name == "lpft" else theta_c
        variables = finetune.naive_finetune(apply_fn, start, iterator, cue, configs[name], folder)[
            0
        ]
    elif name == "llrt":
        variables = finetune.llrt(
            apply_fn, theta_c, train, clean_index, k, configs["llrt"], folder
        )[0]
    elif name.startswith("cbft"):
        variables = finetune.cbft(
            apply_fn, theta_c, theta_c, iterator, cue, k, configs[name], folder
        )[0]
    elif name == "dfr":
        variables = finetune.dfr_finetune(
            apply_fn, theta_c, train, clean_index, cue_index, k, configs[name], cue_proportion=p
        )[0]
    elif name in ("jtt", "group_dro"):
        method = finetune.jtt_finetune if name == "jtt" else finetune.group_dro_finetune
        variables = method(
            apply_fn,
            theta_c,
            train,
            clean_index,
            cue_index,
            configs[name],
            folder,
            cue_proportion=p,
        )[0]
    else:
        variables = _scratch(config, cue_config, train.take(clean_index), test, folder)
    if not training.has_model(folder):
        training.save_model(folder, cue_config, variables, k, train.image_shape)
    return variables


def _scratch(config, cue_config, subset, test, folder: pathlib.Path):
    """``scratch``: a fresh model trained on the clean samples alone, every sample in every
    epoch (the last, smaller batch kept), with ``baselines.scratch_recipe``'s SGD: θ_C's
    (``"train"``) for ``baselines.scratch_epochs`` epochs, or the fine-tuning's
    (``"finetune"``: ``config.optim``, 20 epochs at lr 0.01 cosine, batch 256 by default),
    which the code's vestigial ``train_scratch`` branch suggests."""
    if config.baselines.scratch_recipe == "finetune":
        optim = training.OptimConfig.of(config.optim)
    else:
        optim = cue_config.optim.changed(epochs=config.baselines.scratch_epochs)
    optim = optim.changed(batch_size=min(optim.batch_size, config.data.n_clean))
    scratch_config = cue_config.changed(
        data={"cue_proportion": 0.0},
        model={"init_from": ""},
        optim=optim.to_dict(),
        eval_every_epochs=max(1, optim.epochs // 10),
    )
    return training.train_and_evaluate(
        scratch_config, str(folder), datasets=(subset, test), keep_last_batch=True
    )["state"].variables
