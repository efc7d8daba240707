"""Whether a run can show the paper's phenomena, with the numbers and what to change.

The paper's picture needs a cue model θ_C that relies on the cue: it classifies clean images
(no cue) clearly better than images carrying a random class's cue, and follows the cue on
images of another class. And it needs a clean fine-tuning set small enough that naive
fine-tuning at a small learning rate does not already unlearn the cue. Whether this holds
depends on the data (how easy its objects are to recognise), the cue proportion ``p``, the
weight decay and the number of clean samples; a dataset other than the demo's can miss
it silently, so the entry points check it and say what to change.

Measured on the four counterfactual test sets (accuracies in %):

- **cue reliance**: ``gap = nocue − randcue`` (points) and ``randimg`` (how often θ_C
  follows a cue placed on another class's image). θ_C counts as cue-reliant when
  ``gap ≥ MIN_GAP`` and ``randimg ≥ MIN_RANDIMG``.
- **clean set size**: small-LR naive fine-tuning "keeps the cue" when its ``randimg`` is
  at most ``MAX_RANDIMG_DROP`` points below θ_C's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from mmc_jax.reporting import files

#: θ_C is cue-reliant when nocue − randcue is at least this many points ...
MIN_GAP = 20.0
#: ... and it follows the cue on at least this % of the rand-image set.
MIN_RANDIMG = 50.0
#: Small-LR naive FT has dropped the cue when randimg falls by more than this many points.
MAX_RANDIMG_DROP = 15.0
#: θ_C has learned nothing but the cue when its nocue accuracy is within this many points
#: of chance.
CUE_ONLY_MARGIN = 10.0


@dataclasses.dataclass(frozen=True)
class CueReliance:
    """A model's accuracies (%) on the four counterfactual test sets."""

    nocue: float
    cue: float
    randcue: float
    randimg: float

    @classmethod
    def of(cls, metrics: Mapping[str, Mapping[str, float]]) -> CueReliance:
        """From ``training.evaluate``'s ``{condition: {"acc", "loss"}}`` (accuracy in [0, 1])."""
        missing = {"nocue", "cue", "randcue", "randimg"} - set(metrics)
        if missing:
            raise ValueError(
                f"cue reliance needs all four conditions; missing {', '.join(sorted(missing))}"
            )
        return cls(
            **{
                c: round(100.0 * float(metrics[c]["acc"]), 2)
                for c in ("nocue", "cue", "randcue", "randimg")
            }
        )

    @property
    def gap(self) -> float:
        """nocue − randcue, in points: what a random class's cue costs the model."""
        return round(self.nocue - self.randcue, 2)

    def reliant(self, min_gap: float = MIN_GAP, min_randimg: float = MIN_RANDIMG) -> bool:
        """Whether the model relies on the cue by both measures."""
        return self.gap >= min_gap and self.randimg >= min_randimg

    def to_json(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "gap": self.gap}


def cue_model_warning(
    reliance: CueReliance,
    cue_proportion: float,
    weight_decay: float,
    num_classes: int,
    prefix: str = "",
) -> str | None:
    """A one-paragraph warning when θ_C is not cue-reliant (or learned only the cue), with
    its numbers and what to change (config fields named with ``prefix``, e.g.
    ``"cue_model."``); None when it is fine."""
    chance = 100.0 / num_classes
    if reliance.cue < chance + CUE_ONLY_MARGIN:
        return (
            f"θ_C learned neither the objects nor the cue (nocue {reliance.nocue:.1f} %, cue "
            f"{reliance.cue:.1f} %, chance {chance:.1f} %): train longer ({prefix}epochs) "
            f"or check {prefix}learning_rate."
        )
    if reliance.nocue < chance + CUE_ONLY_MARGIN:
        return (
            f"θ_C learned only the cue (nocue {reliance.nocue:.1f} %, chance "
            f"{chance:.1f} %): lower {prefix}cue_proportion (now {cue_proportion:g}) or "
            f"{prefix}weight_decay (now {weight_decay:g}), or set {prefix}cue_proportion="
            "auto to search for it."
        )
    if reliance.reliant():
        return None
    measures = []
    if reliance.gap < MIN_GAP:
        measures.append(
            f"nocue {reliance.nocue:.1f} % vs randcue {reliance.randcue:.1f} %: "
            f"gap {reliance.gap:.1f} < {MIN_GAP:g} points"
        )
    if reliance.randimg < MIN_RANDIMG:
        measures.append(f"randimg {reliance.randimg:.1f} % < {MIN_RANDIMG:g} %")
    suggestion = min(0.99, round(1.0 - (1.0 - cue_proportion) / 2.0, 3))
    return (
        f"θ_C barely relies on the cue ({'; '.join(measures)}), so the paper's phenomena "
        f"cannot show. Raise {prefix}cue_proportion (now {cue_proportion:g}; e.g. "
        f"{suggestion:g}) or set it to auto to search for it; a larger {prefix}weight_decay"
        f" (now {weight_decay:g}) also tilts θ_C toward the cue."
    )


def n_clean_warning(cue_model: CueReliance, small_ft: CueReliance, n_clean: int) -> str | None:
    """A warning when small-LR naive fine-tuning on the clean set already drops the cue."""
    drop = round(cue_model.randimg - small_ft.randimg, 2)
    if drop <= MAX_RANDIMG_DROP:
        return None
    return (
        f"small-LR naive fine-tuning already drops the cue (randimg {cue_model.randimg:.1f}"
        f" → {small_ft.randimg:.1f} %, −{drop:.1f} points > {MAX_RANDIMG_DROP:g}): "
        f"{n_clean} clean samples teach the objects well enough on their own. Use a smaller "
        f"n_clean (e.g. {max(1, n_clean // 2)}) or n_clean=auto."
    )


def collapsed_warning(
    name: str, metrics: Mapping[str, Mapping[str, float]], num_classes: int
) -> str | None:
    """A warning when a fine-tuned model ended near chance on clean data, or with a clean
    loss above a uniform guess's ``log(num_classes)``: its fine-tuning diverged."""
    chance = 100.0 / num_classes
    nocue, loss = 100.0 * metrics["nocue"]["acc"], metrics["nocue"]["loss"]
    if nocue >= chance + CUE_ONLY_MARGIN and loss <= math.log(num_classes):
        return None
    hint = (
        " (it starts from LLRT's head: lower finetune.llrt.learning_rate or finetune.llrt.epochs)"
        if name == "lpft"
        else ""
    )
    return (
        f"{name} ended near chance on clean data (nocue {nocue:.1f} %, loss {loss:.2f}; "
        f"chance {chance:.1f} %, a uniform guess's loss {math.log(num_classes):.2f}): its "
        f"fine-tuning diverged; lower its learning rate{hint}."
    )


def diagnose(
    methods: Mapping[str, Mapping[str, Any]],
    cue_proportion: float,
    weight_decay: float,
    num_classes: int,
    n_clean: int | None = None,
    prefix: str = "",
) -> dict:
    """The diagnosis of one run: θ_C's cue reliance, whether small-LR naive FT (when it ran)
    kept the cue, and any fine-tuned model that ended near chance.

    Args:
      methods: model name → ``{"test": {condition: {"acc", "loss"}}}`` with ``cue_model``
        (θ_C) and optionally ``naive_ft_small``.
      cue_proportion, weight_decay: θ_C's, named in the advice.
      num_classes: for the chance level.
      n_clean: the clean fine-tuning set's size, named in the advice.
      prefix: where θ_C's fields live in the config (``"cue_model."`` for experiments.cbft).

    Returns:
      ``{"cue_reliance": {...}, "cue_reliant": bool, "warnings": [str, ...]}`` (plus
      ``"small_ft_randimg_drop"`` when small-LR naive FT ran).
    """
    theta_c = CueReliance.of(methods["cue_model"]["test"])
    warnings = [
        w
        for w in [cue_model_warning(theta_c, cue_proportion, weight_decay, num_classes, prefix)]
        if w
    ]
    out = {"cue_reliance": theta_c.to_json(), "cue_reliant": theta_c.reliant()}
    if "naive_ft_small" in methods and n_clean is not None:
        small = CueReliance.of(methods["naive_ft_small"]["test"])
        out["small_ft_randimg_drop"] = round(theta_c.randimg - small.randimg, 2)
        if warning := n_clean_warning(theta_c, small, n_clean):
            warnings.append(warning)
    for name, method in methods.items():
        if name not in ("cue_model", "nocue_model"):
            if warning := collapsed_warning(name, method["test"], num_classes):
                warnings.append(warning)
    out["warnings"] = warnings
    return out


def markdown(diagnosis: Mapping[str, Any]) -> str:
    """The diagnosis as a results.md section."""
    r = diagnosis["cue_reliance"]
    lines = [
        f"θ_C's cue reliance: nocue − randcue = {r['gap']:.1f} points (≥ {MIN_GAP:g} "
        f"wanted), randimg {r['randimg']:.1f} % (≥ {MIN_RANDIMG:g} wanted): "
        + ("cue-reliant." if diagnosis["cue_reliant"] else "**not cue-reliant**."),
    ]
    if "small_ft_randimg_drop" in diagnosis:
        lines.append(
            f"Small-LR naive FT changes randimg by "
            f"{-diagnosis['small_ft_randimg_drop']:+.1f} points (a drop of at most "
            f"{MAX_RANDIMG_DROP:g} wanted)."
        )
    lines += [""] + [f"> **Warning**: {w}" for w in diagnosis["warnings"]]
    return files.markdown_section("Diagnosis", lines)
