"""Markdown tables of results, laid out like the paper's tables (accuracies in %)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mmc_jax.data import CONDITIONS

#: Column headers of the paper's Table 1, with the direction that is better.
HEADERS = {"nocue": "NC ↑", "cue": "C ~", "randcue": "RC ~", "randimg": "RI ↓"}


def conditions_table(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]],
    extra: Mapping[str, Mapping[str, str]] | None = None,
    std: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> str:
    """One row per model, one column per condition: test accuracy in % (loss in brackets).

    Args:
      rows: row name → ``{condition: {"acc", "loss"}}``.
      extra: optional row name → ``{column: text}`` appended on the right.
      std: optional standard deviations shaped like ``rows``; accuracies then read
        ``mean ± std`` (the loss stays the mean).
    """
    conditions = [c for c in CONDITIONS if any(c in r for r in rows.values())]
    extra = extra or {}
    extra_columns = list(dict.fromkeys(k for e in extra.values() for k in e))
    header = ["", *(HEADERS[c] for c in conditions), *extra_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows.items():
        spread = (std or {}).get(name, {})
        cells = [
            f"{100 * metrics[c]['acc']:.1f}"
            + (f" ± {100 * spread[c]['acc']:.1f}" if c in spread else "")
            + f" ({metrics[c]['loss']:.2f})"
            for c in conditions
        ]
        cells += [extra.get(name, {}).get(k, "") for k in extra_columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n\nTest accuracy in % (mean cross-entropy loss in brackets).\n"


#: How :func:`mean_ci`'s intervals are computed, for the reports that show them.
CI_NOTE = (
    "mean ± half-width of the 95 % confidence interval over seeds (Student t with n − 1 "
    "degrees of freedom: t · s / √n, s the sample standard deviation); one seed: no interval"
)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its Student-t confidence interval at
    ``level`` (0 for a single value): the interval over seeds that :data:`CI_NOTE` names."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def ci_half_widths(trees: Sequence, level: float = 0.95):
    """Leaf-wise half-widths of :func:`mean_ci`'s intervals over equally shaped nested dicts
    of numbers or lists (one per seed); ``None`` where a number is missing."""
    first = trees[0]
    if isinstance(first, Mapping):
        return {k: ci_half_widths([t[k] for t in trees], level) for k in first}
    if isinstance(first, (list, tuple)):
        return [ci_half_widths(list(column), level) for column in zip(*trees)]
    if any(t is None for t in trees):
        return None
    return mean_ci(trees, level)[1]


def mean_std(trees: Sequence) -> tuple:
    """Leaf-wise mean and (population) standard deviation of equally shaped nested dicts
    of numbers or lists, e.g. one ``results.json`` section per seed; a ``None`` (a number
    that could not be computed) in any of them gives ``None``."""
    if not trees:
        raise ValueError("mean_std needs at least one tree")
    first = trees[0]
    if isinstance(first, Mapping):
        pairs = {k: mean_std([t[k] for t in trees]) for k in first}
        return {k: m for k, (m, _) in pairs.items()}, {k: s for k, (_, s) in pairs.items()}
    values = np.asarray(trees, dtype=object)
    missing = values == None  # noqa: E711 - an element-wise test: None marks a missing number
    values = np.where(missing, np.nan, values).astype(np.float64)
    mean, std = values.mean(0), values.std(0)
    if not missing.any():
        return (mean.tolist(), std.tolist()) if mean.ndim else (float(mean), float(std))
    known = ~missing.any(0)  # a number missing in any tree is missing in the summary
    mean, std = (np.where(known, x, None) for x in (mean, std))
    return (mean.tolist(), std.tolist()) if mean.ndim else (mean.item(), std.item())
