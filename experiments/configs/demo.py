"""The embedded demo: shapes10 with the small ``cnn4`` model, no download.

    python -m experiments.train --config=experiments/configs/demo.py --workdir=workdirs/demo_nc
    python -m experiments.train --config=experiments/configs/demo.py \
        --config.cue_proportion=0.87 --workdir=workdirs/demo_c

Runtime on a 2-core CPU: 2–3.5 minutes each (12 epochs of 20,000 images).
Expected: no cue → ≥ 85 % clean test accuracy; p = 0.87 → a cue-reliant model (cue ≥ 95 %,
randcue far below nocue, randimg ≥ 65 %). Weight decay 5e-3 shifts the trade-off so that
the cue wins at p ≈ 0.85–0.9 while the shapes are still learned.
"""

import ml_collections
from ml_collections import config_dict

#: Cue proportion of the demo's cue model θ_C.
DEMO_CUE_PROPORTION = 0.87


def get_config():
    config = ml_collections.ConfigDict()
    # Data.
    config.dataset = "shapes10"
    config.data_dir = ""            # TFDS data folder for real datasets ("" = TFDS default)
    config.dominoes_top = "fashion_mnist"
    config.dominoes_bottom = "cifar10"
    config.data_seed = 0            # seed of the procedural dataset
    config.num_train = 0            # > 0: train on the first num_train samples only
    config.num_test = 0             # > 0: evaluate on the first num_test samples only
    # Fraction of each class carrying the cue (0 = θ_NC), or "auto": the smallest that gives
    # a cue-reliant model, found by short trial runs (mmc_jax.calibration).
    config.cue_proportion = config_dict.FieldReference(0.0, field_type=object)
    # Model.
    config.model = "cnn4"
    config.width = 0.0              # channel multiplier (0 = the preset's)
    config.init_from = ""           # start from this model folder (the paper code's
                                    # --use_pretrained, e.g. θ_C from θ_NC) instead of a fresh init
    config.dtype = "float32"        # or "bfloat16" (compute; parameters stay float32)
    # Optimisation (PyTorch-style SGD, coupled weight decay).
    config.epochs = 12
    config.batch_size = 128
    config.learning_rate = 0.05
    config.momentum = 0.9
    config.weight_decay = 5e-3
    config.schedule = "cosine"      # constant | step | cosine
    config.step_every_epochs = 40   # "step" schedule: ×step_factor every this many epochs
    config.step_factor = 0.1
    config.grad_clip_norm = 0.0     # > 0: clip gradients to this global norm (0: off)
    # Run.
    config.seed = 0
    config.eval_batch_size = 500
    config.checkpoints_to_keep = 3
    return config
