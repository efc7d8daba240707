"""Barriers along a path (Frankle et al. 2020): how far the loss rises above, or the accuracy
falls below, the straight line between the path's endpoint values.

With values on a grid ``t_0 = 0 < … < t_K = 1``:

    loss barrier     = max_k [ L(t_k) − ((1 − t_k) L(0) + t_k L(1)) ]
    accuracy barrier = max_k [ ((1 − t_k) A(0) + t_k A(1)) − A(t_k) ]

Both are ≥ 0 (the endpoints contribute 0), up to rounding.
"""

from __future__ import annotations

import numpy as np


def _chord(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    ts, values = np.asarray(ts, np.float64), np.asarray(values, np.float64)
    u = (ts - ts[0]) / (ts[-1] - ts[0])
    return (1.0 - u) * values[0] + u * values[-1]


def loss_barrier(ts, losses) -> float:
    """Largest rise of the loss above the chord between the endpoint losses."""
    return float(np.max(np.asarray(losses, np.float64) - _chord(ts, losses)))


def accuracy_barrier(ts, accuracies) -> float:
    """Largest fall of the accuracy below the chord between the endpoint accuracies."""
    return float(np.max(_chord(ts, accuracies) - np.asarray(accuracies, np.float64)))


def trapezoid(ts, values) -> float:
    """Trapezoid-rule integral of ``values`` over ``ts`` (the mean value on a unit path)."""
    ts, values = np.asarray(ts, np.float64), np.asarray(values, np.float64)
    return float(np.sum((values[1:] + values[:-1]) * np.diff(ts)) / 2.0)
