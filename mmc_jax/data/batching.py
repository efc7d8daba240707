"""Deterministic, resumable epoch iteration and host→device prefetch.

The order of epoch ``e`` depends only on ``(seed, e)``, so a run restarted at ``(epoch, step)``
sees exactly the batches an uninterrupted run would have seen. Batches are gathered from
(possibly memory-mapped) numpy arrays on the host as uint8 and moved to the device ahead of
use; cues and normalization are applied on device inside the jitted steps.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Optional

import numpy as np

from mmc_jax.data.cues import check_proportion, cue_mask
from mmc_jax.runtime.errors import InputError


@dataclasses.dataclass(frozen=True)
class EpochIterator:
    """Batches of a dict of equally long arrays, reshuffled per epoch from a seed.

    Attributes:
      arrays: name → array with a common first axis (e.g. images, labels, cue mask).
      batch_size: samples per batch.
      seed: shuffling seed; epoch ``e`` uses the permutation of ``default_rng([seed, e])``.
      shuffle: reshuffle every epoch (False: dataset order).
      drop_remainder: drop the last incomplete batch (keeps shapes static under jit).

    Example:
      >>> it = EpochIterator({"x": np.arange(10)}, batch_size=4, seed=0)
      >>> [b["x"].shape for b in it.epoch(0)]
      [(4,), (4,)]
    """

    arrays: Mapping[str, np.ndarray]
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True

    def __post_init__(self):
        sizes = {name: len(a) for name, a in self.arrays.items()}
        if len(set(sizes.values())) != 1:
            raise InputError(f"arrays must share their first dimension, got {sizes}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be positive, got {self.batch_size}")
        if self.drop_remainder and self.batch_size > self.num_examples:
            raise InputError(
                f"batch_size {self.batch_size} exceeds the {self.num_examples} available samples"
            )

    @property
    def num_examples(self) -> int:
        """Length of the arrays."""
        return len(next(iter(self.arrays.values())))

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch."""
        if self.drop_remainder:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Sample order of ``epoch``: a permutation drawn from ``(seed, epoch)``."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Yields the batches of ``epoch`` from ``start_step`` on, as numpy dicts."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise InputError(f"start_step must be in [0, {self.steps_per_epoch}], got {start_step}")
        order = self.order(epoch)
        for step in range(start_step, self.steps_per_epoch):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield {name: np.asarray(a[index]) for name, a in self.arrays.items()}


def stack_batches(
    dataset,
    batch_size: int,
    num_batches: Optional[int] = None,
    pad: bool = True,
    cue_proportion: float = 1.0,
) -> dict[str, np.ndarray]:
    """A Dataset as ``[num_batches, batch_size, ...]`` arrays in dataset order.

    ``pad``: the last batch is completed by wrapping around, with ``weight`` 0 on the filler
    (evaluation); otherwise incomplete batches are dropped (BatchNorm statistics).
    ``cue_proportion`` < 1 adds the ``"cue"`` flags of ``cues.cue_mask``: which samples the
    cued conditions stamp (the paper's fine-tuning script's test sets); 1: every sample.
    """
    n = len(dataset)
    batch_size = min(batch_size, n)
    total = -(-n // batch_size) if pad else n // batch_size
    total = total if num_batches is None else min(total, num_batches)
    index = np.arange(total * batch_size)
    stacked = {
        "images": np.asarray(dataset.images[index % n]).reshape(
            total, batch_size, *dataset.image_shape
        ),
        "labels": np.asarray(dataset.labels[index % n]).reshape(total, batch_size),
        "weight": (index < n).astype(np.float32).reshape(total, batch_size),
    }
    if check_proportion(cue_proportion) < 1.0:
        mask = cue_mask(dataset.labels, cue_proportion)
        stacked["cue"] = mask[index % n].reshape(total, batch_size)
    return stacked


def sample_batches(
    dataset, batch_size: int, num_batches: Optional[int] = None, shuffle_seed: Optional[int] = None
) -> np.ndarray:
    """Complete batches of ``dataset``'s uint8 images, ``[num_batches, batch_size, ...]``
    (``None``: as many as fit), in dataset order or, with ``shuffle_seed``, from a shuffled
    order (only the images used are gathered). For BatchNorm statistics and activation
    matching; remove the cue with ``data.clean_inputs`` before use.
    """
    batch_size = min(batch_size, len(dataset))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(dataset))
        total = len(dataset) // batch_size if num_batches is None else num_batches
        dataset = dataset.take(order[: total * batch_size])
    return stack_batches(dataset, batch_size, num_batches, pad=False)["images"]
