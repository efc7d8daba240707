"""A Flax NNX model of your own in every entry point (from the repository root):

    python -m experiments.train --config.model.name=examples.my_nnx_model:make_model \
        --workdir=workdirs/my_nnx
    python -m experiments.cbft --config.cue_model.model.name=examples.my_nnx_model:make_model \
        --workdir=workdirs/my_nnx_cbft
    python -m experiments.connectivity --model_a=workdirs/my_nnx \
        --model_b=workdirs/my_nnx_cbft/seed_0/cbft --path=permuted_linear \
        --workdir=workdirs/my_nnx_path

``make_model(num_classes, *, rngs)`` returns an ``nnx.Module`` called as ``module(x)``; the
library holds it as ``mmc_jax.models.nnx_bridge.NNXModel``, which switches BatchNorm (and
Dropout) between train and eval mode and keeps the variables as Linen's ``{"params",
"batch_stats"}``, named by attribute path (``params/conv1/kernel``). To be fine-tuned by LLRT,
LPFT and CBFT it also returns its penultimate features with ``return_features=True``, and
keeps its last layer at ``classifier.dense`` (LLRT retrains ``params/classifier/dense``). Its
permutation symmetries are derived from its forward pass (``permute.derive_spec``), named
after the layers (``P_conv1``). It reads RGB images of any size.
"""

from flax import nnx


class Classifier(nnx.Module):
    """The linear head, under the name LLRT looks for."""

    def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, features):
        return self.dense(features)


class TwoBlockNet(nnx.Module):
    """Two conv → BatchNorm → ReLU → max-pool blocks, a LayerNorm'd hidden layer, a head."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 24, (3, 3), use_bias=False, rngs=rngs)
        self.norm1 = nnx.BatchNorm(24, momentum=0.9, rngs=rngs)
        self.conv2 = nnx.Conv(24, 48, (3, 3), use_bias=False, rngs=rngs)
        self.norm2 = nnx.BatchNorm(48, momentum=0.9, rngs=rngs)
        self.hidden = nnx.Linear(48, 64, rngs=rngs)
        self.hidden_norm = nnx.LayerNorm(64, rngs=rngs)
        self.classifier = Classifier(64, num_classes, rngs=rngs)

    def __call__(self, x, return_features: bool = False):
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            x = nnx.max_pool(nnx.relu(norm(conv(x))), (2, 2), (2, 2))
        features = nnx.relu(self.hidden_norm(self.hidden(x.mean(axis=(1, 2)))))
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


def make_model(num_classes: int, *, rngs: nnx.Rngs) -> nnx.Module:
    return TwoBlockNet(num_classes, rngs=rngs)
