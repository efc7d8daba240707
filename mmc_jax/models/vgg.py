"""The paper's "VGG-13": ten 3×3 conv–BN–ReLU blocks, stride-2 convs instead of pooling,
global average pooling and one linear layer (not the textbook VGG-13 with three FC layers)."""

from __future__ import annotations

from typing import Sequence

from mmc_jax.models import layers

#: (channels, stride) of each conv block of the paper's VGG-13.
VGG13_BLOCKS = (
    (64, 1),
    (64, 2),
    (128, 1),
    (128, 2),
    (256, 1),
    (256, 2),
    (512, 1),
    (512, 2),
    (512, 1),
    (512, 1),
)


class VGG(layers.ImageClassifier):
    """Plain conv net: blocks of bias-free conv → BatchNorm → ReLU, GAP, linear.

    Attributes:
      num_classes: outputs of the classifier.
      blocks: (channels, stride) of each block, before the width multiplier.
      width: multiplier of every block's channels.
      dtype: computation dtype (parameters stay float32).
    """

    blocks: Sequence[tuple[int, int]] = VGG13_BLOCKS

    def features(self, x, train: bool):
        """Pooled features after the last block."""
        for i, (channels, stride) in enumerate(self.blocks):
            x = self.conv_bn_relu(x, channels, stride, train, f"conv{i}", f"bn{i}")
        return layers.global_average_pool(x)
