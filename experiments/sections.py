"""The typed ``path`` and ``permutation`` sections that the model-comparison entry points
(``connectivity``, ``similarity``, ``layerwise``, ``plane``) and ``experiments.cbft`` share.

Like the library's configs they are :class:`mmc_jax.runtime.configs.Config` values, built once
from the ConfigDict section by ``PathConfig.of(config.path)``; the settings that mean "the
default" as 0 (``bn_batches``, ``chunk_size``, ...) are turned into the path evaluator's
keywords in one place, :meth:`PathConfig.evaluator_kwargs`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import numpy as np

from mmc_jax import data
from mmc_jax.connectivity import path_eval
from mmc_jax.runtime.configs import Config, field
from mmc_jax.runtime.errors import InputError

#: How one model is aligned to another (``config.permutation.method``).
PERMUTATIONS = ("weight", "activation", "greedy", "paper")


def names(value) -> tuple:
    """A field that names one thing or several (a tuple, or a comma-separated string), as
    a tuple of names (empty parts dropped)."""
    values = [value] if isinstance(value, str) else list(value)
    return tuple(
        part.strip() if isinstance(part, str) else part
        for v in values
        for part in (v.split(",") if isinstance(v, str) else [v])
        if not isinstance(part, str) or part.strip()
    )


@dataclasses.dataclass(frozen=True)
class PathConfig(Config):
    """How models and the paths between them are evaluated (``config.path``).

    Attributes:
      conditions: the counterfactual conditions evaluated (names, or comma-separated).
      num_points: points on each line, t = 0 ... 1.
      eval_split: the data evaluated on, ``test`` or ``train``; ``num_eval`` > 0 keeps its
        first samples only.
      bn: BatchNorm along the path (see :data:`mmc_jax.connectivity.path_eval.BN_POLICIES`);
        ``bn_batches`` clean training batches (0: all) of ``bn_batch_size`` (0:
        ``batch_size``), shuffled with ``bn_shuffle`` (the paper code).
      batch_size: evaluation batch size.
      random_from: where randimg images and random domino cues come from.
      redraw: draw the random conditions anew at every path point (the paper's code); default:
        the same draws at every point and for every model.
      cue_proportion: the cued conditions stamp the cue on this fraction of each class
        (``data.cue_mask``), the others stay cue-free, as the paper's fine-tuning script's
        test sets at ``--cue_proportion``; 1 (default): every sample, Table 1's protocol.
      strategy, chunk_size, memory_budget_gib: how the points are computed (0: fitted to
        the memory budget; 0 GiB: half the device's memory).
      part_size: points per saved part (a killed run resumes after it).
      targets: the reference models paths start from (``experiments.cbft`` only).
    """

    prefix: ClassVar[str] = "path."

    conditions: tuple = data.CONDITIONS
    num_points: int = field(11, bounds="points")
    eval_split: str = field("test", choices=("test", "train"))
    num_eval: int = field(0, bounds="non_negative")
    bn: str = field("recompute", choices=path_eval.BN_POLICIES, label="BN policy")
    bn_batches: int = field(5, bounds="non_negative")
    batch_size: int = field(500, bounds="count")
    bn_batch_size: int = field(0, bounds="non_negative")
    bn_shuffle: bool = False
    random_from: str = field("set", choices=data.RANDOM_FROM, label="random_from")
    redraw: bool = False
    cue_proportion: float = field(1.0, bounds="fraction")
    strategy: str = field("auto", choices=path_eval.STRATEGIES, label="strategy")
    chunk_size: int = field(0, bounds="non_negative")
    memory_budget_gib: float = field(0.0, bounds="non_negative")
    part_size: int = field(64, bounds="count")
    targets: tuple = ("cue_model",)

    def __post_init__(self):
        super().__post_init__()
        if not self.conditions:
            raise InputError("path.conditions must name at least one condition")
        for condition in self.conditions:
            data.check_condition(condition)

    @classmethod
    def upgraded(cls, values: dict) -> dict:
        """The name lists as tuples (a ConfigDict holds ``"nocue,cue"`` or a tuple), the
        conditions without repeats."""
        values = {k: names(v) if k in ("conditions", "targets") else v for k, v in values.items()}
        if "conditions" in values:
            values["conditions"] = tuple(dict.fromkeys(values["conditions"]))
        return values

    def eval_set(self, train: data.Dataset, test: data.Dataset) -> data.Dataset:
        """The data evaluated on: ``eval_split``, its first ``num_eval`` samples."""
        chosen = train if self.eval_split == "train" else test
        if not self.num_eval:
            return chosen
        return chosen.take(np.arange(min(self.num_eval, len(chosen))))

    def evaluator_kwargs(self, bn_set: data.Dataset, seed: int) -> dict:
        """The path evaluator's keyword arguments (BN statistics from ``bn_set``; ``seed``
        draws the random conditions and shuffles the BN batches)."""
        return dict(
            bn=self.bn,
            bn_set=bn_set,
            bn_batches=self.bn_batches or None,
            batch_size=self.batch_size,
            bn_batch_size=self.bn_batch_size or None,
            bn_shuffle_seed=seed if self.bn_shuffle else None,
            random_from=self.random_from,
            redraw=self.redraw,
            cue_proportion=self.cue_proportion,
            strategy=self.strategy,
            chunk_size=self.chunk_size or None,
            memory_budget=int(self.memory_budget_gib * 2**30) or None,
            key=jax.random.PRNGKey(seed),
        )


#: How residual streams are rotated after the permutations (``permutation.orthogonal``).
ORTHOGONAL = ("none", "weight", "activation")


@dataclasses.dataclass(frozen=True)
class PermutationConfig(Config):
    """How one model is aligned to another before the permuted linear path
    (``config.permutation``).

    Attributes:
      method: ``weight`` (Git Re-Basin weight matching), ``activation``, ``greedy`` or
        ``paper`` (the paper code's greedy per-layer activation matching).
      permute_residual: permute the residual streams too.
      match_batches, match_batch_size: activation matching's batches (0: 10 batches of the
        path's batch size; the paper: 91 of 128).
      orthogonal: after the permutations, rotate each residual stream by orthogonal
        Procrustes (``mmc_jax.permute.orthogonal``), on its weights (``"weight"``) or its
        activations on the matching batches (``"activation"``); ``"none"`` (default):
        permutations only. Only for streams whose rotations are symmetries (RMSNorm
        without a gain, no norm).
    """

    prefix: ClassVar[str] = "permutation."

    method: str = field("weight", choices=PERMUTATIONS, label="permutation method")
    orthogonal: str = field("none", choices=ORTHOGONAL, label="orthogonal alignment")
    permute_residual: bool = True
    match_batches: int = field(0, bounds="non_negative")
    match_batch_size: int = field(0, bounds="non_negative")

    def batches(self, path_batch_size: int) -> tuple[int, int, Optional[bool]]:
        """``(number, size, shuffled)`` of activation matching's batches: the paper code's
        91 shuffled batches of 128 for ``paper``, else 10 of ``path_batch_size`` in dataset
        order (``match_batches`` / ``match_batch_size`` override)."""
        paper = self.method == "paper"
        number = self.match_batches or (91 if paper else 10)
        size = self.match_batch_size or (128 if paper else path_batch_size)
        return number, size, paper
