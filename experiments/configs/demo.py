"""The embedded demo: shapes10 with the small ``cnn4`` model, no download.

    python -m experiments.train --config=experiments/configs/demo.py --workdir=workdirs/demo_nc
    python -m experiments.train --config=experiments/configs/demo.py \
        --config.data.cue_proportion=0.87 --workdir=workdirs/demo_c

Runtime on a 2-core CPU: 2–3.5 minutes each (12 epochs of 20,000 images).
Expected: no cue → ≥ 85 % clean test accuracy; p = 0.87 → a cue-reliant model (cue ≥ 95 %,
randcue far below nocue, randimg ≥ 65 %). Weight decay 5e-3 shifts the trade-off so that
the cue wins at p ≈ 0.85–0.9 while the shapes are still learned.

The sections (``data``, ``model``, ``optim``) map onto ``mmc_jax.training.TrainConfig``,
whose defaults are these values.
"""

import ml_collections
from ml_collections import config_dict

#: Cue proportion of the demo's cue model θ_C.
DEMO_CUE_PROPORTION = 0.87


def data_config(cue_proportion=0.0) -> ml_collections.ConfigDict:
    """The ``data`` section: the embedded dataset, cue on ``cue_proportion`` of each class."""
    data = ml_collections.ConfigDict()
    # shapes10 (embedded) | cifar10 | cifar100 | fashion_mnist | dominoes | npz:<path>
    data.name = "shapes10"
    data.data_dir = ""              # TFDS data folder for real datasets ("" = TFDS default)
    data.dominoes_top = "fashion_mnist"
    data.dominoes_bottom = "cifar10"
    data.seed = 0                   # seed of the procedural dataset
    data.num_train = 0              # > 0: train on the first num_train samples only
    data.num_test = 0               # > 0: evaluate on the first num_test samples only
    # Fraction of each class carrying the cue (0 = θ_NC), or "auto": the smallest that gives
    # a cue-reliant model, found by short trial runs (mmc_jax.training.calibration).
    data.cue_proportion = config_dict.FieldReference(cue_proportion, field_type=object)
    return data


def get_config():
    config = ml_collections.ConfigDict()
    config.data = data_config()
    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn4"      # a preset (mmc_jax.models.PRESETS) or "module:factory"
    config.model.width = 0.0        # channel multiplier (0 = the preset's)
    config.model.dtype = "float32"  # or "bfloat16" (compute; parameters stay float32)
    config.model.init_from = ""     # start from this model folder (the paper code's
                                    # --use_pretrained, e.g. θ_C from θ_NC) instead of a fresh init
    # PyTorch-style SGD (coupled weight decay).
    config.optim = ml_collections.ConfigDict()
    config.optim.epochs = 12
    config.optim.batch_size = 128
    config.optim.learning_rate = 0.05
    config.optim.momentum = 0.9
    config.optim.weight_decay = 5e-3
    config.optim.schedule = "cosine"      # constant | step | cosine
    config.optim.step_every_epochs = 40   # "step" schedule: ×step_factor every this many epochs
    config.optim.step_factor = 0.1
    config.optim.grad_clip_norm = 0.0     # > 0: clip gradients to this global norm (0: off)
    # Run.
    config.seed = 0
    config.eval_batch_size = 500
    config.eval_every_epochs = 1    # clean test accuracy every this many epochs
    config.checkpoints_to_keep = 3
    return config
