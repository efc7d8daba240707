"""The groups of the spurious-correlation methods (DFR, JTT, Group DRO) in this setting.

The cue is the spurious attribute: a group is a (class, cue present) pair, so ``2K`` groups,
``g = 2 · label + cued``. The fine-tuning data are the drawn clean samples (cue absent: the
minority groups) and the drawn cued samples (cue present: the majority groups the cue
predicts), the same draws as every other method (:func:`~mmc_jax.finetune.draw_subsets`).
The methods iterate as CBFT does, ``ceil(n_clean / batch_size)`` iterations an epoch over
``2 · batch_size`` samples each, so that every method has the same data and budget.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmc_jax import data


def group_ids(labels, cued) -> np.ndarray:
    """Each sample's group, ``2 · label + cued`` (``cued``: the cue present)."""
    return 2 * np.asarray(labels, np.int32) + np.asarray(cued, np.int32)


def cued_flags(train: data.Dataset, cue_index, cue_proportion: float = 1.0) -> np.ndarray:
    """Which of the cued set's samples (``cue_index``) carry the cue: those in the first
    ``cue_proportion`` of their class in ``train`` (``data.cue_mask``), as the paper code's
    cued loader built with ``--cue_proportion``; all of them at 1 (its default)."""
    return data.cue_mask(train.labels, cue_proportion)[np.asarray(cue_index)]


def mixed_arrays(
    train: data.Dataset, clean_index, cue_index, cue_proportion: float = 1.0
) -> dict[str, np.ndarray]:
    """The clean and the cued samples as one set: ``{"images", "labels", "cue"}``, the cue
    flag False for the clean samples and, at ``cue_proportion`` < 1, for the cued set's
    samples outside the first ``cue_proportion`` of their class (``data.cue_mask``, the
    paper code's partly cued loader): those belong to the clean groups. The cue is applied
    on device (``metrics.cued_inputs``)."""
    clean_index, cue_index = np.asarray(clean_index), np.asarray(cue_index)
    index = np.concatenate([clean_index, cue_index])
    flags = cued_flags(train, cue_index, cue_proportion)
    return {
        "images": np.asarray(train.images[index]),
        "labels": np.asarray(train.labels[index]),
        "cue": np.concatenate([np.zeros(len(clean_index), bool), flags]),
    }


def group_counts(arrays: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """Samples per group (``[2K]``) of :func:`mixed_arrays`' set."""
    groups = group_ids(arrays["labels"], arrays["cue"])
    return np.bincount(groups, minlength=2 * num_classes).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Budgeted:
    """An epoch iterator cut to ``steps`` batches an epoch (each epoch its own random
    subset, in the order ``(seed, epoch)`` sets): the mixed-set methods' budget."""

    iterator: data.EpochIterator
    steps: int

    @property
    def steps_per_epoch(self) -> int:
        """Batches an epoch."""
        return min(self.steps, self.iterator.steps_per_epoch)

    def epoch(self, epoch: int, start_step: int = 0):
        """The batches of ``epoch`` from ``start_step`` on."""
        for step, batch in enumerate(self.iterator.epoch(epoch, start_step), start_step):
            if step >= self.steps_per_epoch:
                return
            yield batch


def budgeted_iterator(arrays, n_clean: int, batch_size: int, seed: int) -> Budgeted:
    """Batches of ``2 · batch_size`` samples of ``arrays``, ``ceil(n_clean / batch_size)`` an
    epoch: what one CBFT iteration sees (a clean and a cued batch), as often."""
    iterator = data.EpochIterator(arrays, 2 * batch_size, seed=seed, drop_remainder=True)
    return Budgeted(iterator, -(-n_clean // batch_size))


__all__ = [
    "Budgeted",
    "budgeted_iterator",
    "cued_flags",
    "group_counts",
    "group_ids",
    "mixed_arrays",
]
