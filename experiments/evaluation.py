"""What the model-comparison entry points (``similarity``, ``layerwise``) check in their
evaluation settings, in one place."""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import jax
import numpy as np

from mmc_jax import InputError, data, path_eval, training
from mmc_jax.errors import require


def validate(config) -> tuple[str, ...]:
    """Raises InputError for impossible evaluation settings (``num_points``, ``bn``,
    ``conditions``, ``random_from``, ``strategy``); returns the conditions."""
    require([
        (config.num_points >= 2, f"num_points must be >= 2, got {config.num_points}"),
        (config.bn in path_eval.BN_POLICIES, f"unknown BN policy {config.bn!r}; choose from "
         f"{', '.join(path_eval.BN_POLICIES)}"),
    ])
    conditions = tuple(c.strip() for c in config.conditions.split(",") if c.strip())
    if not conditions:
        raise InputError("conditions must name at least one condition")
    for c in conditions:
        data.check_condition(c)
    data.check_random_from(config.random_from)
    path_eval.resolve_strategy(config.strategy)
    return conditions


def finished(workdir: pathlib.Path, stored: dict) -> Optional[dict]:
    """The results of a run in ``workdir`` that finished with the same ``stored`` fields
    (config and models), printed again; else None."""
    previous = workdir / "results.json"
    if not previous.is_file():
        return None
    results = json.loads(previous.read_text())
    if {k: results.get(k) for k in stored} != json.loads(json.dumps(stored)):
        return None
    print("finished earlier with these models and config; reusing its results")
    print((workdir / "results.md").read_text())
    return results


def require_pair(model_a: Optional[str], model_b: Optional[str]) -> None:
    """One line when ``--model_a`` or ``--model_b`` is missing."""
    if not model_a or not model_b:
        raise InputError("give both --model_a and --model_b (model folders: experiments.train "
                         "workdirs or <cbft workdir>/seed_<s>/<method>)")


def parse_models(entries: Optional[list[str]], at_least: int = 2) -> dict[str, str]:
    """``["θ_C=dir", "dir2"]`` → ``{"θ_C": "dir", "<dir2's last two parts>": "dir2"}``."""
    named: dict[str, str] = {}
    for entry in entries or []:
        name, _, folder = entry.rpartition("=")
        if not name:
            name = "/".join(pathlib.Path(folder).parts[-2:])
        if name in named:
            raise InputError(f"two models are named {name!r}; name them with NAME=DIR")
        named[name] = folder
    if len(named) < at_least:
        raise InputError(f"--models needs at least {at_least} model folders, got {len(named)}")
    return named


def load_models(folders: dict[str, str], num_eval: int = 0):
    """The named model folders, checked to share architecture and data with the first.

    Returns:
      ``(model, {name: variables}, train, test)``; ``test`` cut to its first ``num_eval``
      samples when ``num_eval > 0``.
    """
    loaded, model, first = {}, None, None
    for name, folder in folders.items():
        model_here, variables, model_config = training.load_model(folder)
        if first is None:
            model, first = model_here, (f"{name} ({folder})", model_config)
        else:
            training.check_compatible(first[1], model_config, first[0], f"{name} ({folder})")
        loaded[name] = variables
    train, test = training.load_data(first[1])
    if num_eval:
        test = test.take(np.arange(min(num_eval, len(test))))
    return model, loaded, train, test


def evaluator_settings(config, train) -> dict:
    """The path evaluator's keyword arguments from the shared config fields."""
    return dict(bn=config.bn, bn_set=train, bn_batches=config.bn_batches,
                batch_size=config.batch_size, random_from=config.random_from,
                strategy=config.strategy, key=jax.random.PRNGKey(config.seed))
