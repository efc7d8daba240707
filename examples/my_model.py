"""A model of your own in every entry point:

    python -m experiments.train --config.model.name=examples.my_model:make_model --workdir=DIR
    python -m experiments.cbft --config.cue_model.model.name=examples.my_model:make_model

``make_model(num_classes)`` returns a Linen module called as ``module(x, train=...)``. To be
fine-tuned by LLRT, LPFT and CBFT it also returns its penultimate features with
``return_features=True``, and names its last layer ``classifier/dense`` (LLRT retrains it).
Its permutation symmetries are derived from its forward pass (``permute.derive_spec``).
"""

import flax.linen as nn


class Classifier(nn.Module):
    """The linear head, under the name LLRT looks for."""

    num_classes: int

    @nn.compact
    def __call__(self, features):
        return nn.Dense(self.num_classes, name="dense")(features)


class TwoBlockNet(nn.Module):
    """Two conv → BatchNorm → ReLU → max-pool blocks, a LayerNorm'd dense layer, a head."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        for i, channels in enumerate((24, 48)):
            x = nn.Conv(channels, (3, 3), use_bias=False, name=f"block{i}_conv")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             name=f"block{i}_norm")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        x = x.mean(axis=(1, 2))
        features = nn.relu(nn.LayerNorm(name="hidden_norm")(nn.Dense(64, name="hidden")(x)))
        logits = Classifier(self.num_classes, name="classifier")(features)
        return (logits, features) if return_features else logits


def make_model(num_classes: int) -> nn.Module:
    return TwoBlockNet(num_classes)
