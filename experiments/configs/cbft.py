"""CBFT and its baselines on the embedded demo (shapes10, cnn4), no download.

    python -m experiments.cbft                      # workdir: ./workdirs/cbft
    python -m experiments.cbft --config.seed=1 --workdir=workdirs/cbft_s1

Trains (or reuses) the cue model θ_C with the demo's training config at cue proportion
``cue_proportion``, then fine-tunes it with naive FT at a small and a medium learning rate,
LLRT, LPFT and CBFT on ``n_clean`` clean samples plus ``n_cue`` cued ones, evaluates every
model on the four conditions and measures the linear-path barrier to θ_C on cued test data.
Runtime on a 2-core CPU: ~10 minutes.
"""

import ml_collections

from experiments.configs import demo


def get_config():
    config = ml_collections.ConfigDict()
    config.cue_model = demo.get_config()          # how θ_C is trained
    config.cue_model.cue_proportion = demo.DEMO_CUE_PROPORTION
    config.seed = 0                              # fine-tuning data draws, order, t
    config.n_clean = 1000                        # clean fine-tuning samples (paper: 2,500)
    config.n_cue = 19000                         # cued fine-tuning samples (paper: 47,500)
    config.epochs = 20
    config.batch_size = 256
    config.small_lr = 0.001                      # naive FT "small"
    config.medium_lr = 0.01                      # naive FT "medium", LPFT and CBFT
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.llrt_epochs = 200
    config.llrt_learning_rate = 30.0
    config.cbft_mode = "code"                    # code (two steps per iteration) | paper
    config.barrier_target = 1.0
    config.t_dist = "clipped_normal"             # code | "truncated_normal" (paper text)
    config.invariance_weight = 1.0
    config.normalize_means = True
    config.warmup_epochs = 1
    # Barrier to θ_C: linear path on cued test data.
    config.path_points = 11
    config.bn = "recompute"
    config.bn_batches = 20
    config.eval_batch_size = 500
    return config
