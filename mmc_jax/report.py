"""Markdown tables of results, laid out like the paper's tables (accuracies in %)."""

from __future__ import annotations

from typing import Mapping

from mmc_jax.data import CONDITIONS

#: Column headers of the paper's Table 1, with the direction that is better.
HEADERS = {"nocue": "NC ↑", "cue": "C ~", "randcue": "RC ~", "randimg": "RI ↓"}


def conditions_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]],
                     extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """One row per model, one column per condition: test accuracy in % (loss below).

    Args:
      rows: row name → ``{condition: {"acc", "loss"}}``.
      extra: optional row name → ``{column: text}`` appended on the right.
    """
    conditions = [c for c in CONDITIONS if any(c in r for r in rows.values())]
    extra = extra or {}
    extra_columns = list(dict.fromkeys(k for e in extra.values() for k in e))
    header = ["", *(HEADERS[c] for c in conditions), *extra_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows.items():
        cells = [f"{100 * metrics[c]['acc']:.1f} ({metrics[c]['loss']:.2f})" for c in conditions]
        cells += [extra.get(name, {}).get(k, "") for k in extra_columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n\nTest accuracy in % (mean cross-entropy loss in brackets).\n"
