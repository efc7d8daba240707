"""A multi-layer perceptron with LayerNorm: a model without convolutions or BatchNorm,
whose permutation symmetries come from ``permute.derive_spec``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from mmc_jax.models import layers


class MLP(layers.ImageClassifier):
    """Flattened image → [Dense → LayerNorm → ReLU] per hidden layer → linear classifier.

    ``conv_impl`` is accepted for a uniform ``models.create`` and unused.
    """

    hidden: Sequence[int] = (512, 256)

    def features(self, x, train: bool):
        """The last hidden layer's activations."""
        del train
        x = x.reshape(x.shape[0], -1)
        for i, features in enumerate(self.hidden):
            x = nn.Dense(layers.scaled(features, self.width), dtype=self.dtype, name=f"dense{i}")(x)
            x = nn.relu(nn.LayerNorm(dtype=self.dtype, name=f"norm{i}")(x))
        return x
