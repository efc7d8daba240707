"""Connectivity between two trained models (workdirs of ``experiments.train``).

    python -m experiments.connectivity --model_a=workdirs/demo_nc --model_b=workdirs/demo_c \
        --path=linear --workdir=workdirs/lmc
    ... --path=permuted_linear    # b aligned to a by weight matching first
    ... --path=quadratic          # the control point trained first (on cued data by default)

Runtime (demo models, 2-core CPU): linear ~1 min, quadratic ~5 min.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.num_points = 11           # t = 0, 0.1, ..., 1 (the paper's README: 11 points)
    config.conditions = "nocue,cue,randcue,randimg"
    config.eval_split = "test"       # the paper code's default is "train"; its README uses test
    config.num_eval = 0              # > 0: evaluate on the first num_eval samples only
    config.bn = "recompute"          # interpolate | interpolate_ema (paper code) | recompute
    config.bn_batches = 20           # clean training batches for the BN statistics (0: all)
    config.batch_size = 500
    config.strategy = "auto"         # auto | map | vmap | shard_map
    config.chunk_size = 0            # points vectorized together (0: fitted to the budget)
    config.memory_budget_gib = 0.0   # working memory per device (0: half the device's)
    config.permutation = "weight"    # permuted_linear: weight | activation | greedy
    config.match_batches = 10        # activation matching: clean training batches used
    # Quadratic path: midpoint training (the paper code's defaults).
    config.curve_cue_proportion = 1.0  # data the midpoint is fitted on: 1.0 cue, 0.0 clean
    config.curve_init = "random"     # random (paper code) | mean (endpoints' mean)
    config.curve_epochs = 15
    config.curve_learning_rate = 0.1
    config.curve_step_every_epochs = 10
    config.curve_batch_size = 128
    config.seed = 0
    return config
