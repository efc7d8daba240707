"""Models defined only for the tests, loaded by the entry points as
``--config.model.name=tests.user_models:<factory>``."""

import flax.linen as nn


class NoFeatures(nn.Module):
    """A BatchNorm CNN with arbitrary layer names and no penultimate-features output."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(6, (3, 3), name="alpha")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="beta")(x))
        return nn.Dense(self.num_classes, name="omega")(x.mean((1, 2)))


def no_features(num_classes):
    return NoFeatures(num_classes)


NOT_CALLABLE = 3
