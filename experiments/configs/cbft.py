"""CBFT and its baselines on the embedded demo (shapes10, cnn4), no download.

    python -m experiments.cbft                      # workdir: ./workdirs/cbft, seed 0
    python -m experiments.cbft --config.seeds="(0, 1, 2)"      # three seeds, mean ± std

Trains the cue model θ_C with the demo's training config at cue proportion
``cue_proportion`` (seed s for seed s of the sweep), then fine-tunes it with naive FT at a
small and a medium learning rate, LLRT, LPFT and CBFT on ``n_clean`` clean samples plus
``n_cue`` cued ones, evaluates every model on the four conditions and measures the
linear-path barrier to θ_C on cued test data. Runtime on a 2-core CPU: ~4 minutes a seed.

Everything follows the paper's code except two demo calibrations, both documented here:
``n_clean`` 1,000 (of 20,000; with 2,500 the shapes are easy enough that even small-LR naive
FT starts dropping the cue) and the LLRT learning rate 1 (the code's 30 was set for VGG-13
features; on cnn4's it grows the new head to ~50× the norm of θ_C's, and LPFT's first
fine-tuning steps then diverge to chance accuracy).
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import demo


def get_config():
    config = ml_collections.ConfigDict()
    config.cue_model = demo.get_config()          # how θ_C is trained (its seed: the sweep's)
    config.cue_model.cue_proportion = demo.DEMO_CUE_PROPORTION
    config.cue_model_dir = ""                    # reuse θ_C from a model folder (train workdir
                                                 # or <cbft workdir>/seed_<s>/cue_model)
    config.nocue_model_dir = ""                  # reuse θ_NC likewise (else trained when needed)
    config.seeds = (0,)                          # θ_C, data draws, batch order, t
    # What runs (experiments/methods.py): naive_ft_small | naive_ft_medium | naive_ft_large |
    # llrt | lpft | cbft | cbft_no_barrier | cbft_no_invariance | scratch.
    config.methods = ("naive_ft_small", "naive_ft_medium", "llrt", "lpft", "cbft")
    # Clean fine-tuning samples (paper: 2,500), or "auto": the largest of 1000, 500, 250, 125
    # on which small-LR naive fine-tuning keeps θ_C's cue.
    config.n_clean = config_dict.FieldReference(1000, field_type=object)
    config.n_cue = 19000                         # cued fine-tuning samples (paper: 47,500)
    config.epochs = 20
    config.batch_size = 256
    config.small_lr = 0.001                      # naive FT "small"
    config.medium_lr = 0.01                      # naive FT "medium", LPFT and CBFT
    config.large_lr = 0.1                        # naive FT "large" (Fig. 5)
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.llrt_epochs = 200
    config.llrt_learning_rate = 1.0              # the paper's code: 30 (see above)
    config.cbft_mode = "code"                    # code (two steps per iteration) | paper
    config.barrier_target = 1.0
    config.barrier_weight = 1.0                  # 0: no barrier term (cbft_no_barrier does this)
    config.t_dist = "clipped_normal"             # code | "truncated_normal" (paper text)
    config.invariance_weight = 1.0
    config.normalize_means = True
    config.warmup_epochs = 1
    config.grad_clip_norm = 0.0                  # > 0: clip gradients to this global norm
    config.scratch_epochs = 100                  # "scratch": epochs on the n_clean samples
    # Paths: the straight line from each reference model (cue_model = θ_C, nocue_model = θ_NC)
    # to every model, on path_conditions (cue always on the line from θ_C), BN statistics
    # recomputed at every point from bn_batches × eval_batch_size clean training images.
    config.path_targets = ("cue_model",)
    config.path_conditions = ("cue",)
    config.random_from = "set"                   # randimg / random domino cues: set | batch
    config.path_points = 11
    config.bn = "recompute"
    config.bn_batches = 5
    config.eval_batch_size = 500
    return config
