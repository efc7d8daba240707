"""What every config field of the entry points accepts, checked before any work.

A field is known by its dotted name in its config (``optim.epochs``,
``cue_model.data.name``); :data:`RULES` gives the rule of each field by the end of that name
(``data.name`` before ``name``), so the sections that appear in several configs (``data``,
``optim``, ``path``, ``cue_model.*``) share one rule per field. :func:`check_config` walks a
config and raises :class:`mmc_jax.InputError` for the first field its rule refuses, with a
message that names the field, what it accepts and what it got:

    optim.epochs must be an integer >= 1, got 0
    path.bn must be one of interpolate, interpolate_ema, recompute, repair, got 'reset'

The rules of the fields of the typed configs (the library's ``TrainConfig``,
``FinetuneConfig`` and ``CurveConfig``, and the ``path`` and ``permutation`` sections of
:mod:`experiments.sections`) are read from their declarations (:func:`declared`), so a bound
is stated once; those configs check the same values again for callers from Python. This is the
command line's check, which knows the field's full name.
"""

from __future__ import annotations

import dataclasses
import numbers
import pathlib
from typing import Any, Callable, Optional

from experiments import methods as methods_lib
from experiments import sections
from mmc_jax import data, finetune, models, training
from mmc_jax.connectivity import curve
from mmc_jax.data import tfds_source
from mmc_jax.runtime import configs
from mmc_jax.runtime.errors import BOUNDS, InputError

#: ``data.cue_proportion`` / ``data.n_clean``: resolved by the entry point.
AUTO = training.AUTO


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one field accepts.

    Attributes:
      kind: ``number`` (with ``bounds``, a kind of :data:`mmc_jax.runtime.errors.BOUNDS`),
        ``choice`` (one of ``choices``), ``names`` (a tuple or comma-separated list of
        ``choices``), ``folder`` (a folder holding ``holds``: ``model`` or ``any``; ``""``
        is "none"), ``dataset``, ``model``, ``seeds``, ``flag`` (True/False) or ``text``
        (checked where it is used).
      integer: numbers must be integers.
      auto: the string ``"auto"`` is accepted too.
      choices: for ``choice`` and ``names``; ``special``: further accepted words
        (``nocue_model`` for ``init_from``).
    """

    kind: str
    bounds: str = ""
    integer: bool = False
    auto: bool = False
    choices: tuple = ()
    holds: str = "model"
    special: tuple = ()

    def accepted(self) -> str:
        """What the field accepts, in words."""
        if self.kind == "number":
            what = ("an integer " if self.integer else "a number ") + BOUNDS[self.bounds][1]
        elif self.kind == "choice":
            what = f"one of {', '.join(self.choices)}"
        elif self.kind == "names":
            what = f"one or more of {', '.join(self.choices)} (a tuple or comma-separated)"
        elif self.kind == "folder":
            what = (MODEL_FOLDER if self.holds == "model" else "an existing folder") + (
                ", or '' for none"
            )
        else:
            what = DESCRIPTIONS[self.kind]
        words = [*(repr(s) for s in self.special), *(["'auto'"] if self.auto else [])]
        return what + (f" or {' or '.join(words)}" if words else "")


#: What a folder holding a model is, in words.
MODEL_FOLDER = "a model folder (an experiments.train workdir or <cbft workdir>/seed_<s>/<method>)"
#: What the other kinds accept, in words.
DESCRIPTIONS = {
    "dataset": (
        f"one of shapes10, dominoes, {', '.join(tfds_source.TFDS_DATASETS)} or npz:<file> "
        "(an existing .npz file)"
    ),
    "model": f"one of {', '.join(models.PRESETS)} or an importable 'package.module:factory'",
    "seeds": "distinct non-negative integers, e.g. (0, 1, 2)",
    "flag": "True or False",
    "text": "text",
}


def _number(bounds: str, integer: bool = False, auto: bool = False) -> Rule:
    return Rule("number", bounds=bounds, integer=integer, auto=auto)


def _fields(names: str, rule: Rule) -> dict[str, Rule]:
    return dict.fromkeys(names.split(), rule)


def declared(cls: type, section: str = "") -> dict[str, Rule]:
    """The rules a typed library config declares on its fields (``runtime.configs.field``),
    by ``<section>.<field>``; a nested section's fields by its own field name (``optim.epochs``
    wherever an ``optim`` section is), so one declaration covers every config that holds it."""
    rules: dict[str, Rule] = {}
    nested = configs.sections(cls)
    for f in dataclasses.fields(cls):
        if f.name in nested:
            rules.update(declared(nested[f.name], f.name))
            continue
        key = f"{section}.{f.name}" if section else f.name
        if f.metadata.get("bounds"):
            rules[key] = _number(f.metadata["bounds"], integer=f.type == "int")
        elif f.metadata.get("choices"):
            rules[key] = Rule("choice", choices=f.metadata["choices"])
    return rules


#: Every field's rule, by the end of its dotted name (the longest matching end wins): those
#: the library's typed configs declare, and those of the experiments' own fields.
RULES: dict[str, Rule] = {
    **declared(training.TrainConfig),
    **declared(finetune.FinetuneConfig, "finetune"),
    **declared(curve.CurveConfig, "curve"),
    **declared(sections.PathConfig, "path"),
    **declared(sections.PermutationConfig, "permutation"),
    **_fields(
        "scratch_epochs n_cue num_samples",
        _number("count", integer=True),
    ),
    **_fields(
        "small_learning_rate large_learning_rate",
        _number("positive"),
    ),
    **_fields(
        "cluster_threshold margin",
        _number("non_negative"),
    ),
    "data.cue_proportion": _number("fraction", auto=True),
    "data.cued_proportion": _number("fraction"),
    "data.n_clean": _number("count", integer=True, auto=True),
    "data.name": Rule("dataset"),
    "dominoes_top": Rule("choice", choices=("shapes10", *tfds_source.TFDS_DATASETS)),
    "dominoes_bottom": Rule("choice", choices=("shapes10", *tfds_source.TFDS_DATASETS)),
    "data_dir": Rule("folder", holds="any"),
    "model.name": Rule("model"),
    "model.init_from": Rule("folder", special=("nocue_model",)),
    "cue_model_dir": Rule("folder"),
    "nocue_model_dir": Rule("folder"),
    "path.conditions": Rule("names", choices=data.CONDITIONS),
    "path.targets": Rule("names", choices=methods_lib.TARGETS),
    "methods": Rule("names", choices=tuple(methods_lib.METHODS)),
    "seeds": Rule("seeds"),
    **_fields(
        "normalize_means bn_shuffle permute_residual permuted redraw shared_nocue_model",
        Rule("flag"),
    ),
    # Module names of the model, known once it is loaded (experiments.layerwise).
    "groups": Rule("text"),
    # experiments.sweep: what it sweeps (the grid is checked against the swept config).
    "entry": Rule("choice", choices=("cbft", "train")),
    "scratch_recipe": Rule("choice", choices=methods_lib.SCRATCH_RECIPES),
    "grid": Rule("text"),
    "plot.x": Rule("text"),
    "plot.metrics": Rule("names", choices=(*data.CONDITIONS, "barrier")),
}


def rule_of(name: str) -> Rule:
    """The rule of the field ``name`` (dotted): the entry of :data:`RULES` for the longest
    end of the name.

    Raises:
      KeyError: no rule covers the field (every field of every config has one).
    """
    parts = name.split(".")
    for start in range(len(parts)):
        rule = RULES.get(".".join(parts[start:]))
        if rule is not None:
            return rule
    raise KeyError(f"no rule for config field {name!r}")


def leaves(config, prefix: str = "") -> dict[str, Any]:
    """The fields of a ConfigDict (or nested dict), by dotted name, sections walked."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def problem(rule: Rule, value) -> Optional[str]:
    """Why ``value`` is not accepted by ``rule`` (a few words), or None when it is."""
    if rule.auto and value == AUTO or value in rule.special:
        return None
    return _CHECKS[rule.kind](rule, value)


def check_field(name: str, value) -> None:
    """Raises InputError (``<name> must be <what it accepts>, got <value>[: why]``) unless
    the field's rule accepts ``value``."""
    rule = rule_of(name)
    why = problem(rule, value)
    if why is not None:
        raise InputError(
            f"{name} must be {rule.accepted()}, got {value!r}" + (f": {why}" if why else "")
        )


def check_config(config, prefix: str = "") -> None:
    """:func:`check_field` for every field of ``config``, in order."""
    for name, value in leaves(config, prefix).items():
        check_field(name, value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_number(rule: Rule, value) -> Optional[str]:
    if not _is_number(value) or (rule.integer and not isinstance(value, numbers.Integral)):
        return ""
    return None if BOUNDS[rule.bounds][0](value) else ""


def _check_choice(rule: Rule, value) -> Optional[str]:
    return None if isinstance(value, str) and value in rule.choices else ""


def _check_names(rule: Rule, value) -> Optional[str]:
    names = sections.names(value) if isinstance(value, (str, tuple, list)) else None
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        return ""
    unknown = [n for n in names if n not in rule.choices]
    if unknown:
        return f"unknown {', '.join(map(repr, unknown))}"
    if len(set(names)) != len(names):
        return "listed twice"
    return None


def _check_folder(rule: Rule, value) -> Optional[str]:
    if not isinstance(value, str):
        return ""
    if not value:
        return None
    return folder_problem(value, rule.holds)


def folder_problem(value: str, holds: str = "model") -> Optional[str]:
    """Why ``value`` is not a folder holding ``holds`` (``model`` or ``any``), or None."""
    path = pathlib.Path(value).expanduser()
    if not path.exists():
        return "no such folder"
    if not path.is_dir():
        return "a file, not a folder"
    if holds == "model":
        try:
            training.model_config(path)
        except InputError:
            return "holds no model" if any(path.iterdir()) else "an empty folder"
    return None


def _check_dataset(rule: Rule, value) -> Optional[str]:
    del rule
    if not isinstance(value, str):
        return ""
    if value.startswith("npz:"):
        path = pathlib.Path(value[4:]).expanduser()
        return None if path.is_file() else f"no such file {str(path)!r}"
    return None if value in ("shapes10", "dominoes", *tfds_source.TFDS_DATASETS) else ""


def _check_model(rule: Rule, value) -> Optional[str]:
    del rule
    if not isinstance(value, str) or not value:
        return ""
    try:
        models.check_name(value)
    except InputError as err:
        return None if value in models.PRESETS else ("" if ":" not in value else str(err))
    return None


def _check_seeds(rule: Rule, value) -> Optional[str]:
    del rule
    seeds = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(seeds, (tuple, list)) or not seeds:
        return ""
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        return ""
    return None if len(set(seeds)) == len(seeds) else "listed twice"


_CHECKS: dict[str, Callable[[Rule, Any], Optional[str]]] = {
    "number": _check_number,
    "choice": _check_choice,
    "names": _check_names,
    "folder": _check_folder,
    "dataset": _check_dataset,
    "model": _check_model,
    "seeds": _check_seeds,
    "flag": lambda rule, value: None if isinstance(value, bool) else "",
    "text": lambda rule, value: None if isinstance(value, str) else "",
}
