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


def to_display(images) -> np.ndarray:
    """Normalized images in [-1, 1] → floats in [0, 1] for display."""
    return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def condition_grid(rows: Mapping[str, np.ndarray], labels: Sequence[int],
                   class_names: Sequence[str] | None = None, title: str = ""):
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
    fig, axes = plt.subplots(len(rows), k, squeeze=False,
                             figsize=(k * scale, len(rows) * scale * height / width + 0.4))
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
        ``test_nocue_acc``.
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
    ax_acc.plot(epochs, [h["test_nocue_acc"] for h in history], marker="o", ms=3,
                label="test (no cue)")
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


def cue_model_paths(curves: Mapping[str, Mapping[str, Sequence[float]]]):
    """Cued-test accuracy and loss along the straight line from θ_C (t = 0) to each
    fine-tuned model (t = 1): a barrier means the model left θ_C's basin.

    Args:
      curves: method → ``{"ts", "cue_acc", "cue_loss"}``.
    """
    plt = _use_agg()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9.5, 3.5))
    for name, c in curves.items():
        if name == "cue_model":
            continue
        ax_acc.plot(c["ts"], c["cue_acc"], marker="o", ms=3, label=name)
        ax_loss.plot(c["ts"], c["cue_loss"], marker="o", ms=3, label=name)
    ax_acc.set(xlabel="t  (0 = θ_C, 1 = fine-tuned)", ylabel="accuracy on cued test data",
               ylim=(0, 1))
    ax_loss.set(xlabel="t  (0 = θ_C, 1 = fine-tuned)", ylabel="loss on cued test data")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig
