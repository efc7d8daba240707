"""Figures a researcher looks at: counterfactual sample grids (more to come with paths)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _use_agg():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load() -> None:
    """Imports matplotlib (Agg) now. A stop signal turned into an exception while its C
    extensions initialize breaks the interpreter, so the entry points load it before any
    signal may stop them, rather than when their first figure is drawn."""
    _use_agg()


def to_display(images) -> np.ndarray:
    """Normalized images in [-1, 1] → floats in [0, 1] for display."""
    return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def condition_grid(
    rows: Mapping[str, np.ndarray],
    labels: Sequence[int],
    class_names: Sequence[str] | None = None,
    title: str = "",
):
    """A grid with one row per condition and one column per sample.

    Args:
      rows: condition name → normalized images ``[K, H, W, 3]`` (same samples, same order).
      labels: the K labels, shown above the first row.
      class_names: optional names of the labels.
      title: figure title.

    Returns:
      a matplotlib Figure.
    """
    plt = _use_agg()
    k = len(labels)
    height, width = next(iter(rows.values())).shape[1:3]
    scale = 1.1
    fig, axes = plt.subplots(
        len(rows), k, squeeze=False, figsize=(k * scale, len(rows) * scale * height / width + 0.4)
    )
    for r, (condition, images) in enumerate(rows.items()):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(to_display(images[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(condition, fontsize=9)
            if r == 0:
                name = class_names[labels[c]] if class_names else str(labels[c])
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping[str, float]], title: str = ""):
    """Train loss, and train / clean-test accuracy, per epoch.

    Args:
      history: per-epoch records with ``epoch``, ``train_loss``, ``train_acc`` and
        ``test_nocue_acc`` (on the epochs that were evaluated).
      title: figure title.

    Returns:
      a matplotlib Figure.
    """
    plt = _use_agg()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="train loss", yscale="log")
    ax_acc.plot(epochs, [h["train_acc"] for h in history], marker="o", ms=3, label="train")
    tested = [h for h in history if "test_nocue_acc" in h]  # evaluated epochs only
    ax_acc.plot(
        [h["epoch"] for h in tested],
        [h["test_nocue_acc"] for h in tested],
        marker="o",
        ms=3,
        label="test (no cue)",
    )
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def path_curves(summary: Mapping, title: str = ""):
    """Accuracy and loss along a path, one line per condition (the paper's Figs. 4–5).

    Args:
      summary: ``{"ts": [...], "conditions": {name: {"acc": [...], "loss": [...]}}}``
        (``PathResult.to_json``).
      title: figure title.
    """
    plt = _use_agg()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.4))
    for condition, m in summary["conditions"].items():
        ax_acc.plot(summary["ts"], m["acc"], marker="o", ms=3, label=condition)
        ax_loss.plot(summary["ts"], m["loss"], marker="o", ms=3, label=condition)
    ax_acc.set(xlabel="t", ylabel="accuracy", ylim=(0, 1))
    ax_loss.set(xlabel="t", ylabel="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def method_paths(curves: Mapping[str, Mapping], start: str = "θ_C"):
    """Accuracy (top row) and loss (bottom row) along the straight line from a reference
    model (t = 0) to each model (t = 1), one panel per condition and one curve per model:
    the paper's Fig. 5 layout. A barrier means the model left the reference's basin.

    Args:
      curves: model name → ``{"ts": [...], "conditions": {condition: {"acc": [...],
        "loss": [...]}}}`` (``PathResult.to_json``).
      start: name of the reference model, for the axis labels.
    """
    plt = _use_agg()
    conditions = list(dict.fromkeys(c for m in curves.values() for c in m["conditions"]))
    if len(conditions) == 1:  # accuracy and loss side by side
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.5))
        axes = np.asarray(axes).reshape(2, 1)
    else:
        fig, axes = plt.subplots(
            2,
            len(conditions),
            figsize=(3.3 * len(conditions) + 0.6, 5.6),
            squeeze=False,
            sharex=True,
        )
    for j, condition in enumerate(conditions):
        for name, m in curves.items():
            if condition not in m["conditions"]:
                continue
            values = m["conditions"][condition]
            axes[0, j].plot(m["ts"], values["acc"], marker="o", ms=3, label=name)
            axes[1, j].plot(m["ts"], values["loss"], marker="o", ms=3, label=name)
        axes[0, j].set(title=condition, ylim=(0, 1))
        axes[1, j].set(xlabel=f"t  (0 = {start}, 1 = model)")
        axes[0, j].set(xlabel=f"t  (0 = {start}, 1 = model)" if len(conditions) == 1 else "")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].set(ylabel="accuracy")
    axes[1, 0].set(ylabel="loss")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def barrier_heatmaps(result, metric: str = "loss"):
    """One heatmap per condition of a :class:`mmc_jax.analysis.similarity.SimilarityResult`'s
    barrier matrix, models ordered by that condition's clustering, values written in."""
    plt = _use_agg()
    conditions = list(result.loss)
    n = len(result.names)
    size = 1.2 + 0.45 * n
    fig, axes = plt.subplots(
        1, len(conditions), figsize=(size * len(conditions), size), squeeze=False
    )
    for ax, condition in zip(axes[0], conditions):
        order = result.order(condition, metric)
        matrix = (result.loss if metric == "loss" else result.acc)[condition]
        matrix = matrix[np.ix_(order, order)]
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0)
        names = [result.names[i] for i in order]
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if matrix[i, j] < 0.6 * matrix.max() else "black",
                )
        ax.set_title(f"{condition}: {metric} barrier", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def layer_barriers(result, title: str = ""):
    """Bar chart of a :class:`mmc_jax.analysis.layerwise.LayerwiseResult`: the loss barrier of each
    layer's partial line, one group of bars per layer, one bar per condition."""
    plt = _use_agg()
    groups, conditions = result.groups, list(result.loss)
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.55 * len(groups) * max(1, len(conditions)) ** 0.5 + 1.5), 3.2)
    )
    width = 0.8 / len(conditions)
    x = np.arange(len(groups))
    for k, condition in enumerate(conditions):
        ax.bar(
            x + (k - (len(conditions) - 1) / 2) * width,
            result.loss[condition],
            width,
            label=condition,
        )
    ax.set_xticks(x, groups, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="loss barrier")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plane_contours(result, metric: str = "loss"):
    """Filled contours of a :class:`mmc_jax.analysis.plane.PlaneResult` per condition, the three
    models marked and named, and its curve (if any) dashed."""
    plt = _use_agg()
    conditions = list(result.metrics)
    fig, axes = plt.subplots(
        1, len(conditions), figsize=(4.2 * len(conditions), 3.6), squeeze=False
    )
    for ax, condition in zip(axes[0], conditions):
        values = result.metrics[condition][metric]
        levels = np.linspace(values.min(), values.max(), 16) if values.max() > values.min() else 16
        image = ax.contourf(result.xs, result.ys, values.T, levels=levels, cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if getattr(result, "curve", None) is not None:
            ax.plot(
                result.curve[:, 0], result.curve[:, 1], color="white", lw=1.2, ls="--", zorder=2
            )
        ax.scatter(
            result.coords[:, 0], result.coords[:, 1], c="white", edgecolors="black", s=40, zorder=3
        )
        for name, (x, y) in zip(result.names, result.coords):
            ax.annotate(
                name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8, color="white"
            )
        ax.set_title(f"{condition}: {metric}", fontsize=9)
        spans = np.ptp(result.xs), np.ptp(result.ys)
        if max(spans) <= 3 * min(spans):  # true proportions unless the plane is a sliver
            ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def sweep_lines(
    x_label: str,
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
    title: str = "",
):
    """One panel per metric, a metric against a swept value: one line per series with its
    confidence band.

    Args:
      x_label: the swept field.
      panels: metric → series label → ``[(x, mean, half-width), ...]``.
      title: the figure's title.
    """
    plt = _use_agg()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.6, 3.4), squeeze=False)
    for ax, (metric, series) in zip(axes[0], panels.items()):
        for label, points in series.items():
            x, mean, half = (np.asarray(v, np.float64) for v in zip(*sorted(points)))
            (line,) = ax.plot(x, mean, marker="o", ms=3, label=label)
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2)
        ax.set(title=metric, xlabel=x_label)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def method_bars(
    panels: Mapping[str, Mapping[str, tuple[float, float]]], title: str = "", unit: str = "%"
):
    """One panel per condition (or metric), one bar per method with its interval as a
    whisker.

    Args:
      panels: panel title → method → ``(mean, half-width)`` (half-width 0: no whisker).
      title: the figure's title.
      unit: the y axis' unit.
    """
    plt = _use_agg()
    width = max(2.8, 0.32 * max(len(m) for m in panels.values()) + 1.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.6), squeeze=False)
    for ax, (panel, bars) in zip(axes[0], panels.items()):
        names = list(bars)
        mean = np.asarray([bars[n][0] for n in names], np.float64)
        half = np.asarray([bars[n][1] for n in names], np.float64)
        colors = [f"C{i % 10}" for i in range(len(names))]
        ax.bar(range(len(names)), mean, yerr=half, color=colors, capsize=3, alpha=0.85)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set(title=panel, ylabel=unit if ax is axes[0, 0] else None)
        if unit == "%":
            ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
