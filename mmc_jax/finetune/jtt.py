"""Just Train Twice (Liu, Haghgoo, Chen, Raghunathan, Koh, Sagawa, Liang, Finn, ICML 2021)
from θ_C, without group labels.

1. *Identification*: the samples of the fine-tuning data (the clean and the cued samples,
   :mod:`~mmc_jax.finetune.groups`) that an ERM model gets wrong (eval mode, each sample as
   it is trained on: the cued ones with their cue). θ_C is that model by default
   (``FinetuneConfig.jtt_id_epochs`` = 0: it is what JTT's first stage trains, ERM on the
   cued data); ``jtt_id_epochs`` > 0 fine-tunes θ_C on the fine-tuning data first.
2. *Upweighting*: fine-tune θ_C again on the same data with every error upsampled
   ``jtt_upweight`` times (λ_up, the paper's upsampling), with the fine-tuning's SGD.

Both runs have the budget of the other methods (:func:`~mmc_jax.finetune.groups.budgeted_iterator`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from mmc_jax.metrics import cued_inputs
from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.runtime.errors import InputError
from mmc_jax.training.steps import supervised_step


def mixed_step(state, batch, cue):
    """One SGD step on the cross-entropy of a mixed batch (the cue where flagged)."""
    return supervised_step(state, cued_inputs(cue, batch), batch["labels"])


@accepts_nnx
def errors(apply_fn, variables, arrays, cue, batch_size: int = 500) -> np.ndarray:
    """Indices of the samples of ``arrays`` that the model misclassifies (eval mode, the cue
    where flagged): JTT's error set.

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    predict = jax.jit(lambda v, b: apply_fn(v, cued_inputs(cue, b), train=False).argmax(-1))
    wrong = []
    for start in range(0, len(arrays["labels"]), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in arrays.items()}
        wrong.append(np.asarray(predict(variables, batch)) != batch["labels"])
    return np.flatnonzero(np.concatenate(wrong))


def upsampled(arrays, error_index, upweight: int) -> dict[str, np.ndarray]:
    """``arrays`` with each sample of ``error_index`` present ``upweight`` times."""
    index = np.concatenate(
        [np.arange(len(arrays["labels"])), np.repeat(np.asarray(error_index), upweight - 1)]
    )
    return {k: v[index] for k, v in arrays.items()}


def make_step(cue):
    """:func:`mixed_step` with the cue bound."""
    return functools.partial(mixed_step, cue=cue)


def check_upweight(upweight) -> int:
    """λ_up as the whole number of copies it is."""
    value = int(upweight)
    if value != upweight or value < 1:
        raise InputError(f"jtt_upweight must be a whole number >= 1, got {upweight}")
    return value


__all__ = ["check_upweight", "errors", "make_step", "mixed_step", "upsampled"]
